//! The product against its peers, side by side in one run (issue 6):
//!
//! 1. Envoy, no filter; 2. Envoy + a do-nothing wasm filter (the floor of any wasm filter);
//!    (2n) Envoy + a do-nothing dynamic module (the floor of any native module); (2r) the same
//!    with Envoy doing the filter's share of the routing (override_host, the upstream header);
//! 3. Envoy + the sticky filter: no policy, LB cookie first visit, LB cookie sticky hit, app
//!    cookie hit; 4. Envoy's native `stateful_session` (cookie); 5. HAProxy `cookie … insert
//!    indirect nocache`; 8. over HTTPS (TLS 1.2+, HTTP/1.1 through wrk) on kept-alive
//!    connections: the do-nothing module, the sticky hit with each shell, `stateful_session`,
//!    HAProxy with TLS; 9. the same with a new connection per request (handshake-bound).
//!
//! Every system runs at once on loopback in front of the same demo targets; rounds alternate
//! between them; wrk (one thread, fixed connections and duration) generates the load. The
//! proxies are bound to their own CPU, wrk and the targets to the other, so the proxy is what
//! saturates. Then: the sticky hit with 10, 1,000 and 100,000 targets (and Envoy's memory), and
//! propagation through the live system. Writes `docs/benchmarks/results.md` and a PNG chart (and,
//! with `--readme PAGE`, that page's results section). `--smoke` runs every step briefly (the
//! tests run it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use sticky_core::{CompiledListener, FilterState, PolicyState, TargetState};
use sticky_demo_target::DemoTargets;
use sticky_envoy::{EnvoyBootstrap, EnvoyProcess, FilterShell, HttpFilters, ListenerTls, ShellKind};
use sticky_testing::artifacts::{build_noop_filter, build_noop_module};
use sticky_testing::fixtures::{app_cookie_policy, filter_state, lb_cookie_policy, named_targets};
use sticky_testing::random_key_ring;
use sticky_tests::bench::haproxy::{HAPROXY_COOKIE, HaproxyProcess};
use sticky_tests::bench::load::{Load, Measurement, bind_this_process, median, resident_mib};
use sticky_tests::bench::report::{Row, ScalePoint, chart, scale_table, throughput_table, update_readme};
use sticky_tests::bench::{propagation, replicas};
use sticky_tests::{STICKY_COOKIE, agent, get};

const NATIVE_COOKIE: &str = "envoy-session";
const APP_COOKIE: &str = "session";

#[derive(Parser)]
#[command(about = "Benchmarks the sticky filter against Envoy without it, Envoy's native stateful session and HAProxy")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds per system (alternating between systems); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Target counts of the scale measurement.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 1_000, 100_000])]
    scale: Vec<usize>,
    /// Trials of each propagation measurement (policy flips, registrations, listener creations).
    #[arg(long, default_value_t = 50)]
    trials: usize,
    /// Where the results go (Markdown, PNG).
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// A page whose `<!-- bench:start -->` section also gets the results; `none` (the default:
    /// the results are docs/benchmarks' alone).
    #[arg(long, default_value = "none")]
    readme: String,
    /// Also measure the sticky filter's rows (3a'–3d') with this other build of the filter
    /// (e.g. the one before an optimisation), in the same run.
    #[arg(long)]
    baseline_wasm: Option<PathBuf>,
    /// Measure only these rows of the throughput table (e.g. `3c,3d`); rows 1, 2 and 4, which
    /// the ratios need, are always measured. For working on one path; leaves the pages alone.
    /// With `--replicas`, `followers` measures only the followers per replica (printed).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Every step, briefly: 1 s measurements, 1 round, 10 and 1,000 targets, 4 policy flips,
    /// no wait for the health check; writes nothing outside `--out`.
    #[arg(long)]
    smoke: bool,
    /// Only the propagation measurement (policy, registration, listener creation; xDS and REST
    /// EDS), printed; leaves `--out` alone.
    #[arg(long)]
    propagation_only: bool,
    /// Only the control service on PostgreSQL: API calls per second with 1 and 3 replicas,
    /// propagation across replicas, and followers per replica (`--followers`). Writes
    /// `<out>/replicas.md` (not with `--smoke`, which prints it).
    #[arg(long)]
    replicas: bool,
    /// Simulated followers of the `--replicas` scale measurement.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 30_000])]
    followers: Vec<usize>,
    /// The load balancers the simulated followers spread over (1: all follow one listener).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 1_000])]
    spreads: Vec<usize>,
}

/// Where each process runs: the proxies on one CPU, wrk and the targets on the other.
struct Cpus {
    proxy: Option<String>,
    load: Option<String>,
}

impl Cpus {
    fn split() -> Self {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        if count < 2 {
            return Self {
                proxy: None,
                load: None,
            };
        }
        let last = count - 1;
        let load = if last == 1 {
            "0".to_owned()
        } else {
            format!("0-{}", last - 1)
        };
        Self {
            proxy: Some(last.to_string()),
            load: Some(load),
        }
    }
}

