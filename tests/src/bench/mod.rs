//! The benchmark against the peers (`cargo run --release -p sticky-tests --bin bench`): load
//! generation and process figures, HAProxy, propagation through the live system, and the
//! reports it writes under `docs/benchmarks/`.

pub mod haproxy;
pub mod load;
pub mod propagation;
pub mod replicas;
pub mod report;
pub mod websocket;
