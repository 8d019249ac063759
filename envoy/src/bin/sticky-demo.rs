//! Runs the whole product on embedded defaults, until Ctrl-C: three targets on loopback (the
//! seed's Flask app with server-side sessions under gunicorn, or the Rust demo target),
//! the control service (SQLite) declaring load balancer `terraform-balancer` with listener 80,
//! and Envoy taking every load balancer's listeners from it over xDS: each load balancer on its
//! own loopback address (127.0.100.1, .2, … in creation order), port P served on P + 8000.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sticky_control::BootstrapFile;
use sticky_control::process::ControlProcess;
use sticky_demo_target::DemoTargets;
use sticky_envoy::{EnvoyProcess, ShellKind, XdsBootstrap};
use sticky_testing::artifacts::{build_control_release, workspace_root};
use sticky_testing::flask::FlaskTargets;

/// Sticky sessions for Envoy, all on 127.0.0.1: demo targets, the control service (LBU/ELB API)
/// and Envoy with the sticky filter.
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
    #[arg(long, default_value = "127.0.100.0/24")]
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
    /// Where the bootstrap files, the database and the logs go. The database persists between runs.
    #[arg(long, default_value_os_t = workspace_root().join(".demo"))]
    dir: PathBuf,
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
    let ids: Vec<String> = (1..=args.targets).map(|n| format!("i-demo{n}")).collect();
    let specs: Vec<(&str, u16)> = ids
        .iter()
        .zip(args.target_port..)
        .map(|(id, port)| (id.as_str(), port))
        .collect();
    let targets = match args.app {
        App::Flask => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            Targets::Flask(FlaskTargets::start(&ids).context("starting the Flask app under gunicorn")?)
        }
        App::Rust => Targets::Rust(DemoTargets::start(&specs).context("starting the demo targets")?),
    };

    // What terraform creates in the original deployment: the instances and the load balancer.
    let bootstrap = BootstrapFile::one_listener("terraform-balancer", &targets.addresses());
    // The release build (scripts/demo built it; built here otherwise).
    let control_binary = build_control_release()?;
    let offset = args.lb_port_offset.to_string();
    let connect_timeout = args.connect_timeout_ms.to_string();
    let control = ControlProcess::start(
        &control_binary,
        &args.dir.join("control"),
        args.control_port,
        &bootstrap,
        (key_id, secret),
        &[
            "--lb-address-pool",
            &args.lb_address_pool,
            "--lb-port-offset",
            &offset,
            "--target-connect-timeout-ms",
            &connect_timeout,
        ],
    )
    .context("starting the control service")?;
    let mut envoy_bootstrap = XdsBootstrap::new(args.shell.build()?, control.address(), "bouncer")?;
    envoy_bootstrap.admin_port = args.admin_port;
    let envoy = EnvoyProcess::start_xds(&envoy_bootstrap, &args.dir.join("envoy"), args.concurrency)?;
    // Where each load balancer is: its DNSName and address, as the control service maps them.
    let hosts = ureq::get(&format!("{}/v1/hosts", control.url()))
        .call()
        .context("reading the load balancers' addresses")?
        .into_string()?;
    let address_of = |name: &str| {
        hosts
            .lines()
            .find_map(|line| line.strip_suffix(&format!(" {name}.lbu.sticky.internal")))
            .map(str::to_owned)
    };
    let balancer = address_of("terraform-balancer").context("terraform-balancer has no address")?;
    let url = format!("http://{balancer}:{}", 80 + u32::from(args.lb_port_offset));

    let osc_config = args.dir.join("osc-config.json");
    let profile = serde_json::json!({"default": {
        "access_key": key_id, "secret_key": secret, "endpoint": control.url(),
        "https": false, "region_name": "eu-west-2", "method": "POST"
    }});
    std::fs::write(&osc_config, serde_json::to_string_pretty(&profile)?)?;
    let venv = workspace_root().join(".venv/bin");

    println!("Sticky sessions for Envoy: running.");
    for (id, address) in targets.addresses() {
        println!("  instance {id:<9} http://{address}");
    }
    println!(
        "  control service  {}   (LBU/ELB Query API; log {})",
        control.url(),
        control.dir.join("control.log").display()
    );
    println!(
        "  envoy            {url}   (load balancer terraform-balancer, port 80; {} shell)",
        match args.shell {
            ShellKind::Native => "native",
            ShellKind::Wasm => "wasm",
        }
    );
    println!(
        "  listener rule    each load balancer gets the next address of {}; its port P is served on P + {}",
        args.lb_address_pool, args.lb_port_offset
    );
    println!(
        "                   (DNSName -> address, as /etc/hosts lines: curl {}/v1/hosts)",
        control.url()
    );
    println!(
        "  envoy admin      http://127.0.0.1:{}   (filter counters: /stats?filter=sticky)",
        envoy.admin_port
    );
    println!();
    println!("Browser: {url}/  (reload: with no policy each request may land on another instance)");
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
    println!("  export AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION=eu-west-2");
    println!(
        "  {} elb describe-load-balancers --endpoint-url {}",
        venv.join("aws").display(),
        control.url()
    );
    println!("  # a second load balancer, served at once on the next address of the pool:");
    let aws = format!("{} elb --endpoint-url {}", venv.join("aws").display(), control.url());
    println!(
        "  {aws} create-load-balancer --load-balancer-name shop --listeners Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80"
    );
    println!(
        "  {aws} register-instances-with-load-balancer --load-balancer-name shop --instances {}",
        ids.join(" ")
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
            _ = terminate.recv() => Ok(()),
        }
    })?;
    drop(envoy);
    drop(control);
    drop(targets);
    Ok(())
}
