//! Envoy's configuration over gRPC xDS: [`resources`] projects the domain onto Envoy's API
//! types, [`ads`] serves them on the aggregated discovery service and records what each Envoy
//! holds.

pub mod ads;
pub mod resources;
pub mod tls;

pub use ads::AdsServer;
pub use resources::{EnvoyNode, FilterArtifact, ServeOptions};
