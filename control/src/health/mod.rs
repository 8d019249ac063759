//! Health checks as configured with ConfigureHealthCheck: the pure state machine (thresholds);
//! `prober` feeds it.

mod state;

pub use state::{HealthStatus, InstanceHealth};