/// One system under load: a URL, the headers every request carries, the proxy process.
struct System {
    key: &'static str,
    name: String,
    url: String,
    headers: Vec<(&'static str, String)>,
    pid: u32,
    /// The CA an HTTPS system's certificate chains to (its checks verify it).
    ca: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.duration = 1;
        args.rounds = 1;
        args.scale = vec![10, 1_000];
        args.trials = 4;
    }
    if args.propagation_only {
        println!("{}", propagation::measure(args.trials, false)?.markdown());
        return Ok(());
    }
    if args.replicas {
        return replicas_only(&args);
    }
    if args.smoke || !args.only.is_empty() {
        args.readme = "none".to_owned();
    }
    let root = sticky_testing::artifacts::workspace_root();
    let out = out_dir(&args)?;
    // Read before this process is bound to its CPUs (which narrows what it can see).
    let machine = machine_description();
    let cpus = Cpus::split();
    if let Some(load) = &cpus.load {
        bind_this_process(load)?;
    }
    let load = Load {
        connections: args.connections,
        duration: Duration::from_secs(args.duration),
        cpus: cpus.load.clone(),
    };
    let work = tempfile::tempdir()?;
    let started = Instant::now();

    eprintln!("building the filters…");
    let sticky_wasm = ShellKind::Wasm.build()?;
    let sticky_native = ShellKind::Native.build()?;
    let noop_wasm = build_noop_filter()?;
    let noop_module = build_noop_module()?;
    let targets = DemoTargets::start(&[("i-target1", 0), ("i-target2", 0), ("i-target3", 0)])?;
    let addresses = targets.addresses();

    // --- Throughput: every system at once, rounds alternating.
    let keys = random_key_ring(1)?;
    let state = |policy: Option<PolicyState>| filter_state(policy, named_targets(addresses.clone()), keys.clone());
    let start_envoy = |name: &str, bootstrap: &EnvoyBootstrap| {
        EnvoyProcess::start_on_cpus(bootstrap, &work.path().join(name), 1, cpus.proxy.as_deref())
    };
    let sticky_bootstrap = |policy| EnvoyBootstrap::sticky(sticky_wasm.clone(), state(policy));
    let native_bootstrap = |policy| EnvoyBootstrap::sticky(sticky_native.clone(), state(policy));
    let with_filters = |filters: HttpFilters| -> anyhow::Result<EnvoyBootstrap> {
        let mut bootstrap = sticky_bootstrap(None)?;
        bootstrap.filters = filters;
        Ok(bootstrap)
    };
    eprintln!("starting the systems…");
    let plain = start_envoy("plain", &with_filters(HttpFilters::RouterOnly)?)?;
    let noop = start_envoy("noop", &with_filters(HttpFilters::NoopWasm { wasm: noop_wasm })?)?;
    let noop_native = start_envoy(
        "noop-module",
        &with_filters(HttpFilters::NoopModule {
            module: noop_module.clone(),
            sticky_routing: false,
        })?,
    )?;
    let noop_routed = start_envoy(
        "noop-module-routed",
        &with_filters(HttpFilters::NoopModule {
            module: noop_module,
            sticky_routing: true,
        })?,
    )?;
    let no_policy = start_envoy("no-policy", &sticky_bootstrap(None)?)?;
    let lb_state = state(Some(lb_cookie_policy(3600)));
    // The first visit row checks that Envoy issues cookies; the hit uses one made by the core,
    // for the first target.
    let lb = start_envoy(
        "lb-cookie",
        &EnvoyBootstrap::sticky(sticky_wasm.clone(), lb_state.clone())?,
    )?;
    let app = start_envoy("app-cookie", &sticky_bootstrap(Some(app_cookie_policy(None)))?)?;
    let native_no_policy = start_envoy("native-no-policy", &native_bootstrap(None)?)?;
    let native_lb = start_envoy("native-lb-cookie", &native_bootstrap(lb_state.policy.clone())?)?;
    let native_app = start_envoy("native-app-cookie", &native_bootstrap(Some(app_cookie_policy(None)))?)?;
    let native = start_envoy(
        "native",
        &with_filters(HttpFilters::NativeCookieSession {
            cookie_name: NATIVE_COOKIE.to_owned(),
            ttl_seconds: 3600,
        })?,
    )?;
    let target_addresses: Vec<_> = addresses.iter().map(|(_, a)| *a).collect();
    let haproxy = HaproxyProcess::start(&work.path().join("haproxy"), &target_addresses, cpus.proxy.as_deref())?;

