//! Figures of one bouncer as its load balancers grow: with 10, 100 and 1,000 load balancers
//! (one HTTP listener each, three targets, an LB cookie policy) on a real control service
//! (SQLite) and one real Envoy following it over xDS, the answer time of one load balancer's
//! setup and of one change (p50/p99), the control service's CPU per change, and Envoy's memory
//! per load balancer. Every answer means "in force": the Envoy and its filters hold it.
//!
//! `cargo run --release -p sticky-tests --bin bench-scale -- --sizes 10,100,1000`

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use sticky_control::BootstrapFile;
use sticky_demo_target::DemoTargets;
use sticky_envoy::{EnvoyProcess, XdsBootstrap};
use sticky_testing::artifacts::build_control_release;
use sticky_testing::control_client::QueryClient;
use sticky_testing::control_process::ControlProcess;
use sticky_testing::tls::ControlPlaneCa;
use sticky_tests::live::{ACCESS_KEY, HEALTH_CHECK};
use sticky_tests::xds::envoy_credentials;
use sticky_tests::{TARGET_IDS, agent, get};

#[derive(Parser)]
struct Args {
    /// Numbers of load balancers, one run each.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sizes: Vec<usize>,
    /// Changes measured at each size (half policy changes, half target changes).
    #[arg(long, default_value_t = 60)]
    changes: usize,
}

/// The pool the benchmark's load balancers take their addresses from (1,022 addresses).
const POOL: [u8; 3] = [127, 232, 0];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sizes.iter().any(|n| *n == 0 || *n > 1_000) {
        bail!("--sizes: each from 1 to 1000 (the pool holds 1,022 addresses)");
    }
    let shell = sticky_tests::shell_under_test().build()?;
    println!("shell: {shell:?}\n");
    println!(
        "| load balancers | setup p50 | setup p99 | policy change p50 | p99 | target change p50 | p99 | control CPU per change (idle, cores) | Envoy memory per load balancer | Envoy → control connections |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for n in &args.sizes {
        let figures = run(*n, args.changes, &shell)?;
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {:.1} ms ({:.2}) | {:.0} KiB | {} |",
            ms(figures.setup.0),
            ms(figures.setup.1),
            ms(figures.policy.0),
            ms(figures.policy.1),
            ms(figures.target.0),
            ms(figures.target.1),
            figures.cpu_per_change_ms,
            figures.idle_cores,
            figures.memory_per_lb / 1024.0,
            figures.connections
        );
        rows.push((*n, figures));
    }
    if let (Some((small, first)), Some((large, last))) = (rows.first(), rows.last())
        && small != large
    {
        let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-6);
        println!(
            "\n{large} : {small} — setup p50 {:.2}×, policy change p50 {:.2}×, target change p50 {:.2}×, CPU per change {:.2}×, memory per load balancer {:.2}×",
            ratio(first.setup.0, last.setup.0),
            ratio(first.policy.0, last.policy.0),
            ratio(first.target.0, last.target.0),
            last.cpu_per_change_ms / first.cpu_per_change_ms.max(1e-6),
            last.memory_per_lb / first.memory_per_lb.max(1.0),
        );
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Figures {
    /// p50, p99 of one load balancer's setup (create, health check, register, policy, set).
    setup: (Duration, Duration),
    policy: (Duration, Duration),
    target: (Duration, Duration),
    cpu_per_change_ms: f64,
    /// The control service's CPU without changes (health checks), in cores.
    idle_cores: f64,
    memory_per_lb: f64,
    connections: u64,
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// A port free on the pool's first addresses, and the offset that serves port 80 there.
fn port_offset() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let probe = TcpListener::bind((Ipv4Addr::new(POOL[0], POOL[1], POOL[2], 1), 0))?;
        let port = probe.local_addr()?.port();
        drop(probe);
        if port > 1024
            && (1..=4u8).all(|h| TcpListener::bind((Ipv4Addr::new(POOL[0], POOL[1], POOL[2], h), port)).is_ok())
        {
            return Ok(port - 80);
        }
    }
    bail!("no free port on the pool's addresses")
}

