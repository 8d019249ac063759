//! `sticky-control`: runs the control service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sticky_control::control_tls::{self, ControlTls, TlsFiles};
use sticky_control::model::ListenerBinding;
use sticky_control::replica::ReplicaConfig;
use sticky_control::replicas;
use sticky_control::sealing::MasterKey;
use sticky_control::sigv4::AccessKeys;
use sticky_control::store::{Store, StoreLocation};
use sticky_control::{BootstrapFile, HttpOptions, Service, ServiceConfig, app};
use sticky_core::CookieSettings;

/// Control service for sticky sessions on Envoy: speaks the Outscale LBU / AWS classic ELB
/// Query API (2012-06-01, SigV4), keeps its state in SQLite (one process) or PostgreSQL
/// (several replicas, any of them answering), health-checks the targets, and
/// serves Envoy its listeners, routes, clusters and endpoints over gRPC xDS (ADS; REST EDS for
/// hand-written bootstraps) and the filters' state feed.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (API, state feed, xDS over HTTP/2, EDS, /metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// The control port's certificate chain (PEM, leaf first; for replicas, issued for client
    /// authentication too). With --tls-private-key and --tls-client-ca, every surface is served
    /// over TLS, and the files are read again when they change.
    #[arg(long, env = "STICKY_TLS_CERTIFICATE", requires_all = ["tls_private_key", "tls_client_ca"])]
    tls_certificate: Option<PathBuf>,
    /// The private key (PEM) of --tls-certificate.
    #[arg(long, env = "STICKY_TLS_PRIVATE_KEY", requires = "tls_certificate")]
    tls_private_key: Option<PathBuf>,
    /// The CA (PEM) whose certificates Envoys and replicas present: only they get the state
    /// feed (cookie keys), xDS, EDS, /v1/in-force and /v1/hosts.
    #[arg(long, env = "STICKY_TLS_CLIENT_CA", requires = "tls_certificate")]
    tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS: allowed on a loopback --listen only, and with a
    /// --feed-token that Envoys and replicas present.
    #[arg(long, conflicts_with = "tls_certificate")]
    plain_http: bool,
    /// Where the state lives: a SQLite file (created if missing; `sqlite:PATH` or a path), or
    /// a PostgreSQL URL (`postgres://user:password@host/db`) shared by several replicas.
    #[arg(
        long,
        visible_alias = "db",
        default_value = "sticky-control.db",
        env = "STICKY_STORE"
    )]
    store: StoreLocation,
    /// File of the master key (64 hexadecimal digits) the store's secrets (the cookie keys,
    /// server certificates' private keys) are sealed under; or the key itself in
    /// STICKY_MASTER_KEY. Default on SQLite: `<store file>.master-key`, created (mode 0600) on
    /// first start; on PostgreSQL every replica must be given the same one.
    #[arg(long, env = "STICKY_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// A master key the store's secrets were sealed under before the current one (a rotation):
    /// it opens them, and they are sealed again under the current one at start. Repeatable.
    #[arg(long = "previous-master-key-file", value_name = "FILE")]
    previous_master_key_files: Vec<PathBuf>,
    /// This replica's name among those sharing a PostgreSQL store (default: the listen address
    /// and a random suffix, unique per start).
    #[arg(long)]
    replica_id: Option<String>,
    /// Where the other replicas reach this one (default: https://<listen address>, or http://
    /// with --plain-http).
    #[arg(long)]
    advertise_url: Option<String>,
    /// Milliseconds a leader lease (health checks, key rotation) lasts unless renewed; another
    /// replica takes over within about this long after the leader dies.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(300..=60_000))]
    lease_ms: u64,
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
    #[arg(long, default_value = "127.0.100.0/22")]
    lb_address_pool: ipnet::IpNet,
    /// Listener port P binds P + this offset (an unprivileged bouncer serving port 80 on 8080).
    #[arg(long, default_value_t = 0)]
    lb_port_offset: u16,
    /// How long Envoy waits for a target to accept a connection, or to acknowledge what was
    /// sent to it, before trying another target and marking it unreachable (milliseconds).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    target_connect_timeout_ms: u64,
    /// With --plain-http: the bearer token the state feed, xDS, EDS, /v1/in-force and /v1/hosts
    /// require (over TLS, peers present client certificates instead).
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
        // Colours only on a terminal: under a launcher, journald or a file, plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
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
        replica: replica_config(&args)?,
        master_key: master_key(&args)?,
    };
    let bootstrap: Option<BootstrapFile> = match &args.bootstrap {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?)
        }
        None => None,
    };
    let transport = transport(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // The PostgreSQL client blocks: opened off the async workers.
    let location = args.store.clone();
    let service = tokio::task::spawn_blocking(move || {
        let store = Store::open(&location).with_context(|| format!("opening the store {location}"))?;
        Service::open(config, store, bootstrap)
    })
    .await??;
    replicas::start(&service, &args.store);
    tokio::spawn(sticky_control::prober::run(Arc::clone(&service)));
    tokio::spawn(maintain_keys(Arc::clone(&service)));
    tokio::spawn(end_drains(Arc::clone(&service)));
    tracing::info!(address = %listener.local_addr()?, store = %args.store, replica = %service.replica.config.id, url = %service.replica.config.url, "sticky-control listening");
    let stopping = Arc::clone(&service);
    let stop = async move {
        let signal = stop_signal().await;
        tracing::info!(
            signal,
            "stopping: answering the waiting long-polls, finishing the calls in flight"
        );
        service.stop();
    };
    match transport {
        Transport::Tls(tls) => {
            let router = app(
                Arc::clone(&stopping),
                HttpOptions::with_client_certificates(tls.peer_client()?),
            );
            tokio::spawn(Arc::clone(&tls).watch());
            control_tls::serve(listener, router, tls, stop).await;
        }
        Transport::Plain { token } => {
            let router = app(Arc::clone(&stopping), HttpOptions::with_token(token));
            axum::serve(listener, router).with_graceful_shutdown(stop).await?;
        }
    }
    let location = args.store.clone();
    let _ = tokio::task::spawn_blocking(move || replicas::leave(&stopping, &location)).await;
    Ok(())
}

