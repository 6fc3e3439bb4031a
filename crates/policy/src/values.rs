//! Validated scalar values of a policy: sizes, durations, counts, names.
//!
//! Each type checks its input when it is built, including while deserializing, so a bad value
//! is reported by the TOML parser at its own line. Each displays in the canonical form it
//! parses from, so `hardbox policy show` prints values a user can paste back.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A policy value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a size.
    #[error("invalid size {input:?}: expected a whole number with an optional unit k, m, g or t (powers of 1024), such as \"512m\" or \"2g\"")]
    Size {
        /// The text given.
        input: String,
    },
    /// Not a duration.
    #[error("invalid duration {input:?}: expected whole numbers with units ms, s, m, h or d, such as \"30s\", \"5m\" or \"1h30m\"")]
    Duration {
        /// The text given.
        input: String,
    },
    /// A limit of zero.
    #[error("invalid {what} {input:?}: it must be positive")]
    NotPositive {
        /// What the value is (`size`, `cpus`, ...).
        what: &'static str,
        /// The value given, as text.
        input: String,
    },
    /// A relative path, or one starting with a variable a policy cannot use.
    #[error("invalid path {input:?}: policy paths must be absolute or start with ~, $HOME or $WORKSPACE")]
    Path {
        /// The path given.
        input: String,
    },
    /// A name with characters the kind of name does not allow.
    #[error("invalid {what} {input:?}: {expected}")]
    Name {
        /// What the name is (`environment variable name`, ...).
        what: &'static str,
        /// The name given.
        input: String,
        /// What a valid name looks like.
        expected: &'static str,
    },
}

/// Parses a size such as `512m` or `2g` into bytes. Units are powers of 1024 and may be upper
/// or lower case; no unit means bytes.
///
/// # Errors
///
/// [`ValueError::Size`] on anything else, including overflow.
pub fn parse_size(input: &str) -> Result<u64, ValueError> {
    let invalid = || ValueError::Size {
        input: input.to_owned(),
    };
    let digits_end = input
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(input.len());
    let (digits, unit) = input.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(invalid()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(invalid)
}

/// Parses a duration such as `30s`, `5m` or `1h30m`: one or more whole numbers, each followed
/// by a unit `ms`, `s`, `m`, `h` or `d`.
///
/// # Errors
///
/// [`ValueError::Duration`] on anything else, including overflow.
pub fn parse_duration(input: &str) -> Result<Duration, ValueError> {
    let invalid = || ValueError::Duration {
        input: input.to_owned(),
    };
    let mut rest = input;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits_end = rest
            .find(|character: char| !character.is_ascii_digit())
            .ok_or_else(invalid)?;
        let (digits, after) = rest.split_at(digits_end);
        let number: u64 = digits.parse().map_err(|_| invalid())?;
        let unit_end = after
            .find(|character: char| character.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let seconds_per_unit = match unit {
            "ms" => None,
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86400),
            _ => return Err(invalid()),
        };
        let part = match seconds_per_unit {
            None => Duration::from_millis(number),
            Some(seconds) => Duration::from_secs(number.checked_mul(seconds).ok_or_else(invalid)?),
        };
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = next;
    }
    Ok(total)
}

/// A positive number of bytes, written like `512m` or `2g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(u64);

impl ByteSize {
    /// `bytes`, if positive.
    ///
    /// # Errors
    ///
    /// [`ValueError::NotPositive`] for zero.
    pub fn new(bytes: u64) -> Result<ByteSize, ValueError> {
        if bytes == 0 {
            return Err(ValueError::NotPositive {
                what: "size",
                input: bytes.to_string(),
            });
        }
        Ok(ByteSize(bytes))
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(input: &str) -> Result<ByteSize, ValueError> {
        ByteSize::new(parse_size(input)?).map_err(|_| ValueError::NotPositive {
            what: "size",
            input: input.to_owned(),
        })
    }
}

impl TryFrom<String> for ByteSize {
    type Error = ValueError;

    fn try_from(input: String) -> Result<ByteSize, ValueError> {
        input.parse()
    }
}

impl From<ByteSize> for String {
    fn from(size: ByteSize) -> String {
        size.to_string()
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly: `2g`, `1536m`, `100`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("t", 40), ("g", 30), ("m", 20), ("k", 10)] {
            if self.0.trailing_zeros() >= shift {
                return write!(formatter, "{}{unit}", self.0 >> shift);
            }
        }
        write!(formatter, "{}", self.0)
    }
}

