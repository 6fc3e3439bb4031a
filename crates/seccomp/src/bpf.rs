//! Turns rules into a classic BPF program for `SECCOMP_SET_MODE_FILTER`.
//!
//! Why the shape: the kernel converts and JIT-compiles the whole program at install time, and
//! when a filter is installed it also runs it once per syscall number to find the syscalls it
//! always allows (the "action cache" that later skips the filter for them). Both costs grow
//! with the program, the second with the path length too, so the program is a balanced binary
//! search over syscall numbers rather than one comparison per denied syscall.
//!
//! Layout, checked top to bottom:
//!
//! 1. the architecture in `seccomp_data` must be the program's: any other (i386 via `int 0x80`,
//!    arm32 compat) gets `ENOSYS`, as if the kernel had no compat layer;
//! 2. on x86_64, syscall numbers with the x32 bit (`0x4000_0000`) get `ENOSYS`;
//! 3. a balanced tree of `nr >= N` comparisons over the ranges of syscall numbers that share a
//!    decision (runs of consecutive numbers with the same outcome are one range; numbers no rule
//!    names are allowed);
//! 4. its leaves jump to a shared return (`ALLOW`, or a rule's errno for a syscall denied
//!    whatever its arguments), or to the argument checks of one syscall: its rules in order, the
//!    first match returning its action, none returning `ALLOW`.
//!
//! The decisions are exactly those of checking every rule in order (the test module keeps that
//! straightforward program and compares both on every syscall number and every argument case
//! the rules have). Every jump goes forward, and a program whose jumps would not fit classic
//! BPF's 8-bit offsets is refused, never truncated.

use std::collections::BTreeMap;

use seccompiler::sock_filter;

use crate::rules::{Action, Rule, When};
use crate::{Arch, SeccompError};

// Classic BPF opcodes (linux/bpf_common.h) in the combinations used here.
const LOAD_WORD_ABSOLUTE: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JUMP_ALWAYS: u16 = 0x05; // BPF_JMP | BPF_JA
const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JUMP_IF_GREATER_OR_EQUAL: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JUMP_IF_ANY_BIT_SET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const AND: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RETURN: u16 = 0x06; // BPF_RET | BPF_K

// Return values (linux/seccomp.h).
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// Offsets in `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`. Both supported
// architectures are little-endian, so an argument's low half sits at its own offset.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGUMENTS: u32 = 16;

/// The x32 ABI marks its syscall numbers with this bit (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel refuses longer programs (`BPF_MAXINSNS`).
pub(crate) const MAX_INSTRUCTIONS: usize = 4096;

fn return_value(action: Action) -> u32 {
    match action {
        Action::Errno(errno) => SECCOMP_RET_ERRNO | u32::from(errno.code()),
    }
}

/// What the program decides for one syscall number.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decision {
    /// Argument conditions checked in order; the first that holds returns its value.
    checks: Vec<(When, u32)>,
    /// The return value when no check holds.
    otherwise: u32,
}

impl Decision {
    const ALLOW: Decision = Decision {
        checks: Vec::new(),
        otherwise: SECCOMP_RET_ALLOW,
    };

    /// The decision of `rules` (all on one syscall), in order: a rule that always matches ends
    /// the list, as nothing after it can be reached.
    fn of<'a>(rules: impl Iterator<Item = &'a Rule>) -> Decision {
        let mut checks = Vec::new();
        for rule in rules {
            let value = return_value(rule.action);
            if rule.when == When::Always {
                return Decision {
                    checks,
                    otherwise: value,
                };
            }
            checks.push((rule.when, value));
        }
        Decision {
            checks,
            otherwise: SECCOMP_RET_ALLOW,
        }
    }
}

/// Where a jump goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The next instruction.
    Next,
    /// A label, placed later in the program.
    Label(usize),
}

/// An instruction whose jump targets are still labels.
#[derive(Clone, Copy, Debug)]
enum Item {
    Statement {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        taken: Target,
        not_taken: Target,
    },
    Always {
        target: usize,
    },
}

/// Collects instructions with symbolic forward jumps and resolves them to offsets.
#[derive(Default)]
struct Assembler {
    items: Vec<Item>,
    /// The position of each label, once placed.
    labels: Vec<Option<usize>>,
}

