//! Test support for the whole workspace, so no test writes it again: building the artifacts the
//! tests run ([`artifacts`]), state fixtures and Set-Cookie reading ([`fixtures`], from the
//! core's `testing` feature), free loopback ports, fresh key rings, [`eventually`], and the
//! standard clients from PyPI ([`clients`]), the launcher's configuration and process
//! ([`bouncer`]).

pub mod artifacts;
pub mod bouncer;
pub mod clients;
mod eventually;
pub mod flask;
pub mod postgres;

pub use eventually::{eventually, patience};
/// State fixtures and Set-Cookie reading (`sticky_core::testing`).
pub use sticky_core::testing as fixtures;

use std::net::TcpListener;

use sticky_core::{KeyRingState, KeyState};

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A key ring of one fresh random key.
pub fn random_key_ring(id: u16) -> std::io::Result<KeyRingState> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(KeyRingState {
        active: id,
        keys: vec![KeyState::from_secret(id, &secret)],
    })
}

/// Runs `ip <args>` (iproute2; namespaces and links need root); its error says which command
/// failed and why.
pub fn ip(args: &[&str]) -> std::io::Result<()> {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| std::io::Error::other(format!("running `ip` (iproute2; namespaces need root): {e}")))?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
