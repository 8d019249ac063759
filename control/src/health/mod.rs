//! Health checks as configured with ConfigureHealthCheck: the pure state machine (`state`) and
//! the prober that feeds it (`prober`).

mod prober;
mod state;

pub use prober::run;
pub use state::{HealthStatus, InstanceHealth};
