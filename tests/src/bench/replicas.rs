//! The control service on PostgreSQL: what replicas cost and how far one scales.
//!
//! - **API calls per second** with the embedded store, one replica on PostgreSQL and three
//!   replicas sharing it: writes (a policy set and removed, each committed and answered once
//!   every replica holds it) and reads (DescribeLoadBalancers), from client threads spread over
//!   the replicas.
//! - **Propagation across replicas**: the policy and registration lags of
//!   [`super::propagation`], with three replicas, the API called through Envoy's front of them
//!   (any replica answers) while Envoy follows one.
//! - **Followers per replica**: 100, 1,000 and 10,000 simulated followers (state long-polls,
//!   what each filter runs) on one replica; per change, the time until each follower holds it
//!   (p50/p99/max), the time until the API answered, and the replica's CPU and memory.
//!
//! The control service runs as its release build; PostgreSQL is Debian's, on loopback, in a
//! cluster of its own.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use sticky_control::BootstrapFile;
use sticky_testing::control_client::QueryClient;
use sticky_testing::control_process::ControlProcess;
use sticky_testing::postgres::PostgresServer;

use super::propagation::{Lags, ms, percentile};
use crate::live::{ACCESS_KEY, Live};
use crate::{LOAD_BALANCER, TARGET_IDS};

/// What each part measures, in seconds or sizes.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub rate_seconds: u64,
    pub client_threads: usize,
    pub trials: usize,
    pub followers: Vec<usize>,
    /// The load balancers the followers spread over (1: all follow one listener).
    pub spreads: Vec<usize>,
    pub changes: usize,
    /// Only the follower scale (no API rates, no propagation).
    pub scale_only: bool,
}

#[derive(Debug, Clone)]
pub struct ApiRate {
    pub setup: String,
    pub writes_per_second: f64,
    pub write_p50: Duration,
    pub write_p99: Duration,
    pub reads_per_second: f64,
}

#[derive(Debug, Clone)]
pub struct FollowerScale {
    pub followers: usize,
    /// The load balancers they follow (one listener each), evenly; changes go to the first.
    pub load_balancers: usize,
    /// Long-polls answered per change (the changed load balancer's followers only, ideally).
    pub answers_per_change: f64,
    pub changes: usize,
    /// API call sent -> each follower holding the change, over every follower and change.
    pub held: Vec<Duration>,
    /// API call sent -> answered.
    pub answered: Vec<Duration>,
    /// Followers that did not get a change within 10 s.
    pub missed: usize,
    /// The replica's CPU while the changes propagated, in cores (1.0: one core busy).
    pub cpu_cores: f64,
    /// The replica's CPU time per change (commit, answering every follower, the API's wait).
    pub cpu_per_change: Duration,
    /// The replica's resident memory with every follower connected, MiB.
    pub rss_mib: f64,
}

#[derive(Debug, Clone)]
pub struct ReplicaBench {
    pub rates: Vec<ApiRate>,
    pub propagation: Vec<Lags>,
    pub scale: Vec<FollowerScale>,
}

/// Runs every part.
pub fn measure(sizes: &Sizes) -> anyhow::Result<ReplicaBench> {
    if sizes.scale_only {
        let mut scale = Vec::new();
        for followers in &sizes.followers {
            for spread in &sizes.spreads {
                eprintln!("  {followers} followers of {spread} load balancers on one replica…");
                scale.push(follower_scale(*followers, *spread, sizes.changes)?);
            }
        }
        return Ok(ReplicaBench {
            rates: Vec::new(),
            propagation: Vec::new(),
            scale,
        });
    }
    let mut rates = Vec::new();
    for (setup, replicas, postgres) in [
        ("SQLite, 1 process", 1, false),
        ("PostgreSQL, 1 replica", 1, true),
        ("PostgreSQL, 3 replicas", 3, true),
    ] {
        eprintln!("  API calls per second: {setup}…");
        rates.push(api_rate(setup, replicas, postgres, sizes)?);
    }
    eprintln!("  propagation across 3 replicas…");
    let propagation = {
        let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
        let live = Live::start_replicated(sticky_demo_target::DemoTargets::start(&specs)?, 1, 3, &[]);
        live.create_lb_cookie_policy("LBCookie", 300);
        vec![
            super::propagation::policy_lags(&live, sizes.trials, "policy change, 3 replicas, xDS")?,
            super::propagation::registration_lags(&live, sizes.trials, "registration, 3 replicas, xDS")?,
        ]
    };
    let mut scale = Vec::new();
    for followers in &sizes.followers {
        for spread in &sizes.spreads {
            eprintln!("  {followers} followers of {spread} load balancers on one replica…");
            scale.push(follower_scale(*followers, *spread, sizes.changes)?);
        }
    }
    Ok(ReplicaBench {
        rates,
        propagation,
        scale,
    })
}

