//! `sticky-bouncer`: runs the product on a bouncer host from one configuration file. It checks
//! the file, writes the control service's bootstrap (the instances and load balancers to
//! declare) and Envoy's xDS bootstrap, starts the control service and Envoy, restarts either
//! when it crashes (with a backoff), and on SIGTERM or SIGINT stops Envoy, then the control
//! service. It logs to stdout without colours, one line per event, as journald and log shippers
//! take it; the children's logs go the same way.

mod config;
mod pki;
mod supervise;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use sticky_envoy_bootstrap::{ControlClientTls, EdgeLimits, FilterShell, XdsBootstrap};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use config::{BouncerConfig, Checked};
use supervise::{ChildSpec, keep_running};

#[derive(Parser)]
#[command(
    version,
    about = "Sticky sessions for Envoy on a bouncer host: the control service and Envoy, from one configuration file"
)]
struct Args {
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Start and supervise the control service and Envoy until SIGTERM or SIGINT.
    Run {
        #[arg(long, default_value = "/etc/sticky-bouncer/bouncer.toml")]
        config: PathBuf,
    },
    /// Check the configuration file and exit (0: valid).
    Check {
        #[arg(long, default_value = "/etc/sticky-bouncer/bouncer.toml")]
        config: PathBuf,
    },
    /// Make the control plane's CA in DIR (`ca.pem`, `ca-key.pem`), for `[api.tls]`, ahead of a
    /// first start (which makes it otherwise); once.
    InitCa {
        #[arg(long, default_value = "/etc/sticky-bouncer/ca")]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Args::parse().command {
        Action::Check { config } => {
            let checked = BouncerConfig::load(&config)?;
            println!(
                "{}: valid ({} load balancers, {} instances, {} shell)",
                config.display(),
                checked.bootstrap.load_balancers.len(),
                checked.bootstrap.instances.len(),
                match checked.shell {
                    FilterShell::Native(_) => "native",
                    FilterShell::Wasm(_) => "wasm",
                }
            );
            Ok(())
        }
        Action::InitCa { dir } => {
            let (certificate, key) = pki::init_ca(&dir)?;
            println!(
                "CA made: {} (give it to the API's clients to verify the control service), {} (keep it secret)",
                certificate.display(),
                key.display()
            );
            Ok(())
        }
        Action::Run { config } => {
            let checked = BouncerConfig::load(&config)?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?
                .block_on(run(checked))
        }
    }
}

/// Writes what the children read, then supervises them until a stop signal.
async fn run(checked: Checked) -> anyhow::Result<()> {
    let config = &checked.config;
    let dir = &config.runtime_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("runtime_dir {}", dir.display()))?;
    // A SQLite store's directory (systemd's StateDirectory makes it; started otherwise, the
    // control service would fail to open the file and be restarted forever).
    if let Ok(sticky_control_schema::StoreLocation::Sqlite(file)) = config.store.location.parse()
        && let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).with_context(|| format!("store.location: creating {}", parent.display()))?;
    }
    let peers = control_plane_credentials(&checked, dir)?;
    let control = control_spec(&checked, dir, &peers)?;
    let envoy = envoy_spec(&checked, dir, &peers)?;
    tracing::info!(
        api = %config.api.listen,
        store = %redacted(&config.store.location),
        envoy_admin = format!("127.0.0.1:{}", config.envoy.admin_port),
        load_balancers = checked.bootstrap.load_balancers.len(),
        "sticky-bouncer starting"
    );
    let (stop_control, control_stopping) = watch::channel(false);
    let (stop_envoy, envoy_stopping) = watch::channel(false);
    let control_task = tokio::spawn(keep_running(control, control_stopping));
    let envoy_task = tokio::spawn(keep_running(envoy, envoy_stopping));

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let received = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = received, "stopping: Envoy first, then the control service");
    // Envoy first: it keeps serving from its last state while the control service stops.
    let _ = stop_envoy.send(true);
    let _ = envoy_task.await;
    let _ = stop_control.send(true);
    let _ = control_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// A PostgreSQL URL's password is not logged.
fn redacted(location: &str) -> String {
    location
        .parse::<sticky_control_schema::StoreLocation>()
        .map_or_else(|_| location.to_owned(), |l| l.to_string())
}

/// How Envoy authenticates to the control service, made on every start.
enum ControlPlaneCredentials {
    /// Certificates issued from `[api.tls]`'s CA.
    Tls {
        ca: PathBuf,
        control: pki::Issued,
        envoy: pki::Issued,
    },
    /// `api.plain_http`: a random token.
    Token(String),
}

