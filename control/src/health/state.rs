//! The health state machine, as ELB's: a registered instance is pending until its first probe,
//! whose result counts at once; afterwards UnhealthyThreshold consecutive failures take it out
//! of service and HealthyThreshold consecutive successes bring it back. Pure: the prober feeds
//! it results.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HealthStatus {
    /// Registered, not probed yet.
    Pending,
    InService,
    OutOfService,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceHealth {
    pub status: HealthStatus,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    /// Why the last probe failed, for DescribeInstanceHealth.
    pub last_failure: String,
}

impl InstanceHealth {
    pub const PENDING: InstanceHealth = InstanceHealth {
        status: HealthStatus::Pending,
        consecutive_ok: 0,
        consecutive_failed: 0,
        last_failure: String::new(),
    };

    /// The state after one more probe result.
    pub fn after(&self, outcome: Result<(), String>, healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        let mut next = self.clone();
        match outcome {
            Ok(()) => {
                next.consecutive_ok += 1;
                next.consecutive_failed = 0;
                if self.status == HealthStatus::Pending || next.consecutive_ok >= healthy_threshold {
                    next.status = HealthStatus::InService;
                }
            }
            Err(reason) => {
                next.consecutive_failed += 1;
                next.consecutive_ok = 0;
                next.last_failure = reason;
                if self.status == HealthStatus::Pending || next.consecutive_failed >= unhealthy_threshold {
                    next.status = HealthStatus::OutOfService;
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_apply_after_the_first_probe() {
        let ok = || Ok(());
        let failed = || Err("down".to_owned());
        let first = InstanceHealth::PENDING.after(ok(), 3, 2);
        assert_eq!(first.status, HealthStatus::InService, "the first probe counts at once");
        let one_failure = first.after(failed(), 3, 2);
        assert_eq!(one_failure.status, HealthStatus::InService);
        let out = one_failure.after(failed(), 3, 2);
        assert_eq!(out.status, HealthStatus::OutOfService);
        assert_eq!(out.last_failure, "down");
        let back = out.after(ok(), 3, 2).after(ok(), 3, 2);
        assert_eq!(back.status, HealthStatus::OutOfService);
        assert_eq!(back.after(ok(), 3, 2).status, HealthStatus::InService);
        assert_eq!(
            InstanceHealth::PENDING.after(failed(), 3, 2).status,
            HealthStatus::OutOfService
        );
    }
}