/// A fresh PostgreSQL with database `sticky`; its URL.
fn postgres() -> anyhow::Result<(PostgresServer, String)> {
    let server = PostgresServer::start()?;
    let url = server.create_database("sticky")?;
    Ok((server, url))
}

/// `count` control services (release build) with load balancer [`LOAD_BALANCER`] (listener 80,
/// its targets unreachable: nothing is served), on `store` (`None`: SQLite each).
fn start_replicas(
    dir: &std::path::Path,
    count: usize,
    store: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<Vec<ControlProcess>> {
    let binary = sticky_testing::artifacts::build_control_release()?;
    let unreachable: Vec<(String, std::net::SocketAddr)> = TARGET_IDS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                (*id).to_owned(),
                std::net::SocketAddr::from(([127, 0, 0, 1], 9 + i as u16)),
            )
        })
        .collect();
    let bootstrap = BootstrapFile::one_listener(LOAD_BALANCER, &unreachable);
    let mut args = Vec::new();
    if !extra.contains(&"--lb-address-pool") {
        let (pool, offset) = crate::xds::free_pool();
        args = crate::xds::listener_rule_args(pool, offset);
    }
    if let Some(url) = store {
        args.extend(["--store".to_owned(), url.to_owned()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let replicas = (0..count)
        .map(|n| {
            ControlProcess::start(
                &binary,
                &dir.join(format!("replica-{n}")),
                sticky_testing::free_port()?,
                &bootstrap,
                ACCESS_KEY,
                &args,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Past the start's discovery window, when changes also wait for followers to reconnect.
    for replica in &replicas {
        let discovering = || -> anyhow::Result<bool> {
            let text = ureq::get(&format!("{}/metrics", replica.url())).call()?.into_string()?;
            Ok(text.lines().any(|l| l == "sticky_control_discovering_followers 1"))
        };
        sticky_testing::eventually(
            sticky_control::service::FOLLOWER_DISCOVERY * 4,
            "the replica's discovery window closes",
            || discovering().is_ok_and(|d| !d),
        );
    }
    Ok(replicas)
}

fn api_rate(setup: &str, count: usize, on_postgres: bool, sizes: &Sizes) -> anyhow::Result<ApiRate> {
    let dir = tempfile::tempdir()?;
    let store = if on_postgres { Some(postgres()?) } else { None };
    let replicas = start_replicas(dir.path(), count, store.as_ref().map(|(_, url)| url.as_str()), &[])?;
    let clients: Vec<QueryClient> = replicas.iter().map(|r| r.client(ACCESS_KEY)).collect();
    clients[0]
        .call(
            "CreateLBCookieStickinessPolicy",
            &[
                ("LoadBalancerName", LOAD_BALANCER),
                ("PolicyName", "LBCookie"),
                ("CookieExpirationPeriod", "300"),
            ],
        )?
        .ok();
    let run = |write: bool| -> anyhow::Result<(usize, Vec<Duration>, Duration)> {
        let deadline = Instant::now() + Duration::from_secs(sizes.rate_seconds);
        let started = Instant::now();
        let outcomes: Vec<anyhow::Result<Vec<Duration>>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..sizes.client_threads)
                .map(|t| {
                    let client = &clients[t % clients.len()];
                    scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                        let mut latencies = Vec::new();
                        let mut on = t.is_multiple_of(2);
                        while Instant::now() < deadline {
                            let sent = Instant::now();
                            let reply = if write {
                                on = !on;
                                let mut params = vec![("LoadBalancerName", LOAD_BALANCER), ("LoadBalancerPort", "80")];
                                params.push(if on {
                                    ("PolicyNames.member.1", "LBCookie")
                                } else {
                                    ("PolicyNames", "")
                                });
                                client.call("SetLoadBalancerPoliciesOfListener", &params)?
                            } else {
                                client.call("DescribeLoadBalancers", &[])?
                            };
                            if let Some(code) = reply.error_code() {
                                bail!("the API refused a call: {code}");
                            }
                            latencies.push(sent.elapsed());
                        }
                        Ok(latencies)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
                })
                .collect()
        });
        let mut latencies = Vec::new();
        for outcome in outcomes {
            latencies.extend(outcome?);
        }
        latencies.sort();
        Ok((latencies.len(), latencies, started.elapsed()))
    };
    let (writes, write_latencies, write_time) = run(true)?;
    let (reads, _, read_time) = run(false)?;
    Ok(ApiRate {
        setup: setup.to_owned(),
        writes_per_second: writes as f64 / write_time.as_secs_f64(),
        write_p50: percentile(&write_latencies, 0.5),
        write_p99: percentile(&write_latencies, 0.99),
        reads_per_second: reads as f64 / read_time.as_secs_f64(),
    })
}

/// CPU seconds process `pid` ran so far (every thread's, to the nanosecond, from
/// `/proc/<pid>/task/*/schedstat`), and its resident memory in MiB.
fn process_usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        nanos += schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok((nanos as f64 / 1e9, rss_kib / 1024.0))
}

/// When each follower first held each version; the condition is notified at each arrival.
type Arrivals = Arc<(Mutex<HashMap<u64, Vec<Instant>>>, Condvar)>;

fn follower_scale(followers: usize, spread: usize, changes: usize) -> anyhow::Result<FollowerScale> {
    let dir = tempfile::tempdir()?;
    let (_server, url) = postgres()?;
    // Room for 1,022 load balancers; no Envoy binds them here.
    let replicas = start_replicas(
        dir.path(),
        1,
        Some(&url),
        &["--long-poll-timeout", "20", "--lb-address-pool", "127.77.0.0/22"],
    )?;
    let replica = &replicas[0];
    let pid = replica.pid().context("the replica runs")?;
    let api = replica.client(ACCESS_KEY);
    api.call(
        "CreateLBCookieStickinessPolicy",
        &[
            ("LoadBalancerName", LOAD_BALANCER),
            ("PolicyName", "LBCookie"),
            ("CookieExpirationPeriod", "300"),
        ],
    )?
    .ok();
    let mut names = vec![LOAD_BALANCER.to_owned()];
    for i in 1..spread {
        let name = format!("spread-{i}");
        api.call(
            "CreateLoadBalancer",
            &[
                ("LoadBalancerName", &name),
                ("Listeners.member.1.Protocol", "HTTP"),
                ("Listeners.member.1.LoadBalancerPort", "80"),
                ("Listeners.member.1.InstancePort", "80"),
            ],
        )?
        .ok();
        names.push(name);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &replica.feed_token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    // As Envoy polls: over HTTP/2, many long-polls on one connection (one per 100 followers,
    // under the server's streams per connection).
    let clients = (0..followers.div_ceil(100))
        .map(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .http2_prior_knowledge()
                .timeout(Duration::from_secs(30))
                .default_headers(headers.clone())
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let arrivals: Arrivals = Arc::default();
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answers = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for n in 0..followers {
        let client = clients[n / 100].clone();
        let (arrivals, connected, answers) = (Arc::clone(&arrivals), Arc::clone(&connected), Arc::clone(&answers));
        let feed = format!("{}/v1/state/{}/80", replica.url(), names[n % spread]);
        runtime.spawn(async move {
            let mut version = 0u64;
            loop {
                let url = format!("{feed}?version={version}&poller=bench{n}&timeout_ms=20000");
                let held = match client.get(&url).send().await {
                    Ok(answer) => {
                        let held = answer
                            .headers()
                            .get("x-sticky-version")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        let _ = answer.bytes().await;
                        held
                    }
                    Err(_) => None,
                };
                answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match held {
                    Some(held) if held != version => {
                        if version == 0 {
                            connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        version = held;
                        let (times, arrived) = &*arrivals;
                        times
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(held)
                            .or_default()
                            .push(Instant::now());
                        arrived.notify_all();
                    }
                    Some(_) => {}
                    // A filter's retry backoff (its shortest) after a failed poll.
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    }
    // The followers of the load balancer the changes go to.
    let reached = followers.div_ceil(spread);
    let holding = |version: u64| {
        arrivals
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version)
            .map_or(0, Vec::len)
    };
    // Until every follower of the changed load balancer holds `version`, at most `limit`.
    let wait_all = |version: u64, limit: Duration| -> bool {
        let (times, arrived) = &*arrivals;
        let held = times.lock().unwrap_or_else(PoisonError::into_inner);
        let (held, timeout) = arrived
            .wait_timeout_while(held, limit, |held| held.get(&version).map_or(0, Vec::len) < reached)
            .unwrap_or_else(PoisonError::into_inner);
        drop(held);
        !timeout.timed_out()
    };
    // Every follower connected and holding the current state.
    let current = || -> anyhow::Result<u64> {
        let text = ureq::get(&format!("{}/metrics", replica.url())).call()?.into_string()?;
        text.lines()
            .find_map(|l| l.strip_prefix("sticky_control_state_version ")?.parse().ok())
            .context("no state version")
    };
    let mut version = current()?;
    let connecting = Instant::now();
    while connected.load(std::sync::atomic::Ordering::Relaxed) < followers {
        if connecting.elapsed() > Duration::from_secs(60) {
            bail!(
                "only {} of {followers} followers connected",
                connected.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, rss_mib) = process_usage(pid)?;
    let (cpu_before, _) = process_usage(pid)?;
    let answers_before = answers.load(std::sync::atomic::Ordering::Relaxed);
    let window = Instant::now();
    let mut held = Vec::new();
    let mut answered = Vec::new();
    let mut missed = 0;
    for change in 0..changes {
        let mut params = vec![("LoadBalancerName", LOAD_BALANCER), ("LoadBalancerPort", "80")];
        params.push(if change.is_multiple_of(2) {
            ("PolicyNames.member.1", "LBCookie")
        } else {
            ("PolicyNames", "")
        });
        let sent = Instant::now();
        api.call("SetLoadBalancerPoliciesOfListener", &params)?.ok();
        answered.push(sent.elapsed());
        let next = current()?;
        if next <= version {
            bail!("the change made no new version");
        }
        version = next;
        if !wait_all(version, Duration::from_secs(10)) {
            missed += reached - holding(version);
        }
        let times = arrivals
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version)
            .cloned()
            .unwrap_or_default();
        held.extend(times.iter().map(|t| t.saturating_duration_since(sent)));
    }
    let busy = window.elapsed();
    let (cpu_after, _) = process_usage(pid)?;
    let answered_polls = answers.load(std::sync::atomic::Ordering::Relaxed) - answers_before;
    runtime.shutdown_background();
    held.sort();
    answered.sort();
    Ok(FollowerScale {
        followers,
        load_balancers: spread,
        answers_per_change: answered_polls as f64 / changes.max(1) as f64,
        changes,
        held,
        answered,
        missed,
        cpu_cores: (cpu_after - cpu_before) / busy.as_secs_f64(),
        cpu_per_change: Duration::from_secs_f64((cpu_after - cpu_before).max(0.0) / changes.max(1) as f64),
        rss_mib,
    })
}

impl ReplicaBench {
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "### API calls per second\n\n\
             | store | writes/s | write answered p50 / p99 ms | reads/s |\n|---|---:|---:|---:|\n",
        );
        for r in &self.rates {
            out.push_str(&format!(
                "| {} | {:.0} | {:.1} / {:.1} | {:.0} |\n",
                r.setup,
                r.writes_per_second,
                ms(r.write_p50),
                ms(r.write_p99),
                r.reads_per_second
            ));
        }
        out.push_str(
            "\n### Propagation across replicas (API through Envoy's front of 3 replicas, Envoy following one)\n\n",
        );
        out.push_str(&Lags::table(&self.propagation));
        out.push_str(
            "\n### Followers per replica (simulated state long-polls, one replica on PostgreSQL)\n\n\
             Followers poll over HTTP/2 (100 per connection), as Envoy's filters do; they follow \
             the load balancers evenly, and every change goes to the first: only its followers \
             get it.\n\n\
             | followers | load balancers | changes | API call → follower holds it: p50 / p99 / max ms | API call → answered: p50 / p99 ms | polls answered per change | missed | replica CPU per change ms (cores while propagating) | replica memory (MiB) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &self.scale {
            out.push_str(&format!(
                "| {} | {} | {} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {:.0} | {} | {:.2} ({:.2}) | {:.0} |\n",
                s.followers,
                s.load_balancers,
                s.changes,
                ms(percentile(&s.held, 0.5)),
                ms(percentile(&s.held, 0.99)),
                ms(s.held.last().copied().unwrap_or_default()),
                ms(percentile(&s.answered, 0.5)),
                ms(percentile(&s.answered, 0.99)),
                s.answers_per_change,
                s.missed,
                ms(s.cpu_per_change),
                s.cpu_cores,
                s.rss_mib
            ));
        }
        out
    }
}
