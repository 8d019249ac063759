//! `sticky-control`: runs the control service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sticky_control::model::ListenerBinding;
use sticky_control::sigv4::AccessKeys;
use sticky_control::store::Store;
use sticky_control::{BootstrapFile, HttpOptions, Service, ServiceConfig, app};
use sticky_core::CookieSettings;

/// Control service for sticky sessions on Envoy: speaks the Outscale LBU / AWS classic ELB
/// Query API (2012-06-01, SigV4), keeps its state in SQLite, health-checks the targets, and
/// serves Envoy its listeners, routes, clusters and endpoints over gRPC xDS (ADS; REST EDS for
/// hand-written bootstraps) and the filters' state feed.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (API, state feed, xDS over HTTP/2, EDS, /metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// SQLite database file; created if missing.
    #[arg(long, default_value = "sticky-control.db")]
    db: PathBuf,
    /// Declarative bootstrap file (JSON): the instance registry, and load balancers to create when missing.
    #[arg(long)]
    bootstrap: Option<PathBuf>,
    /// An API access key as ACCESS_KEY_ID:SECRET; repeat for several. Also read from
    /// STICKY_ACCESS_KEYS (comma-separated). At least one is required.
    #[arg(long = "access-key", value_name = "ID:SECRET")]
    access_keys: Vec<String>,
    /// Seconds a state long-poll waits for a change before answering.
    #[arg(long, default_value_t = 25)]
    long_poll_timeout: u64,
    /// Milliseconds an API call that changed the state may wait, before answering, for every
    /// live filter and Envoy to hold the change (so an answer means "in force"); 0 answers at
    /// once. In the first 5.5 s after a start, changes also wait for filters to reconnect.
    #[arg(long, default_value_t = 10_000)]
    sync_timeout_ms: u64,
    /// Seconds between rotations of the cookie key.
    #[arg(long, default_value_t = 86_400)]
    key_rotation: u64,
    /// Seconds a retired cookie key keeps opening cookies (at least the longest LB cookie duration).
    #[arg(long, default_value_t = 7 * 86_400)]
    key_retention: u64,
    /// Name of the stickiness cookie the filters issue.
    #[arg(long, default_value = "AWSELB")]
    cookie_name: String,
    /// Mark stickiness cookies Secure (when clients reach the listener over HTTPS).
    #[arg(long)]
    cookie_secure: bool,
    /// Addresses of the bouncer the load balancers' listeners bind, one per load balancer (the
    /// lowest free one, given at creation and kept): `<name>.lbu.sticky.internal` (its DNSName)
    /// resolves to it through `GET /v1/hosts`. On one machine, any 127.0.0.0/8 range works
    /// without configuring an interface.
    #[arg(long, default_value = "127.0.100.0/24")]
    lb_address_pool: ipnet::IpNet,
    /// Listener port P binds P + this offset (an unprivileged bouncer serving port 80 on 8080).
    #[arg(long, default_value_t = 0)]
    lb_port_offset: u16,
    /// How long Envoy waits for a target to accept a connection, or to acknowledge what was
    /// sent to it, before trying another target and marking it unreachable (milliseconds).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    target_connect_timeout_ms: u64,
    /// Bearer token the state feed and EDS require (they carry cookie keys and backend addresses).
    #[arg(long, env = "STICKY_FEED_TOKEN")]
    feed_token: Option<String>,
}

fn access_keys(args: &Args) -> anyhow::Result<AccessKeys> {
    let from_env = std::env::var("STICKY_ACCESS_KEYS").unwrap_or_default();
    let mut pairs = Vec::new();
    for entry in args
        .access_keys
        .iter()
        .map(String::as_str)
        .chain(from_env.split(',').filter(|s| !s.is_empty()))
    {
        let (id, secret) = entry
            .split_once(':')
            .with_context(|| "an access key must be ID:SECRET".to_owned())?;
        if id.is_empty() || secret.is_empty() {
            anyhow::bail!("an access key must be ID:SECRET with neither empty");
        }
        pairs.push((id.to_owned(), secret.to_owned()));
    }
    if pairs.is_empty() {
        anyhow::bail!("no API access key: pass --access-key ID:SECRET (or set STICKY_ACCESS_KEYS)");
    }
    Ok(AccessKeys::new(pairs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let cookie = CookieSettings {
        name: args.cookie_name.clone(),
        secure: args.cookie_secure,
        ..CookieSettings::default()
    };
    if !sticky_core::cookies::is_cookie_name(&cookie.name) {
        anyhow::bail!("--cookie-name {:?} is not an RFC 6265 token", cookie.name);
    }
    let config = ServiceConfig {
        access_keys: access_keys(&args)?,
        long_poll_timeout: Duration::from_secs(args.long_poll_timeout),
        key_rotation: Duration::from_secs(args.key_rotation.max(1)),
        key_retention: Duration::from_secs(args.key_retention),
        cookie,
        sync_timeout: Duration::from_millis(args.sync_timeout_ms),
        listener_binding: ListenerBinding {
            pool: args.lb_address_pool,
            port_offset: args.lb_port_offset,
        },
        target_connect_timeout: Duration::from_millis(args.target_connect_timeout_ms),
    };
    let bootstrap: Option<BootstrapFile> = match &args.bootstrap {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?)
        }
        None => None,
    };
    let store = Store::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?;
    let service = Service::open(config, store, bootstrap)?;
    tokio::spawn(sticky_control::health::run(Arc::clone(&service)));
    tokio::spawn(maintain_keys(Arc::clone(&service)));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, db = %args.db.display(), "sticky-control listening");
    let router = app(
        Arc::clone(&service),
        HttpOptions {
            feed_token: args.feed_token.clone(),
        },
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let signal = stop_signal().await;
            tracing::info!(
                signal,
                "stopping: answering the waiting long-polls, finishing the calls in flight"
            );
            service.stop();
        })
        .await?;
    Ok(())
}

/// Ctrl-C or SIGTERM (what systemd, a container runtime or `kill` send), whichever comes first.
async fn stop_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminate => "SIGTERM",
    }
}

async fn maintain_keys(service: Arc<Service>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        // A rotation commits to the store: off the async workers.
        let service = Arc::clone(&service);
        let outcome =
            tokio::task::spawn_blocking(move || service.maintain_keys(sticky_control::service::unix_now())).await;
        match outcome {
            Ok(Ok(true)) => tracing::info!("cookie key ring rotated or pruned"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cookie key maintenance failed"),
            Err(e) => tracing::error!(error = %e, "cookie key maintenance stopped"),
        }
    }
}
