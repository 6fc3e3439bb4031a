//! Version ordering checked against the real `dpkg --compare-versions` on hand-picked edge cases
//! and generated pairs (a fixed-seed generator, so every run checks the same pairs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::cmp::Ordering;
use std::io::Write;
use std::process::{Command, Stdio};

use debian::version::Version;

/// Edge cases: epochs, tildes, letters against other characters, leading zeros, revisions,
/// real archive versions.
const HAND_PICKED: &[(&str, &str)] = &[
    ("1.0", "1.0"),
    ("1.0", "0:1.0"),
    ("1.0", "1.0-0"),
    ("1.0", "1.00"),
    ("1.0", "1"),
    ("1.0", "1.0.0"),
    ("1.0~rc1", "1.0"),
    ("1.0~rc1", "1.0~rc2"),
    ("1.0~rc1", "1.0~~rc1"),
    ("1.0~", "1.0"),
    ("1.0~~", "1.0~"),
    ("1.0~", "1.0~a"),
    ("1~", "1"),
    ("~", "0"),
    ("~~", "~"),
    ("1.0", "1.0+b1"),
    ("1.0", "1.0a"),
    ("1.0a", "1.0+"),
    ("1.0a", "1.0."),
    ("1.0.", "1.0+"),
    ("1.0.1", "1.0a"),
    ("1.0a", "1.0A"),
    ("1.0Z", "1.0a"),
    ("1.0-a", "1.0-A"),
    ("1:0.1", "9.9"),
    ("2:0", "1:9999"),
    ("10:1", "9:1"),
    ("0:1", "00:1"),
    ("1.10", "1.9"),
    ("1.010", "1.9"),
    ("1.0-1", "1.0-2"),
    ("1.0-10", "1.0-9"),
    ("1.0-1~bpo1", "1.0-1"),
    ("1.0-1+deb12u1", "1.0-1"),
    ("1.0-1+b1", "1.0-1+deb12u1"),
    ("1.0-rc1-1", "1.0-1"),
    ("1.0-rc1-1", "1.0-rc1-2"),
    ("1:2:3-4", "1:2:3-5"),
    ("1:2:3", "1:2.3"),
    ("2.36-9+deb12u10", "2.36-9+deb12u9"),
    ("2.36-9+deb12u10", "2.36-9+deb12u1"),
    ("3.0.15-1~deb12u1", "3.0.15-1"),
    ("3.0.15-1~deb12u1", "3.0.14-1"),
    ("3.11.2-6+deb12u6", "3.11.2-6"),
    ("1:1.2.13.dfsg-1", "1:1.2.0"),
    ("252.36-1~deb12u1", "252.17-1~deb12u1"),
    ("20230311", "20230311+deb12u1"),
    ("5.2.15-2+b9", "5.2.15-2+b10"),
    ("0.0.26-3", "0.0.26"),
    ("1.2.3+dfsg1-2", "1.2.3-2"),
    ("1.2.3+dfsg1-2", "1.2.3dfsg1-2"),
    ("7.88.1-10+deb12u12", "7.88.1-10+deb12u5"),
    ("1.0+git20230101.abc123-1", "1.0+git20221231.fff-1"),
    ("0", "0.0"),
    ("0", "00"),
    ("1a", "1"),
    ("1a", "1+"),
    ("a", "b"),
    ("a1", "a"),
    ("1-1", "1-1.1"),
    ("1-1", "1-01"),
    ("1-1a", "1-1+"),
    ("1.2.3-1ubuntu1", "1.2.3-1"),
    ("4294967295", "4294967296"),
    ("99999999999999999999", "99999999999999999998"),
    ("1.00001", "1.1"),
    ("1.0~beta1+dfsg", "1.0~beta1"),
    ("2.0~~pre", "2.0~"),
];

/// A small deterministic generator (xorshift64*), so the generated pairs are the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const DIGITS: &[&str] = &[
    "0", "1", "2", "9", "10", "01", "00", "11", "100", "2024", "007",
];
const WORDS: &[&str] = &[
    "a", "b", "z", "A", "Z", "rc", "dfsg", "git", "b", "deb", "ubuntu",
];
const SEPARATORS: &[&str] = &[".", "+", "~", ".", "~~", "+", "."];

/// One version: optional epoch, an upstream part starting with a digit, optional revision.
fn generate(rng: &mut Rng) -> String {
    let mut v = String::new();
    if rng.below(4) == 0 {
        v.push_str(rng.pick(&["0", "1", "2", "10"]));
        v.push(':');
    }
    v.push_str(rng.pick(DIGITS));
    for _ in 0..rng.below(4) {
        match rng.below(3) {
            0 => v.push_str(rng.pick(SEPARATORS)),
            1 => v.push_str(rng.pick(WORDS)),
            _ => {}
        }
        v.push_str(rng.pick(DIGITS));
    }
    if rng.below(2) == 0 {
        v.push('-');
        v.push_str(rng.pick(&["1", "0", "2", "10", "1ubuntu1", "1+b1", "1~bpo1", "a"]));
        if rng.below(3) == 0 {
            v.push_str(rng.pick(SEPARATORS));
            v.push_str(rng.pick(&["1", "deb12u1", "b2", "0"]));
        }
    }
    v
}

