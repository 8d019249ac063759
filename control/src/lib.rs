//! The control service: the LBU / classic ELB Query API (SigV4-signed), a durable store, health
//! checks, Envoy's configuration over gRPC xDS (and REST EDS), and the filters' state feed. See docs/operating.md and docs/api.md.

pub mod api;
pub mod attributes;
pub mod bootstrap;
pub mod certificates;
pub mod commands;
pub mod control_tls;
pub mod domain;
pub mod error;
pub mod feed;
pub mod followers;
pub mod health;
pub mod http;
pub mod iam;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod oapi;
pub mod prober;
pub mod query;
pub mod replica;
pub mod replicas;
mod runner;
pub mod sealing;
pub mod service;
pub mod sigv4;
pub mod store;
pub mod tallies;
pub mod tls_policy;
pub mod ui;
pub mod xds;
pub mod xml;

pub use bootstrap::BootstrapFile;
pub use http::{HttpOptions, app};
pub use service::{Service, ServiceConfig};