/// Where load balancer number `n` (0-based, in creation order) serves port 80.
fn listener(n: usize, offset: u16) -> SocketAddr {
    let host = u32::from(Ipv4Addr::new(POOL[0], POOL[1], POOL[2], 0)) + 1 + n as u32;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(host)), 80 + offset)
}

/// Control service CPU time so far (user + system), in milliseconds.
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("/proc stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks * 10.0)
}

fn envoy_allocated(envoy: &EnvoyProcess) -> anyhow::Result<f64> {
    let memory: serde_json::Value = serde_json::from_str(&envoy.admin_get("/memory")?)?;
    memory["allocated"]
        .as_str()
        .context("allocated")?
        .parse::<f64>()
        .context("allocated")
}

fn call(api: &QueryClient, action: &str, params: &[(&str, &str)]) -> anyhow::Result<()> {
    let reply = api.call(action, params).map_err(|e| anyhow::anyhow!("{action}: {e}"))?;
    if reply.status != 200 {
        bail!("{action}: {} {}", reply.status, reply.body);
    }
    Ok(())
}

fn setup(api: &QueryClient, name: &str) -> anyhow::Result<()> {
    call(
        api,
        "CreateLoadBalancer",
        &[
            ("LoadBalancerName", name),
            ("Listeners.member.1.Protocol", "HTTP"),
            ("Listeners.member.1.LoadBalancerPort", "80"),
            ("Listeners.member.1.InstancePort", "80"),
        ],
    )?;
    let mut health = vec![("LoadBalancerName", name)];
    health.extend(HEALTH_CHECK);
    call(api, "ConfigureHealthCheck", &health)?;
    let members: Vec<String> = (1..=TARGET_IDS.len())
        .map(|i| format!("Instances.member.{i}.InstanceId"))
        .collect();
    let mut register = vec![("LoadBalancerName", name)];
    register.extend(members.iter().map(String::as_str).zip(TARGET_IDS));
    call(api, "RegisterInstancesWithLoadBalancer", &register)?;
    call(
        api,
        "CreateLBCookieStickinessPolicy",
        &[
            ("LoadBalancerName", name),
            ("PolicyName", "sticky"),
            ("CookieExpirationPeriod", "600"),
        ],
    )?;
    call(
        api,
        "SetLoadBalancerPoliciesOfListener",
        &[
            ("LoadBalancerName", name),
            ("LoadBalancerPort", "80"),
            ("PolicyNames.member.1", "sticky"),
        ],
    )
}

