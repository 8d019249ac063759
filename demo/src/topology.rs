//! The seed's topology (`--topology vms`): a bouncer and three private VMs as network
//! namespaces, made at start and removed at the end (also those a killed demo left).
//!
//! ```text
//!  this host ── <net>.1 ══ <net>.2 [bouncer: control service + Envoy] ── bridge 10.0.1.1/24
//!                          <net>.17… (load balancers' addresses)          ├─ vm1 10.0.1.11 (gunicorn :80)
//!                                                                         ├─ vm2 10.0.1.12
//!                                                                         └─ vm3 10.0.1.13
//! ```
//!
//! This host has a route to the bouncer's network only: the VMs' private network is reachable
//! from the bouncer alone (no forwarding there), as behind the seed's bouncer host.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use sticky_testing::ip;

/// The VMs' private network and their addresses (the seed's).
pub const PRIVATE_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fn vm_address(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, 10 + n)
}

/// The namespaces and links of one topology; dropping it removes them.
pub struct Topology {
    tag: String,
    /// The bouncer's network seen from this host (a /24: `.1` here, `.2` the bouncer).
    network: Ipv4Addr,
    vms: u8,
}

impl Topology {
    /// Makes the bouncer and `vms` VMs; `tag` names the namespaces (`<tag>-bouncer`,
    /// `<tag>-vm1`, …), `network` is the bouncer's /24 seen from this host.
    pub fn create(tag: &str, network: Ipv4Addr, vms: u8) -> anyhow::Result<Self> {
        if tag.is_empty()
            || tag.len() > 13
            || !tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("--netns-tag must be 1 to 13 characters of a-z, 0-9 and '-'");
        }
        let topology = Self {
            tag: tag.to_owned(),
            network,
            vms,
        };
        // What a demo killed before it could clean up left behind.
        topology.remove();
        topology.build().context("making the vms topology")?;
        Ok(topology)
    }

    pub fn bouncer_netns(&self) -> String {
        format!("{}-bouncer", self.tag)
    }

    pub fn vm_netns(&self, n: u8) -> String {
        format!("{}-vm{n}", self.tag)
    }

    /// The bouncer's address seen from this host (where its API listens).
    pub fn bouncer_address(&self) -> Ipv4Addr {
        self.host(2)
    }

    /// The pool the load balancers' addresses come from (each is on the bouncer).
    pub fn address_pool(&self) -> String {
        format!("{}/29", self.host(16))
    }

    /// Each VM: its instance id, address (port 80) and namespace.
    pub fn vms(&self) -> Vec<(String, SocketAddr, String)> {
        (1..=self.vms)
            .map(|n| {
                (
                    format!("i-vm{n}"),
                    SocketAddr::from((vm_address(n), 80)),
                    self.vm_netns(n),
                )
            })
            .collect()
    }

    fn host(&self, last: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.network.octets();
        Ipv4Addr::new(a, b, c, last)
    }

    /// The link on this host's side (interface names are at most 15 bytes).
    fn host_link(&self) -> String {
        format!("{}-h", self.tag)
    }

    fn build(&self) -> anyhow::Result<()> {
        let bouncer = self.bouncer_netns();
        ip(&["netns", "add", &bouncer])?;
        ip(&["-n", &bouncer, "link", "set", "lo", "up"])?;
        // This host ══ the bouncer.
        let host_link = self.host_link();
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "public", "netns", &bouncer,
        ])?;
        ip(&["addr", "add", &format!("{}/24", self.host(1)), "dev", &host_link])?;
        ip(&["link", "set", &host_link, "up"])?;
        ip(&[
            "-n",
            &bouncer,
            "addr",
            "add",
            &format!("{}/24", self.host(2)),
            "dev",
            "public",
        ])?;
        // The load balancers' addresses (the pool's hosts) are the bouncer's too.
        for last in 17..=22 {
            ip(&[
                "-n",
                &bouncer,
                "addr",
                "add",
                &format!("{}/32", self.host(last)),
                "dev",
                "public",
            ])?;
        }
        ip(&["-n", &bouncer, "link", "set", "public", "up"])?;
        // The bouncer ── the VMs' private network.
        ip(&["-n", &bouncer, "link", "add", "private", "type", "bridge"])?;
        ip(&[
            "-n",
            &bouncer,
            "addr",
            "add",
            &format!("{PRIVATE_GATEWAY}/24"),
            "dev",
            "private",
        ])?;
        ip(&["-n", &bouncer, "link", "set", "private", "up"])?;
        for n in 1..=self.vms {
            let vm = self.vm_netns(n);
            let port = format!("vm{n}");
            ip(&["netns", "add", &vm])?;
            ip(&["-n", &vm, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &bouncer, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &vm,
            ])?;
            ip(&["-n", &bouncer, "link", "set", &port, "master", "private"])?;
            ip(&["-n", &bouncer, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &vm,
                "addr",
                "add",
                &format!("{}/24", vm_address(n)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &vm, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &vm,
                "route",
                "add",
                "default",
                "via",
                &PRIVATE_GATEWAY.to_string(),
            ])?;
        }
        Ok(())
    }

    /// Removes the namespaces (their links go with them) and this host's link.
    fn remove(&self) {
        for n in 1..=self.vms {
            let _ = ip(&["netns", "del", &self.vm_netns(n)]);
        }
        let _ = ip(&["netns", "del", &self.bouncer_netns()]);
        let _ = ip(&["link", "del", &self.host_link()]);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}
