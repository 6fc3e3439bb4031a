//! Sandbox names: the rule a name follows (Docker's) and readable generated names.
//!
//! A valid name is `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}`: safe as a file name and in a shell
//! without quoting, never `.` or `..`, never starting with `-` (so it is not taken for a flag).
//! Generated names are `adjective-noun` pairs from short word lists of our own.

use rand_core::{OsRng, RngCore};

use crate::StateError;

/// The longest name allowed, in bytes (all allowed characters are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Checks `name` against `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}`.
pub fn validate_name(name: &str) -> Result<(), StateError> {
    let invalid = |reason| {
        Err(StateError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.chars().next() else {
        return invalid("a name cannot be empty");
    };
    if !first.is_ascii_alphanumeric() {
        return invalid("a name starts with a letter or a digit");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("a name has at most 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return invalid("a name has only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "cosmic", "crisp", "daring", "eager", "fancy",
    "gentle", "golden", "happy", "hidden", "jolly", "keen", "lively", "lucid", "mellow", "merry",
    "nimble", "noble", "patient", "quiet", "rapid", "serene", "silver", "steady", "sunny", "swift",
    "tidy", "vivid", "warm", "witty", "zesty",
];

const NOUNS: &[&str] = &[
    "badger", "beacon", "birch", "canyon", "cedar", "comet", "coral", "delta", "falcon", "fern",
    "glacier", "harbor", "heron", "island", "lagoon", "lantern", "maple", "meadow", "nebula",
    "otter", "pebble", "pine", "quartz", "raven", "reef", "river", "sparrow", "summit", "thistle",
    "tundra", "walrus", "willow", "yarrow",
];

/// How many random pairs are tried before a numeric suffix is added.
const RANDOM_TRIES: usize = 32;

fn pick<'a>(words: &[&'a str]) -> &'a str {
    let index = usize::try_from(OsRng.next_u32()).unwrap_or(0) % words.len();
    words.get(index).copied().unwrap_or("sandbox")
}

/// A readable name such as `brisk-otter` for which `taken` says false: random pairs first, then
/// (when they keep colliding) a pair with a numeric suffix, `brisk-otter-2`, `-3`, ….
pub fn generate_name(taken: impl Fn(&str) -> bool) -> String {
    let mut name = String::new();
    for _ in 0..RANDOM_TRIES {
        name = format!("{}-{}", pick(ADJECTIVES), pick(NOUNS));
        if !taken(&name) {
            return name;
        }
    }
    let mut suffix = 2u64;
    loop {
        let candidate = format!("{name}-{suffix}");
        if !taken(&candidate) {
            return candidate;
        }
        suffix += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_follow_the_docker_rule() {
        for good in ["a", "Z9", "web_1", "my.box-2", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".",
            "..",
            "_a",
            "a b",
            "a/b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(validate_name(bad), Err(StateError::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn generated_names_are_valid_and_avoid_taken_ones() {
        let mut taken = HashSet::new();
        for _ in 0..ADJECTIVES.len() * NOUNS.len() + 20 {
            let name = generate_name(|n| taken.contains(n));
            validate_name(&name).unwrap();
            assert!(taken.insert(name));
        }
    }

    #[test]
    fn word_lists_make_valid_names() {
        for word in ADJECTIVES.iter().chain(NOUNS) {
            validate_name(word).unwrap();
        }
    }
}
