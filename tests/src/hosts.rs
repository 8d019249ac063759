//! Targets as processes of their own (the demo target's binary `demo-target`), either on
//! loopback or each on a test host: a network namespace the test creates, joined to this one by
//! a veth pair, with an address of its own. Dropping the set kills the processes and removes
//! every namespace and link it made, also when a test fails.
//!
//! Two ways for a target to fail:
//! - [`TargetProcesses::kill`]: SIGKILL. The kernel closes or resets its connections at once
//!   and refuses new ones (a crashed process).
//! - [`TargetProcesses::vanish`]: its host's link goes down. Packets to it are dropped
//!   silently: connects hang and sent data is never acknowledged (a powered-off VM, a cut
//!   network). Only test hosts can vanish.
//!
//! Addresses come from 198.18.0.0/15, the range RFC 2544 sets aside for benchmarking tests:
//! it is never routed, and every address used here lives in a namespace this process made.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use sticky_testing::eventually;
use sticky_testing::ip;

/// Where the targets run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On 127.0.0.1, each on a free port.
    Loopback,
    /// Each on a test host (network namespace) of its own, on port 80.
    TestHosts,
}

/// A network namespace with a veth pair to this one: `outer` here, `inner` in the namespace.
#[derive(Debug)]
struct TestHost {
    netns: String,
    outer: String,
    inner: String,
}

#[derive(Debug)]
struct TargetProcess {
    id: String,
    address: SocketAddr,
    host: Option<TestHost>,
    child: Option<Child>,
}

/// Demo targets running as processes; see the module documentation.
#[derive(Debug)]
pub struct TargetProcesses {
    binary: PathBuf,
    targets: Vec<TargetProcess>,
}

/// Prefix of every namespace name made here; the process id follows, so stale ones left by a
/// killed test run can be found and removed.
const NETNS_PREFIX: &str = "sticky-test-";

/// Test hosts made by this process so far (each gets its own /30).
static HOSTS_MADE: AtomicU32 = AtomicU32::new(0);

/// Removes namespaces left by test runs whose process is gone (a run killed before it could
/// clean up).
fn remove_stale_hosts() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl TestHost {
    /// Makes a namespace with a veth pair, the outer end at the /30's first address here, the
    /// inner end at its second; returns the host and the inner address.
    fn create() -> anyhow::Result<(Self, Ipv4Addr)> {
        let pid = std::process::id();
        let n = HOSTS_MADE.fetch_add(1, Ordering::Relaxed);
        if n >= 64 {
            bail!("more than 64 test hosts in one process");
        }
        // One /30 per host, the block chosen by process id so concurrent test processes differ.
        let block = (pid % 512) * 64 + n;
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4;
        let (outer_ip, inner_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let host = Self {
            netns: format!("{NETNS_PREFIX}{pid}-{n}"),
            outer: format!("stk{}o{n}", pid % 100_000),
            inner: format!("stk{}i{n}", pid % 100_000),
        };
        ip(&["netns", "add", &host.netns])?;
        // From here on, dropping `host` removes what was made.
        ip(&[
            "link",
            "add",
            &host.outer,
            "type",
            "veth",
            "peer",
            "name",
            &host.inner,
            "netns",
            &host.netns,
        ])?;
        ip(&["addr", "add", &format!("{outer_ip}/30"), "dev", &host.outer])?;
        ip(&["link", "set", &host.outer, "up"])?;
        ip(&[
            "-n",
            &host.netns,
            "addr",
            "add",
            &format!("{inner_ip}/30"),
            "dev",
            &host.inner,
        ])?;
        ip(&["-n", &host.netns, "link", "set", &host.inner, "up"])?;
        ip(&["-n", &host.netns, "link", "set", "lo", "up"])?;
        Ok((host, inner_ip))
    }

    fn set_link(&self, up: bool) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            &self.inner,
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the inner end, and with it the pair; the outer end
        // is deleted too in case the namespace was already gone.
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["link", "del", &self.outer]);
    }
}

impl TargetProcesses {
    /// Starts one target per id and returns once every one accepts connections.
    pub fn start(ids: &[&str], placement: Placement) -> anyhow::Result<Self> {
        let binary = sticky_testing::artifacts::build_demo_target()?;
        if placement == Placement::TestHosts {
            remove_stale_hosts();
        }
        let mut set = Self {
            binary,
            targets: Vec::new(),
        };
        for id in ids {
            let (host, address) = match placement {
                Placement::Loopback => (None, SocketAddr::from(([127, 0, 0, 1], sticky_testing::free_port()?))),
                Placement::TestHosts => {
                    let (host, address) = TestHost::create()?;
                    (Some(host), SocketAddr::from((address, 80)))
                }
            };
            set.targets.push(TargetProcess {
                id: (*id).to_owned(),
                address,
                host,
                child: None,
            });
            set.launch(id)?;
        }
        Ok(set)
    }

    fn target(&mut self, id: &str) -> anyhow::Result<&mut TargetProcess> {
        self.targets
            .iter_mut()
            .find(|t| t.id == id)
            .with_context(|| format!("no target {id}"))
    }

    /// Starts target `id`'s process and waits until it accepts connections.
    fn launch(&mut self, id: &str) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let target = self.target(id)?;
        let mut command = match &target.host {
            // `ip netns exec` execs the target in the namespace: the child is the target.
            Some(host) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &host.netns]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let child = command
            .args(["--id", id, "--host", &target.address.ip().to_string()])
            .args(["--port", &target.address.port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        target.child = Some(child);
        let address = target.address;
        let mut exited = None;
        let what = format!("target {id} accepts connections on {address}");
        eventually(Duration::from_secs(20), &what, || {
            exited = target.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            exited.is_some() || TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        match exited {
            Some(status) => bail!("target {id} exited at start: {status}"),
            None => Ok(()),
        }
    }

    /// `(id, ip:port)` of every target.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.targets.iter().map(|t| (t.id.clone(), t.address)).collect()
    }

    /// Kills target `id`'s process (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self, id: &str) -> anyhow::Result<()> {
        if let Some(mut child) = self.target(id)?.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts target `id` again, on the same address.
    pub fn restart(&mut self, id: &str) -> anyhow::Result<()> {
        self.kill(id)?;
        self.launch(id)
    }

    /// Target `id`'s host drops off the network: its link goes down, and every packet to it is
    /// dropped without an answer. The process keeps running.
    pub fn vanish(&mut self, id: &str) -> anyhow::Result<()> {
        match &self.target(id)?.host {
            Some(host) => host.set_link(false),
            None => bail!("target {id} runs on loopback: only a test host can vanish"),
        }
    }

    /// Target `id`'s host is reachable again.
    pub fn reappear(&mut self, id: &str) -> anyhow::Result<()> {
        match &self.target(id)?.host {
            Some(host) => host.set_link(true),
            None => bail!("target {id} runs on loopback"),
        }
    }
}

impl Drop for TargetProcesses {
    fn drop(&mut self) {
        for target in &mut self.targets {
            if let Some(mut child) = target.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            // The namespace goes when `target.host` drops, after its process.
        }
    }
}
