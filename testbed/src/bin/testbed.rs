//! `testbed serve`: the filter's `.wasm` as a local proxy, without Envoy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sticky_core::PluginConfig;
use sticky_testbed::Testbed;
use sticky_testbed::serve::{TestbedProxy, handle};

#[derive(Parser)]
#[command(
    version,
    about = "A wasmtime host of the proxy-wasm ABI that runs the sticky filter without Envoy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the filter as a local HTTP proxy in front of the targets.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// The filter's .wasm (default: build it).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Follow this control service: the filter long-polls its state, the endpoints come from its EDS.
        #[arg(long, requires = "load_balancer")]
        control: Option<SocketAddr>,
        /// With --control: the load balancer whose listener this proxy serves.
        #[arg(long)]
        load_balancer: Option<String>,
        /// With --control: the listener's load balancer port.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// With --control on plain HTTP: the token the control service requires of its peers.
        #[arg(long, env = "STICKY_FEED_TOKEN")]
        feed_token: Option<String>,
        /// Without --control: a plugin configuration file (JSON) carrying the state; its targets are the endpoints.
        #[arg(long, conflicts_with = "control")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let Command::Serve {
        listen,
        wasm,
        control,
        load_balancer,
        port,
        feed_token,
        config,
    } = Cli::parse().command;
    let wasm = match wasm {
        Some(path) => path,
        None => sticky_testing::artifacts::build_filter()?,
    };
    let testbed = Testbed::load(&wasm)?;
    let (plugin_config, clusters, endpoints) = match (control, config) {
        (Some(control), _) => {
            let mut config = PluginConfig::new(None);
            config.control = Some(sticky_core::ControlSource {
                cluster: "control".into(),
                authority: "sticky-control".into(),
                load_balancer: load_balancer.clone().unwrap_or_default(),
                listener_port: port,
                poll_timeout_ms: sticky_core::plugin::DEFAULT_POLL_TIMEOUT_MS,
                token: feed_token.clone(),
            });
            (config, HashMap::from([("control".to_owned(), control)]), Vec::new())
        }
        (None, Some(path)) => {
            let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let config = PluginConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let endpoints = config
                .state
                .iter()
                .flat_map(|s| s.targets.iter())
                .filter_map(|t| Some((t.address.parse().ok()?, t.healthy)))
                .collect();
            (config, HashMap::new(), endpoints)
        }
        (None, None) => anyhow::bail!("give --control ADDRESS --load-balancer NAME, or --config FILE"),
    };
    let cluster_names: Vec<&str> = clusters.keys().map(String::as_str).collect();
    let plugin = testbed.plugin(&plugin_config.to_json(), &cluster_names)?;
    let tick = plugin.tick_period();
    let endpoints = Arc::new(RwLock::new(endpoints));
    let proxy = TestbedProxy::new(
        plugin,
        plugin_config.routing_header.clone(),
        Arc::clone(&endpoints),
        clusters,
    )?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Some(tick) = tick {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(tick);
                loop {
                    interval.tick().await;
                    if let Err(e) = proxy
                        .plugin
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .tick()
                    {
                        eprintln!("testbed: the filter trapped on a tick: {e}");
                    }
                    proxy.drive_calls();
                }
            });
        }
        if let (Some(control), Some(lb)) = (control, load_balancer) {
            tokio::spawn(follow_eds(
                control,
                feed_token.clone(),
                format!("{lb}_{port}"),
                endpoints,
            ));
        }
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!("testbed serving on http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(handle).with_state(proxy);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// Polls the control service's REST EDS every 200 ms for the cluster's endpoints and health.
async fn follow_eds(
    control: SocketAddr,
    token: Option<String>,
    cluster: String,
    endpoints: sticky_testbed::serve::Endpoints,
) {
    let client = reqwest::Client::new();
    let request = serde_json::json!({"node": {"id": "testbed", "cluster": "testbed"}, "resource_names": [cluster],
        "type_url": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"});
    loop {
        let mut call = client.post(format!("http://{control}/v3/discovery:endpoints"));
        if let Some(token) = &token {
            call = call.bearer_auth(token);
        }
        if let Ok(response) = call.json(&request).send().await
            && let Ok(body) = response.json::<serde_json::Value>().await
        {
            let found: Vec<(SocketAddr, bool)> = body["resources"][0]["endpoints"][0]["lb_endpoints"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|e| {
                            let address = &e["endpoint"]["address"]["socket_address"];
                            let ip: std::net::IpAddr = address["address"].as_str()?.parse().ok()?;
                            let port = u16::try_from(address["port_value"].as_u64()?).ok()?;
                            Some((SocketAddr::new(ip, port), e["health_status"] == "HEALTHY"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            *endpoints.write().unwrap_or_else(std::sync::PoisonError::into_inner) = found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