impl Assembler {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn place(&mut self, label: usize) {
        self.labels[label] = Some(self.items.len());
    }

    fn statement(&mut self, code: u16, k: u32) {
        self.items.push(Item::Statement { code, k });
    }

    fn jump(&mut self, code: u16, k: u32, taken: Target, not_taken: Target) {
        self.items.push(Item::Jump {
            code,
            k,
            taken,
            not_taken,
        });
    }

    fn finish(self) -> Result<Vec<sock_filter>, SeccompError> {
        let too_large = || SeccompError::ProgramTooLarge {
            instructions: self.items.len(),
        };
        if self.items.len() > MAX_INSTRUCTIONS {
            return Err(too_large());
        }
        // The offset from the instruction at `position` to `target`: forward only.
        let offset = |position: usize, target: Target| -> Option<usize> {
            match target {
                Target::Next => Some(0),
                Target::Label(label) => (*self.labels.get(label)?)?.checked_sub(position + 1),
            }
        };
        let short = |position: usize, target: Target| -> Result<u8, SeccompError> {
            offset(position, target)
                .and_then(|offset| u8::try_from(offset).ok())
                .ok_or(SeccompError::JumpTooLong {
                    instructions: self.items.len(),
                })
        };
        let mut program = Vec::with_capacity(self.items.len());
        for (position, item) in self.items.iter().enumerate() {
            program.push(match *item {
                Item::Statement { code, k } => sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Item::Jump {
                    code,
                    k,
                    taken,
                    not_taken,
                } => sock_filter {
                    code,
                    jt: short(position, taken)?,
                    jf: short(position, not_taken)?,
                    k,
                },
                Item::Always { target } => sock_filter {
                    code: JUMP_ALWAYS,
                    jt: 0,
                    jf: 0,
                    k: offset(position, Target::Label(target))
                        .and_then(|offset| u32::try_from(offset).ok())
                        .ok_or_else(too_large)?,
                },
            });
        }
        // The kernel requires the last instruction to be a return.
        match program.last() {
            Some(last) if last.code == RETURN => Ok(program),
            _ => Err(too_large()),
        }
    }
}

/// A range of syscall numbers, from `start` to the next range's start, and its decision.
struct Range {
    start: u32,
    decision: usize,
}

/// The program's instructions for `rules` on `arch`. Rules naming syscalls `arch` lacks are left
/// out.
pub(crate) fn generate(arch: Arch, rules: &[Rule]) -> Result<Vec<sock_filter>, SeccompError> {
    // Each numbered syscall's decision; distinct decisions are stored once.
    let mut by_number: BTreeMap<u32, Decision> = BTreeMap::new();
    for rule in rules {
        let Some(number) = arch.syscall_number(rule.syscall) else {
            continue;
        };
        by_number.entry(number).or_insert_with(|| {
            Decision::of(rules.iter().filter(|other| other.syscall == rule.syscall))
        });
    }
    let mut decisions = vec![Decision::ALLOW];
    let mut index_of = |decision: Decision| -> usize {
        match decisions.iter().position(|known| *known == decision) {
            Some(index) => index,
            None => {
                decisions.push(decision);
                decisions.len() - 1
            }
        }
    };
    let mut ranges = vec![Range {
        start: 0,
        decision: 0,
    }];
    for (number, decision) in by_number {
        let decision = index_of(decision);
        let mut push = |start: u32, decision: usize| {
            // A range ending where it starts is replaced, then merged with the one before.
            if ranges.last().is_some_and(|range| range.start == start) {
                ranges.pop();
            }
            if ranges.last().map(|range| range.decision) != Some(decision) {
                ranges.push(Range { start, decision });
            }
        };
        push(number, decision);
        if let Some(next) = number.checked_add(1) {
            push(next, 0);
        }
    }

    let mut assembler = Assembler::default();
    // One label per distinct return value and per decision with argument checks.
    let mut returns: BTreeMap<u32, usize> = BTreeMap::new();
    let mut return_label = |assembler: &mut Assembler, value: u32| -> usize {
        *returns.entry(value).or_insert_with(|| assembler.label())
    };
    let enosys = return_label(
        &mut assembler,
        return_value(Action::Errno(crate::Errno::ENOSYS)),
    );
    let targets: Vec<usize> = decisions
        .iter()
        .map(|decision| {
            if decision.checks.is_empty() {
                return_label(&mut assembler, decision.otherwise)
            } else {
                assembler.label()
            }
        })
        .collect();

    assembler.statement(LOAD_WORD_ABSOLUTE, OFFSET_ARCH);
    assembler.jump(
        JUMP_IF_EQUAL,
        arch.audit_value(),
        Target::Next,
        Target::Label(enosys),
    );
    assembler.statement(LOAD_WORD_ABSOLUTE, OFFSET_NR);
    if arch == Arch::X86_64 {
        assembler.jump(
            JUMP_IF_GREATER_OR_EQUAL,
            X32_SYSCALL_BIT,
            Target::Label(enosys),
            Target::Next,
        );
    }
    let leaf = |range: &Range| Target::Label(targets[range.decision]);
    if let [only] = ranges.as_slice() {
        assembler.items.push(Item::Always {
            target: targets[only.decision],
        });
    } else {
        search(&mut assembler, &ranges, &leaf);
    }

    // The argument checks, each syscall's once.
    for (decision, label) in decisions.iter().zip(&targets) {
        if decision.checks.is_empty() {
            continue;
        }
        assembler.place(*label);
        let otherwise = return_label(&mut assembler, decision.otherwise);
        let mut loaded = None;
        let count = decision.checks.len();
        for (index, (when, value)) in decision.checks.iter().enumerate() {
            let matched = return_label(&mut assembler, *value);
            let unmatched = (index + 1 == count).then_some(otherwise);
            append_check(&mut assembler, &mut loaded, *when, matched, unmatched);
        }
    }
    for (value, label) in returns {
        assembler.place(label);
        assembler.statement(RETURN, value);
    }
    assembler.finish()
}

