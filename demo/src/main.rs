//! Runs the whole product on embedded defaults, until Ctrl-C: three targets (the seed's Flask
//! app with server-side sessions under gunicorn, or the Rust demo target) and the operator's
//! launcher, `sticky-bouncer`, from a configuration file the demo writes: the control service
//! (SQLite) declaring load balancer `terraform-balancer` with listener 80, and Envoy taking every
//! load balancer's listeners from it over xDS. On loopback (the default) each load balancer gets
//! its own address (127.0.100.1, .2, … in creation order), port P served on P + 8000; with
//! `--topology vms`, the seed's bouncer and three private VMs as network namespaces.

mod topology;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use sticky_demo_target::DemoTargets;
use sticky_envoy::{ShellKind, envoy_binary};
use sticky_testing::artifacts::{build_bouncer_release, build_control_release, workspace_root};
use sticky_testing::bouncer::{BouncerFile, BouncerProcess, HttpsListener};
use sticky_testing::control_client::QueryClient;
use sticky_testing::flask::FlaskTargets;
use sticky_testing::tls::{PKCS_ECDSA_P256_SHA256, TestCa, Validity, agent_trusting};

use crate::topology::Topology;

/// Sticky sessions for Envoy: demo targets, and the launcher running the control service (LBU/ELB
/// API) and Envoy with the sticky filter; all on 127.0.0.1, or as the seed's bouncer and VMs.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Number of targets (instances i-demo1, i-demo2, …).
    #[arg(long, default_value_t = 3)]
    targets: u16,
    /// The targets' app: the seed's Flask app with Flask-Session under gunicorn (`demo/app.py`,
    /// from .venv), or the Rust demo target.
    #[arg(long, value_enum, default_value_t = App::Flask)]
    app: App,
    /// Port of the first Rust demo target; the others follow (Flask targets take free ports).
    #[arg(long, default_value_t = 9001)]
    target_port: u16,
    /// Addresses the load balancers' listeners bind, one per load balancer (Linux routes all of
    /// 127.0.0.0/8 to loopback).
    #[arg(long, default_value = "127.0.100.0/22")]
    lb_address_pool: String,
    /// Listener port P is served on P + this offset (so the demo needs no privilege for port 80).
    #[arg(long, default_value_t = 8000)]
    lb_port_offset: u16,
    /// Port of Envoy's admin endpoint.
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Port of the control service (LBU/ELB API, xDS, state feed).
    #[arg(long, default_value_t = 8000)]
    control_port: u16,
    /// API access key as ID:SECRET (the demo's default is printed at start).
    #[arg(long, default_value = "AKIDSTICKYDEMO:sticky-demo-secret")]
    access_key: String,
    /// Envoy worker threads.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// How long Envoy waits for a target to accept a connection or acknowledge what was sent
    /// to it before trying another target (and marking it unreachable), in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    connect_timeout_ms: u64,
    /// Which shell of the filter Envoy runs: the native dynamic module or the proxy-wasm filter
    /// (the same stickiness, cookies and counters; see the README's "Choosing the shell").
    #[arg(long, value_enum, default_value_t = ShellKind::default())]
    shell: ShellKind,
    /// Where the launcher's configuration, the database and the logs go. The database persists
    /// between runs.
    #[arg(long, default_value_os_t = workspace_root().join(".demo"))]
    dir: PathBuf,
    /// Where the parts run: all on this host's loopback, or the seed's topology (a bouncer and
    /// private VMs as network namespaces; root needed, the Flask app only).
    #[arg(long, value_enum, default_value_t = TopologyKind::Loopback)]
    topology: TopologyKind,
    /// With `--topology vms`: the namespaces' name prefix (`<tag>-bouncer`, `<tag>-vm1`, …).
    #[arg(long, default_value = "sticky-demo")]
    netns_tag: String,
    /// With `--topology vms`: the bouncer's /24 network seen from this host (.1 here, .2 the
    /// bouncer, .17 to .22 the load balancers). From 198.18.0.0/15, which is never routed.
    #[arg(long, default_value = "198.19.200.0")]
    vms_network: Ipv4Addr,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TopologyKind {
    Loopback,
    Vms,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum App {
    Flask,
    Rust,
}

/// The running targets, whichever app.
enum Targets {
    Flask(FlaskTargets),
    Rust(DemoTargets),
}

impl Targets {
    fn addresses(&self) -> Vec<(String, std::net::SocketAddr)> {
        match self {
            Targets::Flask(targets) => targets.addresses(),
            Targets::Rust(targets) => targets.addresses(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (key_id, secret) = args
        .access_key
        .split_once(':')
        .context("--access-key must be ID:SECRET")?;
    if args.topology == TopologyKind::Vms && args.app != App::Flask {
        anyhow::bail!("--topology vms runs the seed's Flask app on its VMs (--app flask)");
    }
    let dir = match args.topology {
        TopologyKind::Loopback => args.dir.clone(),
        TopologyKind::Vms => args.dir.join("vms"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    // The release builds (scripts/demo built them; built here otherwise).
    let control_binary = build_control_release()?;
    let bouncer_binary = build_bouncer_release()?;
    let shell = args.shell.build()?.named_artifact();

    // The VMs and the bouncer: on loopback, or as network namespaces.
    let topology = match args.topology {
        TopologyKind::Loopback => None,
        TopologyKind::Vms => {
            let vms = u8::try_from(args.targets)
                .ok()
                .filter(|n| (1..=9).contains(n))
                .context("--topology vms takes 1 to 9 targets")?;
            eprintln!(
                "==> Making the seed's topology: namespace {}-bouncer and {vms} VMs",
                args.netns_tag
            );
            Some(Topology::create(&args.netns_tag, args.vms_network, vms)?)
        }
    };
    let ids: Vec<String> = (1..=args.targets).map(|n| format!("i-demo{n}")).collect();
    let targets = match &topology {
        Some(topology) => {
            let vms = topology.vms();
            let placed: Vec<(&str, SocketAddr, Option<&str>)> = vms
                .iter()
                .map(|(id, address, netns)| (id.as_str(), *address, Some(netns.as_str())))
                .collect();
            Targets::Flask(FlaskTargets::start_at(&placed).context("starting the Flask app under gunicorn on the VMs")?)
        }
        None => match args.app {
            App::Flask => {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                Targets::Flask(FlaskTargets::start(&ids).context("starting the Flask app under gunicorn")?)
            }
            App::Rust => {
                let specs: Vec<(&str, u16)> = ids
                    .iter()
                    .zip(args.target_port..)
                    .map(|(id, port)| (id.as_str(), port))
                    .collect();
                Targets::Rust(DemoTargets::start(&specs).context("starting the demo targets")?)
            }
        },
    };
    let instances = targets.addresses();
    let instance_ids: Vec<String> = instances.iter().map(|(id, _)| id.clone()).collect();

    // What terraform creates in the original deployment (the instances and the load balancer),
    // declared in the launcher's file as an operator would.
    let (api, address_pool, port_offset) = match &topology {
        Some(topology) => (
            SocketAddr::from((topology.bouncer_address(), args.control_port)),
            topology.address_pool(),
            0,
        ),
        None => (
            SocketAddr::from(([127, 0, 0, 1], args.control_port)),
            args.lb_address_pool.clone(),
            args.lb_port_offset,
        ),
    };
    let tls = demo_certificate(&dir)?;
    // The control plane's CA: the launcher makes it on the first start, the clients trust it.
    let control_ca = (dir.join("ca/ca.pem"), dir.join("ca/ca-key.pem"));
    let file = BouncerFile {
        runtime_dir: dir.join("run"),
        api,
        access_key: (key_id.to_owned(), secret.to_owned()),
        store: dir.join("sticky-control.db").display().to_string(),
        address_pool,
        port_offset,
        control_binary,
        control_args: vec![
            "--target-connect-timeout-ms".to_owned(),
            args.connect_timeout_ms.to_string(),
        ],
        envoy_binary: envoy_binary()?,
        shell: shell.clone(),
        admin_port: args.admin_port,
        concurrency: args.concurrency,
        max_connections: None,
        instances,
        load_balancer: "terraform-balancer".to_owned(),
        health_target: "HTTP:80/health".to_owned(),
        https: Some(HttpsListener {
            port: HTTPS_PORT,
            certificate_name: "terraform-balancer-demo".to_owned(),
            certificate_file: tls.join("cert.pem"),
            private_key_file: tls.join("key.pem"),
            chain_file: tls.join("chain.pem"),
        }),
        control_ca: Some(control_ca.clone()),
    };
    let config = dir.join("bouncer.toml");
    std::fs::write(&config, file.render()).with_context(|| format!("writing {}", config.display()))?;
    let mut command = match &topology {
        Some(topology) => {
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", &topology.bouncer_netns()])
                .arg(&bouncer_binary);
            command
        }
        None => Command::new(&bouncer_binary),
    };
    command.arg("run").arg("--config").arg(&config);
    let log = dir.join("bouncer.log");
    eprintln!(
        "==> Starting sticky-bouncer run --config {} (log {})",
        config.display(),
        log.display()
    );
    let mut bouncer = BouncerProcess::spawn(command, &log).context("starting sticky-bouncer")?;
    let api_url = format!("https://{api}");
    let ca = &control_ca.0;
    let envoy_identity = (
        file.runtime_dir.join("tls/envoy.pem"),
        file.runtime_dir.join("tls/envoy-key.pem"),
    );
    let url = wait_serving(
        &mut bouncer,
        &api_url,
        (key_id, secret),
        (ca, &envoy_identity),
        instance_ids.len(),
        port_offset,
        &log,
    )?;

    let osc_config = dir.join("osc-config.json");
    let profile = serde_json::json!({"default": {
        "access_key": key_id, "secret_key": secret, "endpoint": api_url,
        "https": true, "ssl_verify": ca.display().to_string(), "region_name": "eu-west-2", "method": "POST"
    }});
    std::fs::write(&osc_config, serde_json::to_string_pretty(&profile)?)?;
    let venv = workspace_root().join(".venv/bin");

    println!("Sticky sessions for Envoy: running.");
    for (id, address) in targets.addresses() {
        match &topology {
            Some(topology) => println!(
                "  instance {id:<9} http://{address}   (VM {}: private, reached from the bouncer only)",
                topology.vm_netns(id.trim_start_matches("i-vm").parse().unwrap_or(0))
            ),
            None => println!("  instance {id:<9} http://{address}"),
        }
    }
    println!(
        "  launcher         sticky-bouncer run --config {}   (log {})",
        config.display(),
        log.display()
    );
    if let Some(topology) = &topology {
        println!(
            "  bouncer          namespace {} at {} (this host reaches it, not the VMs)",
            topology.bouncer_netns(),
            topology.bouncer_address()
        );
    }
    println!("  control service  {api_url}   (LBU/ELB Query API, OAPI; TLS)");
    println!(
        "  control CA       {}   (the API's clients verify the control service with it)",
        ca.display()
    );
    println!(
        "  operator page    {api_url}/ui   (sign in with access key {key_id} and its secret {secret}; import {} as an authority in the browser)",
        ca.display()
    );
    println!(
        "  envoy            {url}   (load balancer terraform-balancer, port 80; {} shell)",
        shell.0
    );
    println!(
        "  listener rule    each load balancer gets the next address of {}; its port P is served on P + {}",
        file.address_pool, port_offset
    );
    println!(
        "                   (DNSName -> address, as /etc/hosts lines, for Envoys' certificates only: curl --cacert {} --cert {} --key {} {api_url}/v1/hosts)",
        ca.display(),
        envoy_identity.0.display(),
        envoy_identity.1.display()
    );
    match &topology {
        Some(topology) => println!(
            "  envoy admin      ip netns exec {} curl http://127.0.0.1:{}/stats?filter=sticky",
            topology.bouncer_netns(),
            args.admin_port
        ),
        None => println!(
            "  envoy admin      http://127.0.0.1:{}   (filter counters: /stats?filter=sticky)",
            args.admin_port
        ),
    }
    let https_address = url
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map_or("", |(address, _)| address)
        .to_owned();
    let https_port = u32::from(HTTPS_PORT) + u32::from(port_offset);
    println!(
        "  https            https://{DEMO_HOST}:{https_port}/   (HTTPS listener {HTTPS_PORT}, HTTP/2; certificate by a demo CA: {})",
        tls.join("root.pem").display()
    );
    println!();
    println!("Browser: {url}/  (reload: with no policy each request may land on another instance)");
    println!(
        "HTTPS:   curl --http2 --cacert {} --resolve {DEMO_HOST}:{https_port}:{https_address} https://{DEMO_HOST}:{https_port}/",
        tls.join("root.pem").display()
    );
    println!();
    println!("osc-cli (config written to {}):", osc_config.display());
    let osc = format!("{} lbu", venv.join("osc-cli").display());
    let cfg = format!("--config_path {}", osc_config.display());
    println!(
        "  {osc} CreateLBCookieStickinessPolicy --CookieExpirationPeriod 10 --LoadBalancerName terraform-balancer --PolicyName LBCookie {cfg}"
    );
    println!(
        "  {osc} CreateAppCookieStickinessPolicy --CookieName session --LoadBalancerName terraform-balancer --PolicyName AppCookie {cfg}"
    );
    println!(
        "  {osc} SetLoadBalancerPoliciesOfListener --LoadBalancerName terraform-balancer --LoadBalancerPort 80 --PolicyNames.member.1 AppCookie {cfg}"
    );
    println!();
    println!("aws CLI:");
    println!(
        "  export AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION=eu-west-2 AWS_CA_BUNDLE={}",
        ca.display()
    );
    println!(
        "  {} elb describe-load-balancers --endpoint-url {api_url}",
        venv.join("aws").display()
    );
    println!("  # a second load balancer, served at once on the next address of the pool:");
    let aws = format!("{} elb --endpoint-url {api_url}", venv.join("aws").display());
    println!(
        "  {aws} create-load-balancer --load-balancer-name shop --listeners Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80"
    );
    println!(
        "  {aws} register-instances-with-load-balancer --load-balancer-name shop --instances {}",
        instance_ids.join(" ")
    );
    println!();
    println!(
        "With the app cookie policy, open {url}/login to start a session (/logout ends it); with the Flask app, {url}/ then shows the VM and the session's visit count, which stays only while the session stays on its VM."
    );
    println!("Ctrl-C (or SIGTERM) stops everything.");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // SIGTERM too (a service manager, `timeout`, `kill`): the children stop with the demo.
    runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            stopped = tokio::signal::ctrl_c() => stopped,
            _ = terminate.recv() => Ok::<(), std::io::Error>(()),
        }
    })?;
    eprintln!("==> Stopping: the launcher (Envoy, then the control service), the targets");
    bouncer.stop(Duration::from_secs(30));
    drop(targets);
    drop(topology);
    Ok(())
}

/// The HTTPS listener's port (its load balancer port; served at it plus the port offset).
const HTTPS_PORT: u16 = 443;
/// The host name the demo's certificate names (the load balancer's DNSName).
const DEMO_HOST: &str = "terraform-balancer.lbu.sticky.internal";

/// The demo's certificate for the HTTPS listener, by a CA of its own, in `dir/tls` (kept: the
/// store keeps the certificate it uploaded from them, by name): `root.pem` (trust it),
/// `cert.pem`, `key.pem`, `chain.pem`.
fn demo_certificate(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let tls = dir.join("tls");
    let files = ["root.pem", "cert.pem", "key.pem", "chain.pem"];
    if files.iter().all(|f| tls.join(f).exists()) {
        return Ok(tls);
    }
    std::fs::create_dir_all(&tls)?;
    let ca = TestCa::new("sticky demo").context("making the demo's CA")?;
    let issued = ca
        .issue_with(&[DEMO_HOST], &PKCS_ECDSA_P256_SHA256, Validity::days(365))
        .context("issuing the demo's certificate")?;
    for (file, text) in files
        .iter()
        .zip([&ca.root_pem(), &issued.body, &issued.private_key, &issued.chain])
    {
        std::fs::write(tls.join(file), text).with_context(|| format!("writing {}", tls.join(file).display()))?;
    }
    Ok(tls)
}

/// Waits until the load balancer serves through Envoy (the control service up, its load
/// balancer's address known, a target in service) and the filter follows the control service;
/// its URL. Fails at once if the launcher exits.
fn wait_serving(
    bouncer: &mut BouncerProcess,
    api_url: &str,
    access_key: (&str, &str),
    (ca, envoy_identity): (&std::path::Path, &(std::path::PathBuf, std::path::PathBuf)),
    instances: usize,
    port_offset: u16,
    log: &std::path::Path,
) -> anyhow::Result<String> {
    let plain = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut said = Instant::now();
    eprintln!(
        "==> Waiting for the load balancer to serve: every instance in service (health checks every 5 s), the filter following"
    );
    loop {
        if let Some(status) = bouncer.try_wait() {
            anyhow::bail!("sticky-bouncer exited ({status}); its log: {}", log.display());
        }
        // The launcher makes the CA and issues the certificates as it starts (read again until
        // they are whole). The host map goes to Envoys only: asked with Envoy's certificate.
        let agents = agent_trusting(ca, None)
            .and_then(|api| Ok((api, agent_trusting(ca, Some((&envoy_identity.0, &envoy_identity.1)))?)));
        let Ok((api_agent, agent)) = agents else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let api =
            QueryClient::new(api_url.trim_start_matches("https://"), access_key.0, access_key.1).over_tls(api_agent);
        let url = agent
            .get(&format!("{api_url}/v1/hosts"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .and_then(|hosts| {
                hosts.lines().find_map(|line| {
                    line.strip_suffix(" terraform-balancer.lbu.sticky.internal")
                        .map(|address| format!("http://{address}:{}", 80 + u32::from(port_offset)))
                })
            });
        // Serving, and the filter following the control service (its long-poll open): from
        // then on an API answer is in force on it.
        let following = || {
            agent
                .get(&format!("{api_url}/metrics"))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .is_some_and(|metrics| {
                    metrics.lines().any(|line| {
                        line.strip_prefix("sticky_control_open_polls ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
                })
        };
        // Every instance in service (a VM's app may start after the first health check).
        let in_service = || {
            let health = api.call("DescribeInstanceHealth", &[("LoadBalancerName", "terraform-balancer")]);
            health.is_ok_and(|reply| {
                let states = reply.fields("State");
                states.len() == instances && states.iter().all(|state| state == "InService")
            })
        };
        if let Some(url) = url
            && plain.get(&format!("{url}/")).call().is_ok()
            && following()
            && in_service()
        {
            return Ok(url);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the load balancer does not serve after 90 s; the launcher's log: {}",
                log.display()
            );
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eprintln!("    still waiting (the launcher's log: {})", log.display());
            said = Instant::now();
        }
        // Nothing to wait on but the answer itself: asked again shortly.
        std::thread::sleep(Duration::from_millis(200));
    }
}