/// A positive duration, written like `30s`, `5m` or `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// `duration`, if positive.
    ///
    /// # Errors
    ///
    /// [`ValueError::NotPositive`] for zero.
    pub fn new(duration: Duration) -> Result<HumanDuration, ValueError> {
        if duration.is_zero() {
            return Err(ValueError::NotPositive {
                what: "duration",
                input: "0s".to_owned(),
            });
        }
        Ok(HumanDuration(duration))
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = ValueError;

    fn from_str(input: &str) -> Result<HumanDuration, ValueError> {
        HumanDuration::new(parse_duration(input)?).map_err(|_| ValueError::NotPositive {
            what: "duration",
            input: input.to_owned(),
        })
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = ValueError;

    fn try_from(input: String) -> Result<HumanDuration, ValueError> {
        input.parse()
    }
}

impl From<HumanDuration> for String {
    fn from(duration: HumanDuration) -> String {
        duration.to_string()
    }
}

impl fmt::Display for HumanDuration {
    /// Days, hours, minutes, seconds and milliseconds, omitting zero parts: `30m`, `1h30m`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut seconds = self.0.as_secs();
        for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
            if seconds >= size {
                write!(formatter, "{}{unit}", seconds / size)?;
                seconds %= size;
            }
        }
        let milliseconds = self.0.subsec_millis();
        if milliseconds > 0 {
            write!(formatter, "{milliseconds}ms")?;
        }
        Ok(())
    }
}

/// A positive number of CPUs, fractions allowed (`0.5`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Cpus(f64);

impl Cpus {
    /// `cpus`, if finite and positive.
    ///
    /// # Errors
    ///
    /// [`ValueError::NotPositive`] otherwise.
    pub fn new(cpus: f64) -> Result<Cpus, ValueError> {
        if !(cpus.is_finite() && cpus > 0.0) {
            return Err(ValueError::NotPositive {
                what: "cpus",
                input: cpus.to_string(),
            });
        }
        Ok(Cpus(cpus))
    }

    /// The number of CPUs.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Cpus {
    type Error = ValueError;

    fn try_from(cpus: f64) -> Result<Cpus, ValueError> {
        Cpus::new(cpus)
    }
}

impl From<Cpus> for f64 {
    fn from(cpus: Cpus) -> f64 {
        cpus.0
    }
}

/// A positive count (processes, open files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Count(u64);

impl Count {
    /// `count`, if positive.
    ///
    /// # Errors
    ///
    /// [`ValueError::NotPositive`] for zero.
    pub fn new(count: u64) -> Result<Count, ValueError> {
        if count == 0 {
            return Err(ValueError::NotPositive {
                what: "count",
                input: "0".to_owned(),
            });
        }
        Ok(Count(count))
    }

    /// The count.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Count {
    type Error = ValueError;

    fn try_from(count: u64) -> Result<Count, ValueError> {
        Count::new(count)
    }
}

impl From<Count> for u64 {
    fn from(count: Count) -> u64 {
        count.0
    }
}