fn control_plane_credentials(checked: &Checked, dir: &Path) -> anyhow::Result<ControlPlaneCredentials> {
    let api = &checked.config.api;
    match &api.tls {
        Some(tls) => {
            let ca = pki::Ca::read_or_make(&tls.ca_certificate, &tls.ca_private_key)?;
            let certificates = dir.join("tls");
            let control = ca.issue_control(api.listen.ip(), &tls.server_names, &certificates)?;
            let envoy = ca.issue_envoy(&checked.config.envoy.node_id, &certificates)?;
            tracing::info!(dir = %certificates.display(), "issued the control service's and Envoy's certificates");
            Ok(ControlPlaneCredentials::Tls {
                ca: tls.ca_certificate.clone(),
                control,
                envoy,
            })
        }
        None => {
            let mut token = [0u8; 24];
            getrandom::fill(&mut token).map_err(|e| anyhow::anyhow!("cannot draw a token: {e}"))?;
            Ok(ControlPlaneCredentials::Token(
                token.iter().map(|b| format!("{b:02x}")).collect(),
            ))
        }
    }
}

fn control_spec(checked: &Checked, dir: &Path, peers: &ControlPlaneCredentials) -> anyhow::Result<ChildSpec> {
    let config = &checked.config;
    let bootstrap = dir.join("control-bootstrap.json");
    std::fs::write(&bootstrap, checked.bootstrap.to_json())
        .with_context(|| format!("writing {}", bootstrap.display()))?;
    let mut args = vec![
        "--listen".to_owned(),
        config.api.listen.to_string(),
        "--store".to_owned(),
        config.store.location.clone(),
        "--bootstrap".to_owned(),
        bootstrap.display().to_string(),
        "--lb-address-pool".to_owned(),
        config.listeners.address_pool.clone(),
        "--lb-port-offset".to_owned(),
        config.listeners.port_offset.to_string(),
    ];
    // In the environment, not the arguments: `ps` shows arguments to every user.
    let mut env = Vec::new();
    match peers {
        ControlPlaneCredentials::Tls { ca, control, .. } => {
            for (flag, path) in [
                ("--tls-certificate", &control.certificate),
                ("--tls-private-key", &control.private_key),
                ("--tls-client-ca", ca),
            ] {
                args.extend([flag.to_owned(), path.display().to_string()]);
            }
        }
        ControlPlaneCredentials::Token(token) => {
            args.push("--plain-http".to_owned());
            env.push(("STICKY_FEED_TOKEN".to_owned(), token.clone()));
        }
    }
    args.extend(config.control.extra_args.iter().cloned());
    let keys = checked
        .access_keys
        .iter()
        .map(|(id, secret)| format!("{id}:{secret}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(ChildSpec {
        name: "control",
        program: config.control.binary.clone(),
        args,
        env: env
            .into_iter()
            .chain([("STICKY_ACCESS_KEYS".to_owned(), keys)])
            .collect(),
        pid_file: dir.join("control.pid"),
    })
}

fn envoy_spec(checked: &Checked, dir: &Path, peers: &ControlPlaneCredentials) -> anyhow::Result<ChildSpec> {
    let config = &checked.config;
    let mut bootstrap = XdsBootstrap::new(
        checked.shell.clone(),
        config.api.listen,
        &config.envoy.node_id,
        config.envoy.admin_port,
    );
    match peers {
        ControlPlaneCredentials::Tls { ca, envoy, .. } => {
            bootstrap.tls = Some(ControlClientTls {
                ca: ca.clone(),
                certificate: envoy.certificate.clone(),
                private_key: envoy.private_key.clone(),
            });
        }
        ControlPlaneCredentials::Token(token) => bootstrap.token = Some(token.clone()),
    }
    bootstrap.limits = EdgeLimits {
        max_connections: config.envoy.max_connections,
        max_heap_bytes: config.envoy.max_heap_mb << 20,
    };
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, bootstrap.render()).with_context(|| format!("writing {}", file.display()))?;
    let mut env = Vec::new();
    if let FilterShell::Native(module) = &checked.shell
        && let Some(parent) = module.parent()
    {
        env.push((
            "ENVOY_DYNAMIC_MODULES_SEARCH_PATH".to_owned(),
            parent.display().to_string(),
        ));
    }
    Ok(ChildSpec {
        name: "envoy",
        program: config.envoy.binary.clone(),
        args: vec![
            "-c".to_owned(),
            file.display().to_string(),
            "--concurrency".to_owned(),
            config.envoy.concurrency.to_string(),
            // The launcher restarts Envoy itself; no hot-restart shared memory to leave behind.
            "--disable-hot-restart".to_owned(),
            "--log-level".to_owned(),
            config.envoy.log_level.clone(),
        ],
        env,
        pid_file: dir.join("envoy.pid"),
    })
}