/// A near neighbour of `v`: the interesting comparisons are between versions that differ little.
fn mutate(rng: &mut Rng, v: &str) -> String {
    let mut s = v.to_owned();
    match rng.below(7) {
        0 => s.push('~'),
        1 => s.push_str(rng.pick(&["a", "+b1", ".0", "0", "~rc1"])),
        2 => {
            // Change one digit.
            let digits: Vec<usize> = s
                .char_indices()
                .filter(|(_, c)| c.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            let i = digits[rng.below(digits.len())];
            let d = char::from(b'0' + rng.below(10) as u8);
            s.replace_range(i..=i, &d.to_string());
        }
        3 => {
            // Add or drop an epoch.
            s = match s.split_once(':') {
                Some((_, rest)) => rest.to_owned(),
                None => format!("1:{s}"),
            }
        }
        4 => {
            // Insert a leading zero before the first digit run after a separator.
            if let Some(i) = s.find('.') {
                s.insert(i + 1, '0');
            } else {
                s.insert(0, '0');
            }
        }
        5 => match s.rfind('-') {
            Some(i) => s.truncate(i),
            None => s.push_str("-0"),
        },
        _ => s = generate(rng),
    }
    s
}

/// Asks dpkg for each pair's ordering, all pairs in one shell (so one spawn from here).
fn dpkg_compare(pairs: &[(String, String)]) -> Vec<Ordering> {
    let mut script = String::from(
        "c() { if dpkg --compare-versions \"$1\" lt \"$2\"; then echo '<'; \
         elif dpkg --compare-versions \"$1\" eq \"$2\"; then echo '='; else echo '>'; fi; }\n",
    );
    for (a, b) in pairs {
        // Versions hold only [0-9A-Za-z.+~:-]: safe inside single quotes.
        script.push_str(&format!("c '{a}' '{b}'\n"));
    }
    let mut child = Command::new("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh (to run dpkg --compare-versions)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dpkg --compare-versions script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // dpkg warns about (and still compares) an upstream part not starting with a digit, which
    // some hand-picked cases have on purpose; any other complaint is a broken test input.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.ends_with("version number does not start with digit"))
        .collect();
    assert!(complaints.is_empty(), "dpkg complained: {complaints:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<Ordering> = text
        .lines()
        .map(|l| match l {
            "<" => Ordering::Less,
            "=" => Ordering::Equal,
            ">" => Ordering::Greater,
            other => panic!("unexpected dpkg answer {other:?}"),
        })
        .collect();
    assert_eq!(answers.len(), pairs.len(), "one answer per pair");
    answers
}

#[test]
fn version_order_matches_dpkg_compare_versions() {
    let mut pairs: Vec<(String, String)> = HAND_PICKED
        .iter()
        .flat_map(|&(a, b)| [(a.to_owned(), b.to_owned()), (b.to_owned(), a.to_owned())])
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..500 {
        let a = generate(&mut rng);
        let b = if i % 3 == 0 {
            generate(&mut rng)
        } else {
            mutate(&mut rng, &a)
        };
        pairs.push((a, b));
    }
    // Every generated string must be a valid version for both sides of the comparison.
    let parsed: Vec<(Version, Version)> = pairs
        .iter()
        .map(|(a, b)| (Version::parse(a).unwrap(), Version::parse(b).unwrap()))
        .collect();
    let expected = dpkg_compare(&pairs);
    let mut mismatches = Vec::new();
    let mut seen = [0usize; 3];
    for (((a, b), (va, vb)), want) in pairs.iter().zip(&parsed).zip(&expected) {
        seen[(*want as i8 + 1) as usize] += 1;
        let got = va.cmp(vb);
        if got != *want {
            mismatches.push(format!("{a} vs {b}: dpkg says {want:?}, we say {got:?}"));
        }
        assert_eq!(va == vb, want.is_eq(), "{a} == {b}");
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} pairs differ from dpkg:\n{}",
        mismatches.len(),
        pairs.len(),
        mismatches.join("\n")
    );
    // The generated pairs must exercise all three outcomes, equality included.
    assert!(seen.iter().all(|&n| n >= 20), "outcomes <,=,>: {seen:?}");
}

#[test]
fn versions_dpkg_rejects_are_rejected() {
    for bad in ["1.0-", "1:", ":1", "a:1", "1 2", "1:-1", "1.0_1"] {
        assert!(Version::parse(bad).is_err(), "{bad:?} parsed");
        let status = Command::new("dpkg")
            .args(["--compare-versions", bad, "eq", "1"])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(
            stderr.contains("bad syntax") || stderr.contains("invalid"),
            "dpkg accepted {bad:?} without complaint: {stderr}"
        );
    }
}
