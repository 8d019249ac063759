//! Runs the product on embedded defaults: demo targets on loopback, Envoy with the sticky
//! filter in front of them, until Ctrl-C.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use sticky_core::{CookieSettings, FilterState, PolicyState, TargetState};
use sticky_envoy::{Bootstrap, EnvoyProcess, build_filter, random_key_ring, workspace_root};
use sticky_testbed::DemoTargets;

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// Duration-based stickiness (CreateLBCookieStickinessPolicy).
    Lb,
    /// Application-based stickiness (CreateAppCookieStickinessPolicy).
    App,
    /// No stickiness: every request is balanced on its own.
    None,
}

/// Envoy + the sticky filter + demo targets on 127.0.0.1, on embedded defaults.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Stickiness policy of the listener.
    #[arg(long, value_enum, default_value = "lb")]
    policy: Policy,
    /// LB cookie: CookieExpirationPeriod in seconds (0: browser-session cookie).
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// App cookie: name of the application's cookie.
    #[arg(long, default_value = "session")]
    app_cookie: String,
    /// Number of demo targets.
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
    /// Envoy worker threads.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Where the rendered bootstrap and Envoy's log go.
    #[arg(long, default_value_os_t = workspace_root().join(".demo"))]
    dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ids: Vec<String> = (1..=args.targets).map(|n| format!("i-demo{n}")).collect();
    let specs: Vec<(&str, u16)> = ids
        .iter()
        .zip(args.target_port..)
        .map(|(id, port)| (id.as_str(), port))
        .collect();
    let targets = DemoTargets::start(&specs)?;
    let policy = match args.policy {
        Policy::Lb => Some(PolicyState::LbCookie {
            expiration_period: args.duration,
        }),
        Policy::App => Some(PolicyState::AppCookie {
            app_cookie_name: args.app_cookie.clone(),
            duration_seconds: None,
        }),
        Policy::None => None,
    };
    let state = FilterState {
        version: 1,
        load_balancer: "terraform-balancer".to_owned(),
        listener_port: 80,
        policy,
        cookie: CookieSettings::default(),
        targets: targets
            .addresses()
            .into_iter()
            .map(|(id, address)| TargetState {
                id,
                address: address.to_string(),
                healthy: true,
            })
            .collect(),
        keys: random_key_ring(1)?,
    };
    let wasm = build_filter()?;
    let mut bootstrap = Bootstrap::sticky(wasm, state)?;
    bootstrap.listen_port = args.port;
    bootstrap.admin_port = args.admin_port;
    let envoy = EnvoyProcess::start(&bootstrap, &args.dir, args.concurrency)?;

    println!("Sticky sessions for Envoy: running.");
    for (id, address) in targets.addresses() {
        println!("  target {id:<9} http://{address}");
    }
    println!(
        "  envoy admin     http://127.0.0.1:{}   (filter counters: /stats?filter=sticky)",
        envoy.admin_port
    );
    println!("  bootstrap       {}", args.dir.join("envoy.yaml").display());
    println!();
    println!(
        "Point a browser at {}/ and reload: the answering target stays the same.",
        envoy.url()
    );
    match args.policy {
        Policy::Lb => println!("Policy: LB cookie, {} s (cookie AWSELB).", args.duration),
        Policy::App => println!(
            "Policy: app cookie `{}`: open {}/login to start a session.",
            args.app_cookie,
            envoy.url()
        ),
        Policy::None => println!("Policy: none (requests are balanced one by one)."),
    }
    println!("Or: curl -si {}/ | grep -i -e set-cookie -e target", envoy.url());
    println!("Ctrl-C stops everything.");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    drop(envoy);
    drop(targets);
    Ok(())
}
