//! deb822 control data: paragraphs of `Name: value` fields separated by blank lines.
//!
//! The parser borrows from the input (a `Packages` index of the main archive is tens of MiB; it
//! is parsed without copying a field), keeps the line number of every paragraph and field for
//! error messages, and is strict about what it accepts: a line that is neither a field, a
//! continuation nor a separator is an error naming its line.
//!
//! Field values are returned as written: a single-line value is trimmed; a multi-line value keeps
//! its continuation lines (each still starting with its space or tab) so callers that need lines
//! (`Release`'s `SHA256`, `Description`) iterate [`Field::lines`].

use std::fmt;

/// A syntax error in control data, naming the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ControlError {
    /// 1-based line number in the parsed text.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// One `Name: value` field.
#[derive(Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written (compare with [`str::eq_ignore_ascii_case`]).
    pub name: &'a str,
    /// The value: first line trimmed, followed by the raw continuation lines, if any.
    pub value: &'a str,
    /// 1-based line of the field name.
    pub line: usize,
}

impl<'a> Field<'a> {
    /// The value's lines, each trimmed, with deb822's lone `.` (an empty line in a multi-line
    /// value) turned into an empty string. The first line is included even when empty.
    pub fn lines(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.value.split('\n').map(|l| {
            let t = l.trim();
            if t == "." {
                ""
            } else {
                t
            }
        })
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?} (line {})", self.name, self.value, self.line)
    }
}

/// A paragraph: the fields between two blank lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paragraph<'a> {
    /// 1-based line of the paragraph's first field.
    pub line: usize,
    /// Fields in the order written.
    pub fields: Vec<Field<'a>>,
}

impl<'a> Paragraph<'a> {
    /// The first field named `name` (ASCII case-insensitive, as deb822 says).
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The value of the first field named `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.field(name).map(|f| f.value)
    }

    /// The value of `name`, or an error naming the field and the paragraph's line.
    pub fn require(&self, name: &str) -> Result<&'a str, ControlError> {
        self.get(name).ok_or_else(|| ControlError {
            line: self.line,
            reason: format!("paragraph has no {name} field"),
        })
    }
}

/// Iterates over the paragraphs of `text`, in order.
///
/// Comment lines (starting with `#`) are skipped, as deb822 `.sources` files use them; a paragraph
/// may not repeat a field name.
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        text,
        pos: 0,
        line: 0,
    }
}

/// Parses all paragraphs of `text`.
pub fn parse(text: &str) -> Result<Vec<Paragraph<'_>>, ControlError> {
    paragraphs(text).collect()
}

/// Iterator returned by [`paragraphs`].
#[derive(Debug, Clone)]
pub struct Paragraphs<'a> {
    text: &'a str,
    pos: usize,
    /// Lines consumed so far.
    line: usize,
}

impl<'a> Paragraphs<'a> {
    /// The next line without its newline, and the offset just past its newline.
    fn peek_line(&self) -> Option<(&'a str, usize)> {
        if self.pos >= self.text.len() {
            return None;
        }
        let rest = &self.text[self.pos..];
        Some(match rest.find('\n') {
            Some(i) => (&rest[..i], self.pos + i + 1),
            None => (rest, self.text.len()),
        })
    }

    fn next_paragraph(&mut self) -> Result<Option<Paragraph<'a>>, ControlError> {
        // Packages paragraphs have about 17 fields; one allocation covers nearly all of them.
        let mut para = Paragraph {
            line: 0,
            fields: Vec::with_capacity(24),
        };
        // Field names seen, as bits of a cheap hash: a name whose bit is unset is new, so the
        // duplicate check compares names only on a collision.
        let mut seen: u64 = 0;
        // Index of the field being continued: (start of its value, end so far).
        let mut open: Option<(usize, usize)> = None;
        while let Some((raw, next)) = self.peek_line() {
            let start = self.pos;
            self.line += 1;
            self.pos = next;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                if para.fields.is_empty() {
                    continue;
                }
                break;
            }
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                let Some((_, end)) = open.as_mut() else {
                    return Err(ControlError {
                        line: self.line,
                        reason: "continuation line without a field before it".into(),
                    });
                };
                *end = start + line.len();
                if let (Some(f), Some((vstart, vend))) = (para.fields.last_mut(), open) {
                    f.value = trim_value(&self.text[vstart..vend]);
                }
                continue;
            }
            let Some(colon) = line.find(':') else {
                return Err(ControlError {
                    line: self.line,
                    reason: format!("expected `Name: value`, found {:?}", truncate(line)),
                });
            };
            let name = &line[..colon];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(ControlError {
                    line: self.line,
                    reason: format!("invalid field name {:?}", truncate(name)),
                });
            }
            let bit = 1u64 << ((name.len() * 7 + usize::from(name.as_bytes()[0] | 0x20)) % 64);
            if seen & bit != 0 && para.field(name).is_some() {
                return Err(ControlError {
                    line: self.line,
                    reason: format!("field {name} appears twice in one paragraph"),
                });
            }
            seen |= bit;
            if para.fields.is_empty() {
                para.line = self.line;
            }
            let vstart = start + colon + 1;
            let vend = start + line.len();
            open = Some((vstart, vend));
            para.fields.push(Field {
                name,
                value: trim_value(&self.text[vstart..vend]),
                line: self.line,
            });
        }
        Ok(if para.fields.is_empty() {
            None
        } else {
            Some(para)
        })
    }
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_paragraph() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => None,
            Err(e) => {
                // Stop after an error: the rest of the text has no reliable framing.
                self.pos = self.text.len();
                Some(Err(e))
            }
        }
    }
}

/// Trims spaces and tabs at the start (keeping a newline, so an empty first line stays) and all
/// whitespace at the end.
fn trim_value(s: &str) -> &str {
    s.trim_start_matches([' ', '\t']).trim_end()
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_paragraphs_and_continuations() {
        let text = "Package: a\nVersion: 1.0-1\nDescription: short\n more\n .\n end\n\n\n\
                    # comment\nPackage: b\r\nDepends: a (>= 1), c | d\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].line, 1);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].get("VERSION"), Some("1.0-1"));
        let d: Vec<_> = ps[0].field("Description").unwrap().lines().collect();
        assert_eq!(d, ["short", "more", "", "end"]);
        assert_eq!(ps[1].line, 10);
        assert_eq!(ps[1].get("Depends"), Some("a (>= 1), c | d"));
        assert_eq!(ps[1].field("Depends").unwrap().line, 11);
    }

    #[test]
    fn multiline_value_with_empty_first_line() {
        let text = "SHA256:\n abc 12 main/Packages\n def 34 main/Packages.xz\nOrigin: Debian\n";
        let p = &parse(text).unwrap()[0];
        let lines: Vec<_> = p.field("SHA256").unwrap().lines().collect();
        assert_eq!(
            lines,
            ["", "abc 12 main/Packages", "def 34 main/Packages.xz"]
        );
        assert_eq!(p.get("Origin"), Some("Debian"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("Package: a\nno colon here\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("no colon here"), "{e}");
        let e = parse(" leading continuation\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("A: 1\nB: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("appears twice"), "{e}");
        let e = parse("P: 1\n\nQ: 2\n").unwrap()[1]
            .require("Version")
            .unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn empty_and_blank_input_has_no_paragraphs() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n \n\t\n").unwrap().is_empty());
    }
}