fn run(n: usize, changes: usize, shell: &sticky_envoy::FilterShell) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
    let targets = DemoTargets::start(&specs)?;
    let mut bootstrap = BootstrapFile::one_listener("unused", &targets.addresses());
    bootstrap.load_balancers.clear();
    let offset = port_offset()?;
    let pool = format!("{}.{}.{}.0/22", POOL[0], POOL[1], POOL[2]);
    let offset_arg = offset.to_string();
    // Over TLS, as the launcher runs it.
    let pki = ControlPlaneCa::new(&dir.path().join("pki")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let control = ControlProcess::start_with(
        &build_control_release()?,
        &dir.path().join("control"),
        sticky_testing::free_port()?,
        &bootstrap,
        ACCESS_KEY,
        &["--lb-address-pool", &pool, "--lb-port-offset", &offset_arg],
        Some(pki),
    )?;
    let mut xds = XdsBootstrap::new(
        shell.clone(),
        control.address(),
        "bench-scale",
        sticky_testing::free_port()?,
    );
    envoy_credentials(&control, &mut xds);
    let envoy = EnvoyProcess::start_xds(&xds, &dir.path().join("envoy"), 1)?;
    let api = control.client(ACCESS_KEY);
    // After a start, changes wait until every follower had time to reconnect: not measured.
    let metrics = format!("{}/metrics", control.url());
    let discovery = Instant::now() + Duration::from_secs(30);
    while !control
        .agent()
        .get(&metrics)
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .is_some_and(|text| text.lines().any(|l| l == "sticky_control_discovering_followers 0"))
    {
        if Instant::now() > discovery {
            bail!("the control service's discovery window did not close");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = envoy_allocated(&envoy)?;

    let mut setups = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        setup(&api, &format!("lb-{i}"))?;
        setups.push(started.elapsed());
        if (i + 1) % 100 == 0 {
            eprintln!("  {n}: {} load balancers set up", i + 1);
        }
    }
    // Every load balancer served, with stickiness.
    let agent = agent();
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..n {
        let at = listener(i, offset);
        loop {
            match get(&agent, &format!("http://{at}"), "/", &[], &[]) {
                Ok(reply) if reply.status == 200 && reply.set_cookies.iter().any(|c| c.starts_with("AWSELB=")) => break,
                outcome if Instant::now() > deadline => bail!("lb-{i} at {at} not served with stickiness: {outcome:?}"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let after = envoy_allocated(&envoy)?;
    let memory_per_lb = (after - before) / n as f64;
    let connections = control_connections(&envoy)?;

    let pid = control.pid().context("the control service's pid")?;
    let cpu_before = cpu_ms(pid)?;
    let changing = Instant::now();
    let (mut policy, mut target) = (Vec::new(), Vec::new());
    for j in 0..changes {
        let name = format!("lb-{}", (j * 7919) % n);
        let started = Instant::now();
        if j % 2 == 0 {
            let period = (600 + j).to_string();
            call(
                &api,
                "CreateLBCookieStickinessPolicy",
                &[
                    ("LoadBalancerName", &name),
                    ("PolicyName", &format!("sticky-{j}")),
                    ("CookieExpirationPeriod", &period),
                ],
            )?;
            let started = Instant::now();
            call(
                &api,
                "SetLoadBalancerPoliciesOfListener",
                &[
                    ("LoadBalancerName", &name),
                    ("LoadBalancerPort", "80"),
                    ("PolicyNames.member.1", &format!("sticky-{j}")),
                ],
            )?;
            policy.push(started.elapsed());
        } else {
            let action = if j % 4 == 1 {
                "DeregisterInstancesFromLoadBalancer"
            } else {
                "RegisterInstancesWithLoadBalancer"
            };
            call(
                &api,
                action,
                &[
                    ("LoadBalancerName", &name),
                    ("Instances.member.1.InstanceId", TARGET_IDS[2]),
                ],
            )?;
            target.push(started.elapsed());
        }
    }
    let window = changing.elapsed();
    let busy = cpu_ms(pid)? - cpu_before;
    // What the service spends meanwhile without changes (health checks of every target),
    // measured over as long a window, is not the changes' cost.
    let idle_before = cpu_ms(pid)?;
    std::thread::sleep(window);
    let idle = cpu_ms(pid)? - idle_before;
    // Policy creations are changes too (filter state): 1.5 calls per change on average.
    let calls = changes + changes.div_ceil(2);
    let cpu_per_change_ms = (busy - idle).max(0.0) / calls as f64;
    let idle_cores = idle / 1000.0 / window.as_secs_f64();
    drop(envoy);
    Ok(Figures {
        setup: percentiles(setups),
        policy: percentiles(policy),
        target: percentiles(target),
        cpu_per_change_ms,
        idle_cores,
        memory_per_lb,
        connections,
    })
}

/// Envoy's open connections to the control service (xDS and the filters' state feed).
fn control_connections(envoy: &EnvoyProcess) -> anyhow::Result<u64> {
    let clusters = envoy.admin_get("/clusters")?;
    Ok(clusters
        .lines()
        .filter(|l| (l.starts_with("control::") || l.starts_with("xds::")) && l.contains("::cx_active::"))
        .filter_map(|l| l.rsplit("::").next()?.parse::<u64>().ok())
        .sum())
}
