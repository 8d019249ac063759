//! Runs the whole product on embedded defaults, until Ctrl-C: three demo targets on loopback,
//! the control service (SQLite) declaring load balancer `terraform-balancer` with listener 80,
//! and Envoy with the sticky filter following it, its listener 80 mapped to a loopback port.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sticky_control::BootstrapFile;
use sticky_control::process::ControlProcess;
use sticky_demo_target::DemoTargets;
use sticky_envoy::{EnvoyBootstrap, EnvoyProcess, ShellKind};
use sticky_testing::artifacts::{build_control, workspace_root};

/// Sticky sessions for Envoy, all on 127.0.0.1: demo targets, the control service (LBU/ELB API)
/// and Envoy with the sticky filter.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Number of demo targets (instances i-demo1, i-demo2, …).
    #[arg(long, default_value_t = 3)]
    targets: u16,
    /// Port of the first demo target; the others follow.
    #[arg(long, default_value_t = 9001)]
    target_port: u16,
    /// Port Envoy's listener binds on 127.0.0.1 (the load balancer's port 80).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port of Envoy's admin endpoint.
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Port of the control service (LBU/ELB API, EDS, state feed).
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
    let targets = DemoTargets::start(&specs).context("starting the demo targets")?;

    // What terraform creates in the original deployment: the instances and the load balancer.
    let bootstrap = BootstrapFile::one_listener("terraform-balancer", &targets.addresses());
    let control_binary = build_control()?;
    let control = ControlProcess::start(
        &control_binary,
        &args.dir.join("control"),
        args.control_port,
        &bootstrap,
        (key_id, secret),
        &[],
    )
    .context("starting the control service")?;
    let mut envoy_bootstrap = EnvoyBootstrap::following(
        args.shell.build()?,
        control.address(),
        "terraform-balancer",
        80,
        "bouncer",
    )?;
    envoy_bootstrap.listen_port = args.port;
    envoy_bootstrap.admin_port = args.admin_port;
    envoy_bootstrap.connect_timeout = std::time::Duration::from_millis(args.connect_timeout_ms);
    let envoy = EnvoyProcess::start(&envoy_bootstrap, &args.dir.join("envoy"), args.concurrency)?;

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
        "  envoy            {}   (load balancer terraform-balancer, port 80; {} shell)",
        envoy.url(),
        match args.shell {
            ShellKind::Native => "native",
            ShellKind::Wasm => "wasm",
        }
    );
    println!(
        "  envoy admin      http://127.0.0.1:{}   (filter counters: /stats?filter=sticky)",
        envoy.admin_port
    );
    println!();
    println!(
        "Browser: {}/  (reload: with no policy each request may land on another instance)",
        envoy.url()
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
    println!("  export AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret} AWS_DEFAULT_REGION=eu-west-2");
    println!(
        "  {} elb describe-load-balancers --endpoint-url {}",
        venv.join("aws").display(),
        control.url()
    );
    println!();
    println!(
        "With the app cookie policy, open {}/login to start a session (/logout ends it).",
        envoy.url()
    );
    println!("Ctrl-C stops everything.");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    drop(envoy);
    drop(control);
    drop(targets);
    Ok(())
}