/// Emits the search over `ranges` (at least two): `nr >= start of the middle range` splits
/// them in halves, the lower half's comparisons directly after, the upper half's after those.
fn search(assembler: &mut Assembler, ranges: &[Range], leaf: &dyn Fn(&Range) -> Target) {
    let middle = ranges.len() / 2;
    let (lower, upper) = ranges.split_at(middle);
    let below = match lower {
        [only] => leaf(only),
        _ => Target::Next,
    };
    let (above, upper_label) = match upper {
        [only] => (leaf(only), None),
        _ => {
            let label = assembler.label();
            (Target::Label(label), Some(label))
        }
    };
    assembler.jump(JUMP_IF_GREATER_OR_EQUAL, upper[0].start, above, below);
    if lower.len() > 1 {
        search(assembler, lower, leaf);
    }
    if let Some(label) = upper_label {
        assembler.place(label);
        search(assembler, upper, leaf);
    }
}

/// Emits one argument check: on a match, jump to `matched`, else to `unmatched`. `loaded` is
/// the argument the accumulator holds unchanged, if any, so consecutive checks of one argument
/// load it once.
fn append_check(
    assembler: &mut Assembler,
    loaded: &mut Option<u8>,
    when: When,
    matched: usize,
    unmatched: Option<usize>,
) {
    // Without a label for "no match", the check falls through to what follows it.
    let (unmatched, after) = match unmatched {
        Some(label) => (label, None),
        None => {
            let label = assembler.label();
            (label, Some(label))
        }
    };
    let unmatched = Target::Label(unmatched);
    let matched_target = Target::Label(matched);
    let mut load = |assembler: &mut Assembler, argument: u8| {
        if *loaded != Some(argument) {
            assembler.statement(
                LOAD_WORD_ABSOLUTE,
                OFFSET_ARGUMENTS + 8 * u32::from(argument),
            );
        }
        *loaded = Some(argument);
    };
    match when {
        When::Always | When::NoneOf { values: &[], .. } => {
            assembler.items.push(Item::Always { target: matched });
        }
        When::Equals { argument, value } => {
            load(assembler, argument);
            assembler.jump(JUMP_IF_EQUAL, value, matched_target, unmatched);
        }
        When::MaskedEquals {
            argument,
            mask,
            value,
        } => {
            load(assembler, argument);
            assembler.statement(AND, mask);
            // The accumulator no longer holds the argument.
            *loaded = None;
            assembler.jump(JUMP_IF_EQUAL, value, matched_target, unmatched);
        }
        When::AnyBitSet { argument, mask } => {
            load(assembler, argument);
            assembler.jump(JUMP_IF_ANY_BIT_SET, mask, matched_target, unmatched);
        }
        When::NoneOf { argument, values } => {
            load(assembler, argument);
            // Any listed value: the rule does not match. None of them: it does.
            for (index, value) in values.iter().enumerate() {
                let otherwise = if index + 1 == values.len() {
                    matched_target
                } else {
                    Target::Next
                };
                assembler.jump(JUMP_IF_EQUAL, *value, unmatched, otherwise);
            }
        }
    }
    if let Some(after) = after {
        assembler.place(after);
    }
}

