//! Test support for the whole workspace, so no test writes it again: building the artifacts the
//! tests run ([`artifacts`]), state fixtures and Set-Cookie reading ([`fixtures`], from the
//! core's `testing` feature), free loopback ports, fresh key rings, [`eventually`], and the
//! standard clients from PyPI ([`clients`]), the launcher's configuration and process
//! ([`bouncer`]).

pub mod artifacts;
pub mod bouncer;
pub mod clients;
pub mod control_client;
pub mod control_process;
mod eventually;
pub mod flask;
pub mod postgres;
pub mod tls;

pub use eventually::{eventually, patience};
/// State fixtures and Set-Cookie reading (`sticky_core::testing`).
pub use sticky_core::testing as fixtures;

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use sticky_core::{KeyRingState, KeyState};

/// Lowest port [`free_port`] hands out.
const TEST_PORTS_FROM: u16 = 10_000;

/// A TCP port on 127.0.0.1, free when asked, for a process the caller starts to bind.
///
/// Taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768–60999 by
/// default), where neither `bind(:0)` nor an outgoing connection gets its port: a port the
/// kernel hands out can be taken by another test's connection before the child binds it (Envoy
/// once failed to start on `Address already in use` that way). Each process walks that range
/// from a random start, so parallel tests get distinct ports; one in use is skipped. Where the
/// ephemeral range leaves no room below it, the kernel's choice it is.
pub fn free_port() -> std::io::Result<u16> {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let Some(below) = ephemeral_range_start().filter(|start| *start > TEST_PORTS_FROM + 1_000) else {
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    };
    let span = u32::from(below - TEST_PORTS_FROM);
    let next = NEXT.get_or_init(|| {
        let mut start = [0u8; 4];
        // Without randomness, successive test processes would start on the same port.
        let _ = getrandom::fill(&mut start);
        AtomicU32::new(u32::from_le_bytes(start))
    });
    for _ in 0..span {
        let offset = next.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS_FROM + u16::try_from(offset).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("every port from {TEST_PORTS_FROM} to {below} is in use on 127.0.0.1"),
    ))
}

/// The first port of the kernel's ephemeral range, if it can be read.
fn ephemeral_range_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_kernels_ephemeral_range() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..50).map(|_| free_port().unwrap()).collect::<Vec<_>>()))
            .collect();
        let mut ports: Vec<u16> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        if let Some(below) = ephemeral_range_start() {
            assert!(ports.iter().all(|p| (TEST_PORTS_FROM..below).contains(p)), "{ports:?}");
        }
        let count = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), count, "a port was handed out twice");
    }
}