/// Defines a validated name type: a `String` newtype checked by `$valid`.
macro_rules! name_type {
    ($(#[$attribute:meta])* $name:ident, $what:literal, $expected:literal, $valid:expr) => {
        $(#[$attribute])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name, if valid.
            ///
            /// # Errors
            ///
            /// [`ValueError::Name`] otherwise.
            pub fn new(input: &str) -> Result<$name, ValueError> {
                let valid: fn(&str) -> bool = $valid;
                if input.is_empty() || !valid(input) {
                    return Err(ValueError::Name {
                        what: $what,
                        input: input.to_owned(),
                        expected: $expected,
                    });
                }
                Ok($name(input.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;

            fn try_from(input: String) -> Result<$name, ValueError> {
                $name::new(&input)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An environment variable name (`PATH`, `MY_TOKEN`).
    EnvName,
    "environment variable name",
    "use letters, digits and underscores, not starting with a digit",
    |input| {
        !input.starts_with(|character: char| character.is_ascii_digit())
            && input
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_')
    }
);

name_type!(
    /// An environment variable name pattern: a name in which `*` matches any run of characters
    /// (`LC_*`).
    EnvPattern,
    "environment variable pattern",
    "use letters, digits, underscores and * as a wildcard",
    |input| {
        input.chars().all(|character| {
            character.is_ascii_alphanumeric() || character == '_' || character == '*'
        })
    }
);

name_type!(
    /// A syscall name as the kernel spells it (`ptrace`, `io_uring_setup`).
    SyscallName,
    "syscall name",
    "use lowercase letters, digits and underscores",
    |input| {
        input.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '_'
        })
    }
);

impl EnvPattern {
    /// Whether `name` matches the pattern (`*` matches any run of characters, including none).
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|start| glob_matches(rest, &text[start..])),
        Some((first, rest)) => text
            .split_first()
            .is_some_and(|(character, text)| character == first && glob_matches(rest, text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let check = |input: &str, expected: Option<u64>| {
            assert_eq!(parse_size(input).ok(), expected, "{input:?}");
        };
        check("512m", Some(512 << 20));
        check("2g", Some(2 << 30));
        check("2G", Some(2 << 30));
        check("1k", Some(1024));
        check("3t", Some(3 << 40));
        check("100", Some(100));
        check("0", Some(0));
        check("", None);
        check("g", None);
        check("2 g", None);
        check("2gb", None);
        check("1.5g", None);
        check("-1m", None);
        check("99999999999999t", None);
    }

    #[test]
    fn byte_size_displays_canonically() {
        let check = |input: &str, expected: &str| {
            let size: Result<ByteSize, _> = input.parse();
            assert_eq!(
                size.map(|size| size.to_string()),
                Ok(expected.to_owned()),
                "{input:?}"
            );
        };
        check("2g", "2g");
        check("2048m", "2g");
        check("1536m", "1536m");
        check("1025", "1025");
        check("1024", "1k");
        assert!("0g".parse::<ByteSize>().is_err());
    }

    #[test]
    fn durations() {
        let check = |input: &str, expected: Option<u64>| {
            assert_eq!(
                parse_duration(input)
                    .ok()
                    .map(|duration| duration.as_millis() as u64),
                expected,
                "{input:?}"
            );
        };
        check("30s", Some(30_000));
        check("5m", Some(300_000));
        check("2h", Some(7_200_000));
        check("1d", Some(86_400_000));
        check("1h30m", Some(5_400_000));
        check("250ms", Some(250));
        check("0s", Some(0));
        check("", None);
        check("30", None);
        check("s", None);
        check("5 m", None);
        check("5min", None);
        check("1.5h", None);
        check("99999999999999999999s", None);
    }

    #[test]
    fn human_duration_displays_canonically() {
        let check = |input: &str, expected: &str| {
            let duration: Result<HumanDuration, _> = input.parse();
            assert_eq!(
                duration.map(|duration| duration.to_string()),
                Ok(expected.to_owned())
            );
        };
        check("30m", "30m");
        check("90m", "1h30m");
        check("3600s", "1h");
        check("1500ms", "1s500ms");
        assert!("0m".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn names_and_patterns() {
        assert!(EnvName::new("MY_TOKEN_2").is_ok());
        assert!(EnvName::new("2X").is_err());
        assert!(EnvName::new("A=B").is_err());
        assert!(EnvName::new("").is_err());
        assert!(SyscallName::new("io_uring_setup").is_ok());
        assert!(SyscallName::new("Ptrace").is_err());
        let check = |pattern: &str, name: &str, expected: bool| {
            let Ok(pattern) = EnvPattern::new(pattern) else {
                panic!("{pattern} is a valid pattern");
            };
            assert_eq!(pattern.matches(name), expected, "{pattern} vs {name}");
        };
        check("LC_*", "LC_ALL", true);
        check("LC_*", "LC_", true);
        check("LC_*", "LANG", false);
        check("PATH", "PATH", true);
        check("PATH", "PATHS", false);
        check("*_PROXY", "HTTPS_PROXY", true);
        check("*", "ANYTHING", true);
        check("A*B*C", "AxxBxxC", true);
        check("A*B*C", "AxxBxx", false);
    }

    #[test]
    fn limits_must_be_positive() {
        assert!(Cpus::new(0.5).is_ok());
        assert!(Cpus::new(0.0).is_err());
        assert!(Cpus::new(-1.0).is_err());
        assert!(Cpus::new(f64::NAN).is_err());
        assert!(Cpus::new(f64::INFINITY).is_err());
        assert!(Count::new(0).is_err());
        assert!(ByteSize::new(0).is_err());
        assert!(HumanDuration::new(Duration::ZERO).is_err());
    }
}