#[cfg(test)]
pub(crate) mod interpreter {
    //! A classic BPF interpreter for the opcodes the generators emit, so tests can run a program
    //! against syscalls of any architecture without installing it. It checks what the kernel's
    //! checker would (jumps inside the program, a return last) and panics otherwise.

    use super::*;

    /// Runs `program` on a `seccomp_data` made of `arch`, `nr` and `arguments`.
    pub(crate) fn run(program: &[sock_filter], arch: u32, nr: u32, arguments: [u64; 6]) -> u32 {
        assert_eq!(program.last().map(|last| last.code), Some(RETURN));
        let word = |offset: u32| -> u32 {
            match offset {
                OFFSET_NR => nr,
                OFFSET_ARCH => arch,
                _ => {
                    let index = ((offset - OFFSET_ARGUMENTS) / 8) as usize;
                    let value = arguments[index];
                    if (offset - OFFSET_ARGUMENTS) & 7 == 0 {
                        value as u32
                    } else {
                        (value >> 32) as u32
                    }
                }
            }
        };
        let mut accumulator = 0u32;
        let mut counter = 0usize;
        loop {
            let instruction = &program[counter];
            counter += 1;
            match instruction.code {
                LOAD_WORD_ABSOLUTE => accumulator = word(instruction.k),
                AND => accumulator &= instruction.k,
                RETURN => return instruction.k,
                JUMP_ALWAYS => counter += instruction.k as usize,
                JUMP_IF_EQUAL | JUMP_IF_GREATER_OR_EQUAL | JUMP_IF_ANY_BIT_SET => {
                    let taken = match instruction.code {
                        JUMP_IF_EQUAL => accumulator == instruction.k,
                        JUMP_IF_GREATER_OR_EQUAL => accumulator >= instruction.k,
                        _ => accumulator & instruction.k != 0,
                    };
                    let offset = if taken {
                        instruction.jt
                    } else {
                        instruction.jf
                    };
                    counter += usize::from(offset);
                }
                code => panic!("unexpected opcode {code:#x}"),
            }
            assert!(counter < program.len(), "jump past the end of the program");
        }
    }

    pub(crate) const ALLOW: u32 = SECCOMP_RET_ALLOW;

    pub(crate) fn errno(code: u16) -> u32 {
        SECCOMP_RET_ERRNO | u32::from(code)
    }
}

#[cfg(test)]
mod tests {
    //! The search program against the straightforward one it replaced: a comparison per denied
    //! syscall, checked in order. Both must decide the same for every syscall number, every
    //! argument case a rule distinguishes, every architecture and every filter with a syscall
    //! allowed back.

    use std::collections::BTreeSet;

    use super::interpreter::run;
    use super::*;
    use crate::{Filter, AGENT_RULES};