    // Cookies for the sticky hits, each checked to pin.
    let lb_cookie = issue_cookie(&lb_state, addresses[0].1)?;
    let app_cookies = || -> anyhow::Result<(String, String)> {
        let login = get(&agent(), &app.url(), "/login", &[], &[]).map_err(anyhow::Error::msg)?;
        let session = login
            .cookie_value(APP_COOKIE)
            .context("the demo target set no session")?;
        let sticky = login
            .sticky_cookie()
            .context("the filter issued no cookie beside the app cookie")?;
        Ok((session, sticky))
    };
    let (app_session, app_sticky) = app_cookies()?;
    let native_cookie = issued_cookie(&native.url(), "/", NATIVE_COOKIE)?;
    let haproxy_cookie = issued_cookie(&haproxy.url(), "/", HAPROXY_COOKIE)?;
    let mut systems = vec![
        System::new("1", "Envoy, no filter", &plain, vec![]),
        System::new("2", "Envoy + do-nothing wasm filter", &noop, vec![]),
        System::new("2n", "Envoy + do-nothing dynamic module", &noop_native, vec![]),
        // Envoy's share of the sticky filter's routing: override_host following a routing
        // header (sent by the client here) and the route's upstream header.
        System::new(
            "2r",
            "Envoy + do-nothing module, with the filter's routing",
            &noop_routed,
            vec![("x-sticky-target", addresses[0].1.to_string())],
        ),
    ];
    let lb_hit = format!("{STICKY_COOKIE}={lb_cookie}");
    let app_hit = format!("{APP_COOKIE}={app_session}; {STICKY_COOKIE}={app_sticky}");
    systems.extend(sticky_rows(
        ["3a", "3b", "3c", "3d"],
        "wasm",
        "",
        [&no_policy, &lb, &app],
        &lb_hit,
        &app_hit,
    ));
    // The native shell's rows: the same cookies (one key ring; a cookie of either shell is
    // honoured by the other).
    systems.extend(sticky_rows(
        ["6a", "6b", "6c", "6d"],
        "native",
        "",
        [&native_no_policy, &native_lb, &native_app],
        &lb_hit,
        &app_hit,
    ));
    // The same rows with another build of the filter (e.g. before an optimisation), same run.
    let before = match &args.baseline_wasm {
        Some(wasm) => {
            let start = |name: &str, policy| -> anyhow::Result<EnvoyProcess> {
                let mut bootstrap = sticky_bootstrap(policy)?;
                if let HttpFilters::Sticky { shell, .. } = &mut bootstrap.filters {
                    *shell = FilterShell::Wasm(wasm.clone());
                }
                Ok(start_envoy(name, &bootstrap)?)
            };
            let envoys = [
                start("before-no-policy", None)?,
                start("before-lb", lb_state.policy.clone())?,
                start("before-app", Some(app_cookie_policy(None)))?,
            ];
            let label = format!(" ({})", wasm.file_name().unwrap_or_default().to_string_lossy());
            systems.extend(sticky_rows(
                ["3a'", "3b'", "3c'", "3d'"],
                "wasm",
                &label,
                [&envoys[0], &envoys[1], &envoys[2]],
                &lb_hit,
                &app_hit,
            ));
            envoys.into_iter().collect()
        }
        None => Vec::new(),
    };
    systems.extend([
        System::new(
            "4",
            "Envoy native stateful_session, cookie hit",
            &native,
            vec![("Cookie", format!("{NATIVE_COOKIE}={native_cookie}"))],
        ),
        System::new("4b", "Envoy native stateful_session, first visit", &native, vec![]),
        System {
            key: "5",
            name: "HAProxy cookie insert, sticky hit".to_owned(),
            url: haproxy.url(),
            headers: vec![("Cookie", format!("{HAPROXY_COOKIE}={haproxy_cookie}"))],
            pid: haproxy.pid(),
            ca: None,
        },
        System {
            key: "5b",
            name: "HAProxy cookie insert, first visit".to_owned(),
            url: haproxy.url(),
            headers: vec![],
            pid: haproxy.pid(),
            ca: None,
        },
    ]);
    // --- HTTPS: the same hits over TLS, kept alive (8) and one connection per request (9).
    let tls = bench_certificate(work.path())?;
    let with_tls = |mut bootstrap: EnvoyBootstrap| {
        bootstrap.tls = Some(ListenerTls {
            certificate_chain: tls.join("chain.pem"),
            private_key: tls.join("key.pem"),
        });
        bootstrap
    };
    let tls_noop = start_envoy(
        "tls-noop-module",
        &with_tls(with_filters(HttpFilters::NoopModule {
            module: build_noop_module()?,
            sticky_routing: false,
        })?),
    )?;
    let tls_native_lb = start_envoy("tls-native-lb", &with_tls(native_bootstrap(lb_state.policy.clone())?))?;
    let tls_wasm_lb = start_envoy(
        "tls-wasm-lb",
        &with_tls(EnvoyBootstrap::sticky(sticky_wasm.clone(), lb_state.clone())?),
    )?;
    let tls_stateful = start_envoy(
        "tls-stateful-session",
        &with_tls(with_filters(HttpFilters::NativeCookieSession {
            cookie_name: NATIVE_COOKIE.to_owned(),
            ttl_seconds: 3600,
        })?),
    )?;
    let tls_haproxy = HaproxyProcess::start_with(
        &work.path().join("haproxy-tls"),
        &target_addresses,
        cpus.proxy.as_deref(),
        Some(&tls.join("haproxy.pem")),
    )?;
    // The cookies of the plain rows pin here too (one key ring; stateful_session's cookie is
    // the target's address; HAProxy's the server's name).
    let https_rows = [
        (
            "8",
            "9",
            "Envoy + do-nothing dynamic module",
            &tls_noop.url(),
            tls_noop.pid(),
            None,
        ),
        (
            "8a",
            "9a",
            "sticky native, LB cookie, sticky hit",
            &tls_native_lb.url(),
            tls_native_lb.pid(),
            Some(lb_hit.clone()),
        ),
        (
            "8b",
            "9b",
            "sticky wasm, LB cookie, sticky hit",
            &tls_wasm_lb.url(),
            tls_wasm_lb.pid(),
            Some(lb_hit.clone()),
        ),
        (
            "8c",
            "9c",
            "Envoy native stateful_session, cookie hit",
            &tls_stateful.url(),
            tls_stateful.pid(),
            Some(format!("{NATIVE_COOKIE}={native_cookie}")),
        ),
        (
            "8d",
            "9d",
            "HAProxy cookie insert, sticky hit",
            &tls_haproxy.url(),
            tls_haproxy.pid(),
            Some(format!("{HAPROXY_COOKIE}={haproxy_cookie}")),
        ),
    ];
    for (kept_key, new_key, name, url, pid, cookie) in https_rows {
        for (key, how, close) in [
            (kept_key, "kept-alive", false),
            (new_key, "a new connection per request", true),
        ] {
            let mut headers: Vec<(&'static str, String)> = cookie.iter().map(|c| ("Cookie", c.clone())).collect();
            if close {
                headers.push(("Connection", "close".to_owned()));
            }
            systems.push(System {
                key,
                name: format!("HTTPS, {name}, {how}"),
                url: url.clone(),
                headers,
                pid,
                ca: Some(tls.join("root.pem")),
            });
        }
    }
    let systems: Vec<System> = systems
        .into_iter()
        .filter(|s| {
            let key = s.key.trim_end_matches('\'');
            args.only.is_empty() || ["1", "2", "2n", "2r", "4"].contains(&key) || args.only.iter().any(|k| k == key)
        })
        .collect();
    for system in &systems {
        system.check()?;
    }
    let pinned_before = [lb.sticky_counter("pinned")?, native_lb.sticky_counter("pinned")?];

    eprintln!("warming up…");
    let warm = Load {
        duration: Duration::from_secs(1),
        ..load.clone()
    };
    for system in &systems {
        system.measure(&warm)?;
    }
    let mut rows: Vec<Row> = systems
        .iter()
        .map(|s| Row {
            key: s.key,
            system: s.name.clone(),
            measurements: Vec::new(),
        })
        .collect();
    for round in 0..args.rounds {
        for (system, row) in systems.iter().zip(rows.iter_mut()) {
            let m = system.measure(&load)?;
            eprintln!(
                "  ({}) {}: {:.0} req/s, p99 {:.3} ms, {:.4} proxy CPU s / 1,000 req",
                system.key,
                system.name,
                m.requests_per_second,
                m.p99_ms,
                m.cpu_per_1000()
            );
            row.measurements.push(m);
        }
        eprintln!("throughput round {} of {} done", round + 1, args.rounds);
    }
    // Every request of the sticky-hit rows was pinned, none was reassigned.
    for ((key, envoy), before) in [("3c", &lb), ("6c", &native_lb)].into_iter().zip(pinned_before) {
        let hit_requests: u64 = rows
            .iter()
            .filter(|r| r.key == key)
            .flat_map(|r| &r.measurements)
            .map(|m| m.requests)
            .sum();
        let pinned = envoy.sticky_counter("pinned")? - before;
        if pinned < hit_requests {
            bail!("the LB-cookie hit row ({key}) made {hit_requests} requests but only {pinned} were pinned");
        }
    }
    // --- WebSockets: messages echoed through Envoy without the filter and through each sticky
    // shell (every WebSocket pinned by its cookie), in alternating rounds.
    let websocket_md = if args.only.is_empty() || args.only.iter().any(|k| k.starts_with("10")) {
        let rows = [
            ("10", "Envoy, no filter", &plain, None),
            (
                "10a",
                "sticky native, LB cookie, pinned",
                &native_lb,
                Some(lb_hit.as_str()),
            ),
            ("10b", "sticky wasm, LB cookie, pinned", &lb, Some(lb_hit.as_str())),
        ];
        let pinned_before = [native_lb.sticky_counter("pinned")?, lb.sticky_counter("pinned")?];
        let table = websocket_table(&rows, args.connections as usize, load.duration, args.rounds)?;
        // Every sticky row's WebSocket was opened pinned by its cookie.
        for (envoy, before) in [&native_lb, &lb].into_iter().zip(pinned_before) {
            let opened = (args.connections as usize * args.rounds.max(1)) as u64;
            if envoy.sticky_counter("pinned")? - before < opened {
                bail!("a WebSocket row opened {opened} WebSockets, not all pinned");
            }
        }
        Some(table)
    } else {
        None
    };
    drop((plain, noop, no_policy, lb, app, native, haproxy, before));
    drop((native_no_policy, native_lb, native_app, noop_native, noop_routed));
    drop((tls_noop, tls_native_lb, tls_wasm_lb, tls_stateful, tls_haproxy));

    // --- Scale: the sticky hit with more and more targets registered.
    let mut scale = scale_points(&addresses[0], &sticky_wasm, &load, &args, work.path(), &cpus)?;
    scale.extend(scale_points(
        &addresses[0],
        &sticky_native,
        &load,
        &args,
        work.path(),
        &cpus,
    )?);

    // --- Propagation through the live system.
    eprintln!("propagation…");
    let propagation = propagation::measure(args.trials, !args.smoke)?;

    // --- Reports.
    let setup = format!(
        "wrk -t1 -c{} -d{}s, {} alternating round(s), median of rounds; one Envoy worker (`--concurrency 1`), HAProxy `nbthread 1`; {}; three demo targets (hyper) on loopback.",
        args.connections,
        args.duration,
        args.rounds,
        match (&cpus.proxy, &cpus.load) {
            (Some(p), Some(l)) => format!("proxy bound to CPU {p}, wrk and targets to CPU {l}"),
            _ => "one CPU shared by all".to_owned(),
        }
    );
    let throughput = throughput_table(&rows, "1", "4", "2", "2n")?;
    let scale_md = scale_table(&scale);
    let propagation_md = propagation.markdown();
    let chart_path = out.join("throughput.png");
    chart(
        &rows,
        &format!("Sticky sessions on one proxy core — {}", machine.short),
        &chart_path,
    )?;
    let results = format!(
        "# Benchmark results\n\nWritten by `cargo run --release -p sticky-tests --bin bench` ({} min) on {}.\n\n\
         Machine: {}\n\nSetup: {setup}\n\n## Throughput, latency and proxy CPU\n\n{throughput}\n\
         ![throughput and CPU per request](throughput.png)\n\n\
         ## Scale: LB-cookie sticky hit with more targets registered\n\nOne Envoy per size, all running at once and measured in alternating rounds, its `targets` cluster and the filter's state holding every target (the extra ones are unreachable loopback addresses never chosen: every request carries a cookie for a live target).\n\n{scale_md}\n\
         ## Propagation (control service + Envoy following it)\n\n{propagation_md}{}",
        (started.elapsed().as_secs_f64() / 60.0).ceil(),
        machine.date,
        machine.long,
        websocket_md
            .map(|table| format!(
                "\n## WebSockets\n\n{} WebSockets to the demo targets' echo, each sending a 64-byte message and reading its echo in turn for {} s, {} alternating round(s), median of rounds.\n\n{table}",
                args.connections, args.duration, args.rounds
            ))
            .unwrap_or_default(),
    );
    std::fs::write(out.join("results.md"), &results)?;
    println!("{results}");
    if args.readme != "none" {
        let section = format!(
            "Latest results ({}, {}; full tables in [docs/benchmarks/results.md](docs/benchmarks/results.md)):\n\n{setup}\n\n{throughput}\n\
             ![throughput and CPU per request](docs/benchmarks/throughput.png)\n\n{scale_md}\n{propagation_md}",
            machine.date, machine.long
        );
        update_readme(&root.join(&args.readme), &section)?;
    }
    eprintln!(
        "wrote {} and {} in {:.0} s",
        out.join("results.md").display(),
        chart_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The WebSocket rows: messages echoed per second and the proxy's CPU, each system measured in
/// every round, the rounds alternating; the ratio is to the first row.
fn websocket_table(
    rows: &[(&str, &str, &EnvoyProcess, Option<&str>)],
    connections: usize,
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<String> {
    let mut measured: Vec<Vec<sticky_tests::bench::websocket::Echoes>> = vec![Vec::new(); rows.len()];
    for round in 0..rounds.max(1) {
        for ((key, name, envoy, cookie), results) in rows.iter().zip(measured.iter_mut()) {
            let echoes =
                sticky_tests::bench::websocket::measure(&envoy.url(), envoy.pid(), *cookie, connections, duration)?;
            eprintln!(
                "  ({key}) WebSockets, {name}: {:.0} messages/s, {:.4} proxy CPU s / 1,000 messages",
                echoes.messages_per_second, echoes.cpu_per_1000
            );
            results.push(echoes);
        }
        eprintln!("WebSocket round {} of {} done", round + 1, rounds.max(1));
    }
    let medians: Vec<(f64, f64)> = measured
        .iter()
        .map(|m| {
            (
                median(m.iter().map(|e| e.messages_per_second).collect()),
                median(m.iter().map(|e| e.cpu_per_1000).collect()),
            )
        })
        .collect();
    let (base_rate, base_cpu) = medians[0];
    let mut table = "| | system | messages/s | × no filter | proxy CPU s / 1,000 messages | × no filter |\n|---|---|---|---|---|---|\n".to_owned();
    for ((key, name, _, _), (rate, cpu)) in rows.iter().zip(&medians) {
        table.push_str(&format!(
            "| {key} | {name} | {rate:.0} | {:.2} | {cpu:.4} | {:.2} |\n",
            rate / base_rate,
            cpu / base_cpu
        ));
    }
    Ok(table)
}

impl System {
    fn new(key: &'static str, name: &str, envoy: &EnvoyProcess, headers: Vec<(&'static str, String)>) -> Self {
        Self {
            key,
            name: name.to_owned(),
            url: envoy.url(),
            headers,
            pid: envoy.pid(),
            ca: None,
        }
    }

    fn measure(&self, load: &Load) -> anyhow::Result<Measurement> {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        load.run(&format!("{}/", self.url), &headers, self.pid)
            .with_context(|| format!("({}) {}", self.key, self.name))
    }

    /// Each system does what its row says: hits stay on one target, first visits get a cookie.
    fn check(&self) -> anyhow::Result<()> {
        if let Some(ca) = &self.ca {
            return self.check_https(ca);
        }
        let agent = agent();
        let mut answered = std::collections::HashSet::new();
        for _ in 0..6 {
            let mut request = agent.get(&format!("{}/", self.url));
            for (name, value) in &self.headers {
                request = request.set(name, value);
            }
            let response = request
                .call()
                .with_context(|| format!("({}) {}: request failed", self.key, self.name))?;
            let sets_cookie = response.header("set-cookie").is_some();
            let body: serde_json::Value = serde_json::from_str(&response.into_string()?)?;
            answered.insert(body["target"].as_str().unwrap_or_default().to_owned());
            let is_hit = self.headers.iter().any(|(n, _)| *n == "Cookie");
            let first_visit = self.key.trim_end_matches('\'').ends_with('b');
            if first_visit && !sets_cookie {
                bail!("({}) {}: no cookie issued", self.key, self.name);
            }
            // HAProxy's `nocache` answers every request with its cookie; the others only when it changes.
            if is_hit && sets_cookie && !self.key.starts_with('5') {
                bail!(
                    "({}) {}: a sticky hit was answered with a new cookie",
                    self.key,
                    self.name
                );
            }
        }
        if self.headers.iter().any(|(n, _)| *n == "Cookie") && answered.len() != 1 {
            bail!(
                "({}) {}: requests with the cookie went to {answered:?}",
                self.key,
                self.name
            );
        }
        Ok(())
    }
}

impl System {
    /// [`System::check`] over HTTPS, with curl verifying the certificate against `ca`: every
    /// answer a 200 from a target, and with a cookie always the same target.
    fn check_https(&self, ca: &Path) -> anyhow::Result<()> {
        let mut answered = std::collections::HashSet::new();
        for _ in 0..6 {
            let mut command = Command::new("curl");
            command.args(["-sS", "--fail", "--max-time", "5", "--cacert"]).arg(ca);
            for (name, value) in &self.headers {
                command.args(["-H", &format!("{name}: {value}")]);
            }
            let output = command.arg(format!("{}/", self.url)).output()?;
            if !output.status.success() {
                bail!(
                    "({}) {}: {}",
                    self.key,
                    self.name,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let body: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            answered.insert(body["target"].as_str().unwrap_or_default().to_owned());
        }
        if self.headers.iter().any(|(n, _)| *n == "Cookie") && answered.len() != 1 {
            bail!(
                "({}) {}: requests with the cookie went to {answered:?}",
                self.key,
                self.name
            );
        }
        Ok(())
    }
}

/// The benchmark's certificate for 127.0.0.1, from a CA of its own, in `dir/tls`: `root.pem`,
/// `chain.pem` (leaf and intermediate), `key.pem`, and `haproxy.pem` (chain and key).
fn bench_certificate(dir: &Path) -> anyhow::Result<PathBuf> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls)?;
    let ca = sticky_testing::tls::TestCa::new("bench")?;
    let issued = ca.issue(&["127.0.0.1"])?;
    let chain = format!("{}{}", issued.body, issued.chain);
    std::fs::write(tls.join("root.pem"), ca.root_pem())?;
    std::fs::write(tls.join("chain.pem"), &chain)?;
    std::fs::write(tls.join("key.pem"), &issued.private_key)?;
    std::fs::write(tls.join("haproxy.pem"), format!("{chain}{}", issued.private_key))?;
    Ok(tls)
}

/// The sticky filter's rows (no policy, LB first visit, LB hit, app hit) on `envoys` (no
/// policy, LB cookie, app cookie), keys `keys`, names suffixed with `label`.
fn sticky_rows(
    keys: [&'static str; 4],
    shell: &str,
    label: &str,
    envoys: [&EnvoyProcess; 3],
    lb_hit: &str,
    app_hit: &str,
) -> Vec<System> {
    let [no_policy, lb, app] = envoys;
    vec![
        System::new(keys[0], &format!("sticky {shell}, no policy{label}"), no_policy, vec![]),
        System::new(
            keys[1],
            &format!("sticky {shell}, LB cookie, first visit{label}"),
            lb,
            vec![],
        ),
        System::new(
            keys[2],
            &format!("sticky {shell}, LB cookie, sticky hit{label}"),
            lb,
            vec![("Cookie", lb_hit.to_owned())],
        ),
        System::new(
            keys[3],
            &format!("sticky {shell}, app cookie, sticky hit{label}"),
            app,
            vec![("Cookie", app_hit.to_owned())],
        ),
    ]
}

/// The value of cookie `name` set by the first answer of `base` + `path`.
fn issued_cookie(base: &str, path: &str, name: &str) -> anyhow::Result<String> {
    let reply = get(&agent(), base, path, &[], &[]).map_err(anyhow::Error::msg)?;
    reply
        .cookie_value(name)
        .with_context(|| format!("{base}{path} set no cookie {name}: {:?}", reply.set_cookies))
}

/// An Envoy whose `targets` cluster and filter state hold `count` targets (the first is the
/// live `target`, the others unreachable loopback addresses), and the cookie pinning `target`.
fn scale_envoy(
    count: usize,
    target: &(String, std::net::SocketAddr),
    shell: &FilterShell,
    work: &Path,
    cpus: &Cpus,
) -> anyhow::Result<(EnvoyBootstrap, EnvoyProcess, String)> {
    let mut targets = vec![TargetState {
        id: target.0.clone(),
        address: target.1.to_string(),
        healthy: true,
        draining: false,
    }];
    // Unreachable loopback addresses, each its own (127.1.0.1:9, 127.1.0.2:9, …).
    targets.extend((1..count).map(|i| TargetState {
        id: format!("i-{i:08x}"),
        address: format!("127.{}.{}.{}:9", 1 + (i >> 16), (i >> 8) & 0xff, i & 0xff),
        healthy: true,
        draining: false,
    }));
    let state = filter_state(Some(lb_cookie_policy(3600)), targets, random_key_ring(1)?);
    let cookie = format!("{STICKY_COOKIE}={}", issue_cookie(&state, target.1)?);
    let bootstrap = EnvoyBootstrap::sticky(shell.clone(), state)?;
    let envoy = EnvoyProcess::start_on_cpus(
        &bootstrap,
        &work.join(format!("scale-{}-{count}", shell_name(shell))),
        1,
        cpus.proxy.as_deref(),
    )?;
    Ok((bootstrap, envoy, cookie))
}

/// The sticky hit at every size in `args.scale`: one Envoy per size, all running at once and
/// measured in alternating rounds like the throughput rows; then each Envoy's memory, and that
/// of an idle Envoy without the filter with the same cluster.
fn scale_points(
    target: &(String, std::net::SocketAddr),
    shell: &FilterShell,
    load: &Load,
    args: &Args,
    work: &Path,
    cpus: &Cpus,
) -> anyhow::Result<Vec<ScalePoint>> {
    let mut envoys = Vec::new();
    for &count in &args.scale {
        eprintln!(
            "scale: starting an Envoy ({} shell) with {count} targets…",
            shell_name(shell)
        );
        envoys.push((count, scale_envoy(count, target, shell, work, cpus)?));
    }
    let systems: Vec<System> = envoys
        .iter()
        .map(|(_, (_, envoy, cookie))| System::new("3c", "sticky hit", envoy, vec![("Cookie", cookie.clone())]))
        .collect();
    let warm = Load {
        duration: Duration::from_secs(1),
        ..load.clone()
    };
    for system in &systems {
        system.check()?;
        system.measure(&warm)?;
    }
    let mut rows: Vec<Row> = args
        .scale
        .iter()
        .map(|count| Row {
            key: "3c",
            system: format!("{} sticky hit, {count} targets", shell_name(shell)),
            measurements: Vec::new(),
        })
        .collect();
    for round in 0..args.rounds {
        for (system, row) in systems.iter().zip(rows.iter_mut()) {
            let m = system.measure(load)?;
            eprintln!(
                "  {}: {:.0} req/s, {:.4} proxy CPU s / 1,000 req",
                row.system,
                m.requests_per_second,
                m.cpu_per_1000()
            );
            row.measurements.push(m);
        }
        eprintln!("scale round {} of {} done", round + 1, args.rounds);
    }
    let mut points = Vec::new();
    for ((count, (bootstrap, envoy, _)), hit) in envoys.into_iter().zip(rows) {
        let envoy_mib = resident_mib(envoy.pid())?;
        drop(envoy);
        let mut plain_bootstrap = bootstrap;
        plain_bootstrap.filters = HttpFilters::RouterOnly;
        // Idle: round robin over the unreachable addresses would fail requests.
        let plain = EnvoyProcess::start_on_cpus(
            &plain_bootstrap,
            &work.join(format!("scale-{}-{count}", shell_name(shell))).join("plain"),
            1,
            cpus.proxy.as_deref(),
        )?;
        points.push(ScalePoint {
            shell: shell_name(shell),
            targets: count,
            hit,
            envoy_mib,
            plain_envoy_mib: resident_mib(plain.pid())?,
        });
    }
    Ok(points)
}

fn shell_name(shell: &FilterShell) -> &'static str {
    shell.named_artifact().0
}

/// The cookie value the filter issues (by the same core code) for a session on `target`.
fn issue_cookie(state: &FilterState, target: std::net::SocketAddr) -> anyhow::Result<String> {
    let listener = CompiledListener::compile(state)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let decision = listener.on_request(None, now);
    let address = target.to_string();
    let issued = listener.on_response(&decision, Some(address.as_bytes()), [], now, || Some(rand_nonce()));
    issued
        .set_cookie
        .as_deref()
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.split_once('=').map(|(_, v)| v.to_owned()))
        .context("no cookie for the target")
}

fn rand_nonce() -> [u8; 12] {
    let mut nonce = [0u8; 12];
    // The bench's cookie needs no secrecy, only uniqueness: time and pid suffice if /dev/urandom fails.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut nonce))
        .is_err()
    {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        nonce.copy_from_slice(&seed.to_le_bytes()[..12]);
    }
    nonce
}

struct Machine {
    short: String,
    long: String,
    date: String,
}

fn machine_description() -> Machine {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                let text = String::from_utf8_lossy(&text);
                text.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(String::new, |kib| format!(", {:.0} GiB RAM", kib / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let envoy = sticky_envoy::envoy_binary()
        .ok()
        .map(|bin| run(&bin.display().to_string(), &["--version"]))
        .unwrap_or_default();
    let envoy = envoy
        .split_whitespace()
        .find(|w| w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_hexdigit()))
        .and_then(|w| w.split('/').nth(1))
        .map_or(envoy.clone(), |v| format!("Envoy {v}"));
    Machine {
        short: format!("{cores} × {cpu}"),
        long: format!(
            "{cores} × {cpu}{memory}, Linux {}; {envoy}; {}; {}",
            kernel.trim(),
            HaproxyProcess::version(),
            run("wrk", &["-v"]),
        ),
        date: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    }
}

/// `--replicas`: the control service on PostgreSQL, alone.
fn replicas_only(args: &Args) -> anyhow::Result<()> {
    let sizes = if args.smoke {
        replicas::Sizes {
            rate_seconds: 1,
            client_threads: 4,
            trials: 4,
            followers: vec![10, 100],
            spreads: vec![1, 10],
            changes: 3,
            scale_only: false,
        }
    } else {
        replicas::Sizes {
            rate_seconds: args.duration,
            client_threads: 8,
            trials: args.trials,
            followers: args.followers.clone(),
            spreads: args.spreads.clone(),
            changes: 20,
            scale_only: args.only.iter().any(|o| o == "followers"),
        }
    };
    eprintln!("replicas on PostgreSQL…");
    let started = std::time::Instant::now();
    let markdown = replicas::measure(&sizes)?.markdown();
    println!("{markdown}");
    if !args.smoke && args.only.is_empty() {
        let out = out_dir(args)?;
        let when = machine_description().date;
        let text = format!(
            "# The control service on PostgreSQL\n\nMeasured by `scripts/bench --replicas` on {when} ({:.0} s; this machine: {} cores). \
             See `tests/src/bench/replicas.rs` for what each figure is.\n\n{markdown}",
            started.elapsed().as_secs_f64(),
            std::thread::available_parallelism().map_or(1, usize::from),
        );
        std::fs::write(out.join("replicas.md"), text)?;
    }
    Ok(())
}

/// `--out`, under the workspace when relative; created.
fn out_dir(args: &Args) -> anyhow::Result<PathBuf> {
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        sticky_testing::artifacts::workspace_root().join(&args.out)
    };
    std::fs::create_dir_all(&out)?;
    Ok(out)
}
