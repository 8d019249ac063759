//! Figures of the control service on this machine: signed API calls per second under a mixed
//! read/write load, and the time from an API call's answer to a waiting long-poll's answer.
//! The service runs in this process on 127.0.0.1 with a real SQLite file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use sticky_control::sigv4::AccessKeys;
use sticky_control::store::Store;
use sticky_control::{BootstrapFile, HttpOptions, Service, ServiceConfig, app};
use sticky_core::CookieSettings;
use sticky_testing::control_client::QueryClient;
use sticky_testing::control_process::FEED_TOKEN;

/// Benchmarks the control service: mixed signed API load, and long-poll propagation.
#[derive(Parser)]
struct Args {
    /// Seconds of API load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Long-poll trials.
    #[arg(long, default_value_t = 100)]
    trials: usize,
}

const KEY: &str = "AKIDBENCH";
const SECRET: &str = "bench-secret";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile_dir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bootstrap: BootstrapFile = serde_json::from_value(serde_json::json!({
        "instances": {"i-1": {"ip": "127.0.0.1", "ports": {"80": 1}}, "i-2": {"ip": "127.0.0.1", "ports": {"80": 2}}},
        "load_balancers": [{"name": "bench", "listeners": [{"load_balancer_port": 80, "instance_port": 80}], "instances": ["i-1", "i-2"]}]
    }))?;
    let config = ServiceConfig {
        access_keys: AccessKeys::new([(KEY.to_owned(), SECRET.to_owned())]),
        long_poll_timeout: Duration::from_secs(25),
        key_rotation: Duration::from_secs(86_400),
        key_retention: Duration::from_secs(86_400),
        cookie: CookieSettings::default(),
        // No filter follows this service: answer at once (the API's own throughput).
        sync_timeout: Duration::ZERO,
        listener_binding: Default::default(),
        target_connect_timeout: sticky_control::xds::resources::DEFAULT_TARGET_CONNECT_TIMEOUT,
        replica: Default::default(),
        master_key: sticky_control::sealing::MasterKey::generate()?,
    };
    let service = Service::open(
        config,
        Store::open(&sticky_control::store::StoreLocation::Sqlite(dir.join("bench.db")))?,
        Some(bootstrap),
    )?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let authority = listener.local_addr()?.to_string();
    // Kept to see when the measured long-poll is open at the service.
    let observed = Arc::clone(&service);
    runtime.spawn(async move {
        let _ = axum::serve(listener, app(service, HttpOptions::with_token(FEED_TOKEN))).await;
    });

    // 1. Mixed load: per round, three reads and a write pair (create + delete a policy).
    let calls = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.clients)
        .map(|worker| {
            let client = QueryClient::new(authority.clone(), KEY, SECRET).with_feed_token(Some(FEED_TOKEN.to_owned()));
            let (calls, writes, failures) = (Arc::clone(&calls), Arc::clone(&writes), Arc::clone(&failures));
            std::thread::spawn(move || {
                let lb = ("LoadBalancerName", "bench");
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let policy = format!("p-{worker}-{n}");
                    let results = [
                        client.call("DescribeLoadBalancers", &[]),
                        client.call(
                            "CreateLBCookieStickinessPolicy",
                            &[lb, ("PolicyName", &policy), ("CookieExpirationPeriod", "60")],
                        ),
                        client.call("DescribeLoadBalancerPolicies", &[lb]),
                        client.call("DeleteLoadBalancerPolicy", &[lb, ("PolicyName", &policy)]),
                        client.call("DescribeInstanceHealth", &[lb]),
                    ];
                    for result in results {
                        calls.fetch_add(1, Ordering::Relaxed);
                        if !matches!(result, Ok(ref reply) if reply.status == 200) {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    writes.fetch_add(2, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = calls.load(Ordering::Relaxed);
    println!(
        "Mixed signed API load: {} clients, {:.1} s, 3 reads + 2 writes per round (SQLite, synchronous=FULL)",
        args.clients, elapsed
    );
    println!(
        "  {total} calls, {:.0} calls/s ({:.0} writes/s), {} failed",
        total as f64 / elapsed,
        writes.load(Ordering::Relaxed) as f64 / elapsed,
        failures.load(Ordering::Relaxed)
    );

    // 2. Long-poll propagation: API answer → waiting caller's answer.
    let client = QueryClient::new(authority.clone(), KEY, SECRET).with_feed_token(Some(FEED_TOKEN.to_owned()));
    client
        .call(
            "CreateLBCookieStickinessPolicy",
            &[("LoadBalancerName", "bench"), ("PolicyName", "P")],
        )?
        .ok();
    let mut lags = Vec::with_capacity(args.trials);
    for trial in 0..args.trials {
        let (_, state) = client.state("bench", 80, None, 0)?;
        let version = state["version"].as_u64().unwrap_or(0);
        let waiter_client = client.clone();
        let waiter = std::thread::spawn(move || {
            let result = waiter_client.state_as("bench", 80, Some(version), 20_000, Some("benchwaiter"));
            (Instant::now(), result.map(|(_, s)| s["version"].as_u64().unwrap_or(0)))
        });
        // The change is made once the waiter's long-poll is open at the service (the event),
        // not after a guessed delay.
        let open_by = Instant::now() + Duration::from_secs(5);
        while observed.followers.census().open_polls == 0 {
            if Instant::now() > open_by {
                anyhow::bail!("trial {trial}: the waiter's long-poll never opened");
            }
            std::thread::yield_now();
        }
        let names: &[(&str, &str)] = if trial % 2 == 0 {
            &[("PolicyNames.member.1", "P")]
        } else {
            &[("PolicyNames", "")]
        };
        let mut params = vec![("LoadBalancerName", "bench"), ("LoadBalancerPort", "80")];
        params.extend_from_slice(names);
        client.call("SetLoadBalancerPoliciesOfListener", &params)?.ok();
        let acknowledged = Instant::now();
        let (received, new_version) = waiter.join().map_err(|_| anyhow::anyhow!("waiter panicked"))?;
        if new_version? <= version {
            anyhow::bail!("trial {trial}: the long-poll answered without the change");
        }
        lags.push(received.saturating_duration_since(acknowledged));
    }
    lags.sort();
    println!(
        "Long-poll: API answer -> waiting caller answered, {} trials: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lags.len(),
        percentile(&lags, 0.5).as_secs_f64() * 1e3,
        percentile(&lags, 0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sticky-bench-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