    fn statement(code: u16, k: u32) -> sock_filter {
        sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    /// The reference: architecture and x32 checks, then one block per denied syscall,
    /// `if nr == N { rules...; return ALLOW }`, then `return ALLOW`.
    fn linear(arch: Arch, rules: &[Rule]) -> Vec<sock_filter> {
        let enosys = return_value(Action::Errno(crate::Errno::ENOSYS));
        let mut program = vec![
            statement(LOAD_WORD_ABSOLUTE, OFFSET_ARCH),
            jump(JUMP_IF_EQUAL, arch.audit_value(), 1, 0),
            statement(RETURN, enosys),
            statement(LOAD_WORD_ABSOLUTE, OFFSET_NR),
        ];
        if arch == Arch::X86_64 {
            program.push(jump(JUMP_IF_GREATER_OR_EQUAL, X32_SYSCALL_BIT, 0, 1));
            program.push(statement(RETURN, enosys));
        }
        let mut syscalls: Vec<&str> = Vec::new();
        for rule in rules {
            if !syscalls.contains(&rule.syscall) {
                syscalls.push(rule.syscall);
            }
        }
        for name in syscalls {
            let Some(number) = arch.syscall_number(name) else {
                continue;
            };
            let mut block = Vec::new();
            for rule in rules.iter().filter(|rule| rule.syscall == name) {
                let action = statement(RETURN, return_value(rule.action));
                let load = |argument: u8| {
                    statement(
                        LOAD_WORD_ABSOLUTE,
                        OFFSET_ARGUMENTS + 8 * u32::from(argument),
                    )
                };
                match rule.when {
                    When::Always => block.push(action),
                    When::Equals { argument, value } => {
                        block.push(load(argument));
                        block.push(jump(JUMP_IF_EQUAL, value, 0, 1));
                        block.push(action);
                    }
                    When::MaskedEquals {
                        argument,
                        mask,
                        value,
                    } => {
                        block.push(load(argument));
                        block.push(statement(AND, mask));
                        block.push(jump(JUMP_IF_EQUAL, value, 0, 1));
                        block.push(action);
                    }
                    When::AnyBitSet { argument, mask } => {
                        block.push(load(argument));
                        block.push(jump(JUMP_IF_ANY_BIT_SET, mask, 0, 1));
                        block.push(action);
                    }
                    When::NoneOf { argument, values } => {
                        block.push(load(argument));
                        let count = values.len();
                        for (index, value) in values.iter().enumerate() {
                            let skip = u8::try_from(count - index).unwrap_or(u8::MAX);
                            block.push(jump(JUMP_IF_EQUAL, *value, skip, 0));
                        }
                        block.push(action);
                    }
                }
            }
            block.push(statement(RETURN, SECCOMP_RET_ALLOW));
            let skip = u8::try_from(block.len()).unwrap_or(u8::MAX);
            program.push(jump(JUMP_IF_EQUAL, number, 0, skip));
            program.append(&mut block);
        }
        program.push(statement(RETURN, SECCOMP_RET_ALLOW));
        program
    }

    /// Values around every constant a rule compares an argument with (`thorough`: also with
    /// each bit flipped), in that argument and in all six at once, with the high half clear
    /// and set.
    fn argument_cases(rules: &[Rule], thorough: bool) -> Vec<[u64; 6]> {
        let mut values: BTreeSet<(usize, u32)> = BTreeSet::new();
        for rule in rules {
            let (argument, constants) = match rule.when {
                When::Always => continue,
                When::Equals { argument, value } => (argument, vec![value]),
                When::MaskedEquals {
                    argument,
                    mask,
                    value,
                } => (argument, vec![value, value | !mask, mask]),
                When::AnyBitSet { argument, mask } => (argument, vec![mask, !mask]),
                When::NoneOf { argument, values } => (argument, values.to_vec()),
            };
            let argument = usize::from(argument);
            for constant in constants {
                let mut near = vec![
                    constant,
                    constant.wrapping_add(1),
                    constant.wrapping_sub(1),
                    !constant,
                ];
                if thorough {
                    near.extend((0..32).map(|bit| constant ^ (1 << bit)));
                    near.extend((0..32).map(|bit| constant & (1 << bit)));
                }
                values.extend(near.into_iter().map(|value| (argument, value)));
            }
        }
        let mut cases = vec![[0; 6], [u64::MAX; 6]];
        for (argument, value) in values {
            for high in [0, 0xffff_ffff_0000_0000] {
                let value = high | u64::from(value);
                let mut case = [0; 6];
                case[argument] = value;
                cases.push(case);
                cases.push([value; 6]);
            }
        }
        cases
    }

    /// Both programs for `rules` on `arch` decide alike everywhere; returns their lengths.
    fn check_equivalent(arch: Arch, rules: &[Rule], cases: &[[u64; 6]]) -> (usize, usize) {
        let reference = linear(arch, rules);
        let program = match generate(arch, rules) {
            Ok(program) => program,
            Err(error) => panic!("{arch}: {error}"),
        };
        let mut numbers: Vec<u32> = (0..=1023).collect();
        numbers.extend([
            0x3fff_ffff,
            X32_SYSCALL_BIT,
            X32_SYSCALL_BIT | 16,
            X32_SYSCALL_BIT | 56,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            u32::MAX,
        ]);
        let named: BTreeSet<u32> = rules
            .iter()
            .filter_map(|rule| arch.syscall_number(rule.syscall))
            .collect();
        let foreign = [
            0,
            0x4000_0003,
            0xc000_003e,
            0xc000_00b7,
            0x4000_0028,
            u32::MAX,
        ];
        for audit in foreign.into_iter().chain([arch.audit_value()]) {
            // A syscall without argument rules is decided by its number alone.
            for &nr in &numbers {
                let cases = if named.contains(&nr) && audit == arch.audit_value() {
                    cases
                } else {
                    &cases[..2]
                };
                for arguments in cases {
                    assert_eq!(
                        run(&program, audit, nr, *arguments),
                        run(&reference, audit, nr, *arguments),
                        "{arch}: arch {audit:#x}, nr {nr}, arguments {arguments:x?}"
                    );
                }
            }
        }
        (reference.len(), program.len())
    }

    #[test]
    fn search_decides_like_the_linear_program() {
        let cases = argument_cases(AGENT_RULES, true);
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let (linear, search) = check_equivalent(arch, AGENT_RULES, &cases);
            // 226 and 193 instructions before, 93 and 87 now.
            assert!(
                2 * search < linear,
                "{arch}: {search} instructions, linear {linear}"
            );
        }
    }

