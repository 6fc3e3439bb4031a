//! The limits a sandbox asks for, and their translation into cgroup file values.
//!
//! Pure: no I/O. Every value is checked here so that a bad limit is an error before any
//! directory is created.

use crate::error::CreateError;
use crate::host::Controller;

/// The CFS period hardbox writes, in microseconds (the kernel's default, 100 ms).
pub const CPU_PERIOD_MICROS: u64 = 100_000;

/// The smallest CFS quota the kernel accepts, in microseconds (1 ms).
const MIN_QUOTA_MICROS: u64 = 1_000;

/// Resource limits for one sandbox. `None` leaves a resource unlimited and its controller unused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub memory_bytes: Option<u64>,
    /// Swap allowed on top of `memory_bytes`, in bytes; `None` means no swap (v2
    /// `memory.swap.max`, v1 `memory.memsw.limit_in_bytes` = memory + swap). Only meaningful
    /// with `memory_bytes`.
    pub memory_swap_bytes: Option<u64>,
    /// Largest number of processes and threads (`pids.max`).
    pub pids: Option<u64>,
    /// CPU time in CPUs, fractions allowed (v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
    /// `cpu.cfs_period_us`).
    pub cpus: Option<f64>,
}

impl Limits {
    /// The controllers these limits need, in the order they are set up.
    pub fn controllers(&self) -> Vec<Controller> {
        let mut controllers = Vec::new();
        if self.memory_bytes.is_some() {
            controllers.push(Controller::Memory);
        }
        if self.pids.is_some() {
            controllers.push(Controller::Pids);
        }
        if self.cpus.is_some() {
            controllers.push(Controller::Cpu);
        }
        controllers
    }

    /// Checks every value, before anything is created.
    pub(crate) fn validate(&self) -> Result<(), CreateError> {
        if self.memory_bytes == Some(0) {
            return Err(CreateError::InvalidLimit {
                controller: Controller::Memory,
                reason: "the memory limit must be positive",
            });
        }
        if self.memory_swap_bytes.is_some() && self.memory_bytes.is_none() {
            return Err(CreateError::InvalidLimit {
                controller: Controller::Memory,
                reason: "a swap limit needs a memory limit",
            });
        }
        if self.pids == Some(0) {
            return Err(CreateError::InvalidLimit {
                controller: Controller::Pids,
                reason: "the process limit must be positive",
            });
        }
        if let Some(cpus) = self.cpus {
            CpuQuota::from_cpus(cpus)?;
        }
        Ok(())
    }
}

/// A CFS bandwidth limit: `quota_micros` of CPU time every `period_micros`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time allowed per period, in microseconds.
    pub quota_micros: u64,
    /// The period, in microseconds.
    pub period_micros: u64,
}

impl CpuQuota {
    /// The quota for `cpus` CPUs over [`CPU_PERIOD_MICROS`], rounded to the nearest microsecond
    /// and raised to the kernel's 1 ms minimum.
    ///
    /// # Errors
    ///
    /// [`CreateError::InvalidLimit`] if `cpus` is not a positive finite number or is absurdly
    /// large (more than a million CPUs).
    pub fn from_cpus(cpus: f64) -> Result<CpuQuota, CreateError> {
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(CreateError::InvalidLimit {
                controller: Controller::Cpu,
                reason: "the cpu limit must be a positive number",
            });
        }
        if cpus > 1_000_000.0 {
            return Err(CreateError::InvalidLimit {
                controller: Controller::Cpu,
                reason: "the cpu limit is larger than a million cpus",
            });
        }
        // In range: 0 < cpus * period <= 1e11, which fits u64 exactly after rounding.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the product is positive and at most 1e11, checked above"
        )]
        let quota = (cpus * CPU_PERIOD_MICROS as f64).round() as u64;
        Ok(CpuQuota {
            quota_micros: quota.max(MIN_QUOTA_MICROS),
            period_micros: CPU_PERIOD_MICROS,
        })
    }

    /// The v2 `cpu.max` value: `"<quota> <period>"`.
    pub fn cpu_max(self) -> String {
        format!("{} {}", self.quota_micros, self.period_micros)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests unwrap values known to be valid")]
mod tests {
    use super::*;

    #[test]
    fn cpus_become_quota_over_period() {
        let check = |cpus: f64, expected: Option<&str>| {
            let got = CpuQuota::from_cpus(cpus).ok().map(CpuQuota::cpu_max);
            assert_eq!(got.as_deref(), expected, "cpus = {cpus}");
        };
        check(0.2, Some("20000 100000"));
        check(1.0, Some("100000 100000"));
        check(1.5, Some("150000 100000"));
        check(2.0, Some("200000 100000"));
        check(0.333_333, Some("33333 100000"));
        // Below the kernel's 1 ms minimum: raised to it.
        check(0.001, Some("1000 100000"));
        check(0.0, None);
        check(-1.0, None);
        check(f64::NAN, None);
        check(f64::INFINITY, None);
        check(2e6, None);
    }

    #[test]
    fn limits_name_their_controllers_and_reject_nonsense() {
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            pids: Some(8),
            cpus: Some(0.5),
            ..Limits::default()
        };
        assert_eq!(
            limits.controllers(),
            vec![Controller::Memory, Controller::Pids, Controller::Cpu]
        );
        assert!(limits.validate().is_ok());
        assert!(Limits::default().controllers().is_empty());

        let check_invalid = |limits: Limits, expected: &str| {
            let err = limits.validate().err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(expected));
        };
        check_invalid(
            Limits {
                memory_bytes: Some(0),
                ..Limits::default()
            },
            "invalid memory limit: the memory limit must be positive",
        );
        check_invalid(
            Limits {
                memory_swap_bytes: Some(1),
                ..Limits::default()
            },
            "invalid memory limit: a swap limit needs a memory limit",
        );
        check_invalid(
            Limits {
                pids: Some(0),
                ..Limits::default()
            },
            "invalid pids limit: the process limit must be positive",
        );
        check_invalid(
            Limits {
                cpus: Some(-0.5),
                ..Limits::default()
            },
            "invalid cpu limit: the cpu limit must be a positive number",
        );
    }
}