/// How the control port is served.
enum Transport {
    Tls(Arc<ControlTls>),
    Plain { token: String },
}

/// TLS from the files given; plain HTTP only when asked for, on loopback, behind a token.
fn transport(args: &Args) -> anyhow::Result<Transport> {
    if let (Some(certificate), Some(private_key), Some(client_ca)) =
        (&args.tls_certificate, &args.tls_private_key, &args.tls_client_ca)
    {
        if args.feed_token.is_some() {
            anyhow::bail!(
                "--feed-token goes with --plain-http only: over TLS, Envoys and replicas present client certificates"
            );
        }
        let tls = ControlTls::load(TlsFiles {
            certificate: certificate.clone(),
            private_key: private_key.clone(),
            client_ca: client_ca.clone(),
        })?;
        return Ok(Transport::Tls(Arc::new(tls)));
    }
    if !args.plain_http {
        anyhow::bail!(
            "no TLS for the control port: give --tls-certificate, --tls-private-key and --tls-client-ca \
             (or, on loopback only, --plain-http with --feed-token)"
        );
    }
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--plain-http serves on a loopback --listen only ({} is not): elsewhere the control port needs TLS",
            args.listen
        );
    }
    match &args.feed_token {
        Some(token) if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Transport::Plain { token: token.clone() })
        }
        Some(_) => anyhow::bail!("--feed-token must be visible ASCII characters, not empty"),
        None => anyhow::bail!(
            "--plain-http needs --feed-token: the state feed carries the cookie keys, and is served to peers presenting it only"
        ),
    }
}

/// The master key: the file given (or STICKY_MASTER_KEY), else one beside a SQLite store's file
/// (made on first start); with the previous ones a rotation keeps opening.
fn master_key(args: &Args) -> anyhow::Result<MasterKey> {
    let from_env = std::env::var("STICKY_MASTER_KEY").ok().filter(|k| !k.is_empty());
    let current = match (&args.master_key_file, from_env) {
        (Some(_), Some(_)) => {
            anyhow::bail!("give the master key once: --master-key-file or STICKY_MASTER_KEY, not both")
        }
        (Some(path), None) => MasterKey::read(path)?,
        (None, Some(hex)) => MasterKey::from_hex("STICKY_MASTER_KEY", &hex)?,
        (None, None) => match &args.store {
            StoreLocation::Sqlite(path) if path.as_os_str() == ":memory:" => MasterKey::generate()?,
            StoreLocation::Sqlite(path) => {
                let mut file = path.clone().into_os_string();
                file.push(".master-key");
                MasterKey::read_or_create(std::path::Path::new(&file))?
            }
            StoreLocation::Postgres(_) => anyhow::bail!(
                "a PostgreSQL store needs --master-key-file (or STICKY_MASTER_KEY), the same on every replica: \
                 the cookie keys and certificates' private keys are sealed under it"
            ),
        },
    };
    args.previous_master_key_files
        .iter()
        .try_fold(current, |key, path| Ok(key.with_previous(&MasterKey::read(path)?)))
}

fn replica_config(args: &Args) -> anyhow::Result<ReplicaConfig> {
    let id = match &args.replica_id {
        Some(id) if sticky_control::followers::is_poller_id(&id.replace(['-', '.', ':', '_'], "")) => id.clone(),
        Some(id) => anyhow::bail!("--replica-id {id:?}: use 1 to 64 letters, digits, '-', '.', ':' or '_'"),
        None => {
            let mut suffix = [0u8; 4];
            getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("cannot draw a replica id: {e}"))?;
            format!("{}-{}", args.listen, hex::encode(suffix))
        }
    };
    let url = args.advertise_url.clone().unwrap_or_else(|| {
        let scheme = if args.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", args.listen)
    });
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("--advertise-url {url:?} must be an http:// or https:// URL");
    }
    Ok(ReplicaConfig {
        id,
        url,
        lease: Duration::from_millis(args.lease_ms),
    })
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

/// Rotates and prunes the cookie key ring on the leading replica.
async fn maintain_keys(service: Arc<Service>) {
    // Often enough that a rotation is at most a quarter period late.
    let period = (service.config.key_rotation / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if !service.replica.is_leader() {
            continue;
        }
        // A rotation commits to the store: off the async workers.
        let service = Arc::clone(&service);
        let outcome =
            tokio::task::spawn_blocking(move || service.maintain_keys(sticky_control::domain::unix_now())).await;
        match outcome {
            Ok(Ok(true)) => tracing::info!("cookie key ring rotated or pruned"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cookie key maintenance failed"),
            Err(e) => tracing::error!(error = %e, "cookie key maintenance stopped"),
        }
    }
}

/// Ends connection (and session) drains at their Timeout, on the leading replica.
async fn end_drains(service: Arc<Service>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if !service.replica.is_leader() {
            continue;
        }
        let now = sticky_control::domain::unix_now();
        if !service.drains_due(now) {
            continue;
        }
        let service = Arc::clone(&service);
        match tokio::task::spawn_blocking(move || service.end_drains(now)).await {
            Ok(Ok(ended)) => tracing::info!(ended, "drains ended at their timeout"),
            Ok(Err(e)) => tracing::error!(error = %e, "ending drains failed"),
            Err(e) => tracing::error!(error = %e, "ending drains stopped"),
        }
    }
}