    #[test]
    fn search_decides_like_the_linear_program_with_any_syscall_allowed_back() {
        let mut names: Vec<&str> = AGENT_RULES.iter().map(|rule| rule.syscall).collect();
        names.dedup();
        let cases = argument_cases(AGENT_RULES, false);
        for name in names {
            let mut filter = Filter::agent_default_for(Arch::X86_64);
            assert!(filter.allow(name).is_ok(), "{name}");
            for arch in [Arch::X86_64, Arch::Aarch64] {
                check_equivalent(arch, filter.rules(), &cases);
            }
        }
    }

    #[test]
    fn search_decides_like_the_linear_program_for_unusual_rule_lists() {
        let rule = |syscall: &'static str, when: When, errno: crate::Errno| Rule {
            syscall,
            action: Action::Errno(errno),
            when,
            why: "test",
        };
        let eperm = crate::Errno::EPERM;
        let enosys = crate::Errno::ENOSYS;
        let lists: Vec<Vec<Rule>> = vec![
            vec![],
            vec![rule("read_is_not_named", When::Always, eperm)],
            vec![rule("keyctl", When::Always, eperm)],
            // An always-rule after argument rules ends the list; rules after it never apply.
            vec![
                rule(
                    "socket",
                    When::Equals {
                        argument: 0,
                        value: 17,
                    },
                    eperm,
                ),
                rule("socket", When::Always, enosys),
                rule(
                    "socket",
                    When::Equals {
                        argument: 1,
                        value: 3,
                    },
                    eperm,
                ),
            ],
            // Neighbouring syscalls with the same rules, and an empty NoneOf.
            vec![
                rule(
                    "add_key",
                    When::Equals {
                        argument: 2,
                        value: 5,
                    },
                    eperm,
                ),
                rule(
                    "request_key",
                    When::Equals {
                        argument: 2,
                        value: 5,
                    },
                    eperm,
                ),
                rule(
                    "keyctl",
                    When::NoneOf {
                        argument: 0,
                        values: &[],
                    },
                    enosys,
                ),
                rule(
                    "ioctl",
                    When::NoneOf {
                        argument: 1,
                        values: &[1, 2, 3],
                    },
                    eperm,
                ),
                rule(
                    "ioctl",
                    When::AnyBitSet {
                        argument: 1,
                        mask: 0xf0,
                    },
                    enosys,
                ),
                rule(
                    "ioctl",
                    When::MaskedEquals {
                        argument: 1,
                        mask: 0xf,
                        value: 4,
                    },
                    eperm,
                ),
                rule(
                    "ioctl",
                    When::Equals {
                        argument: 1,
                        value: 0x5412,
                    },
                    eperm,
                ),
            ],
        ];
        for rules in lists {
            let cases = argument_cases(&rules, true);
            for arch in [Arch::X86_64, Arch::Aarch64] {
                check_equivalent(arch, &rules, &cases);
            }
        }
    }
}
