//! Per-request cost of the filter inside the testbed (wasmtime, the artifact Envoy loads):
//! sticky hit, miss (new assignment), app-cookie hit, with 10, 1,000 and 100,000 targets.
//! A "request" is the request half plus the response half, as a proxy runs them. Then the
//! core's own decision of a sticky hit, natively (what the native shell runs, without Envoy's
//! header calls): opening the cookie each time, and from the cookie cache.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use sticky_core::{FilterState, PluginConfig, PolicyState};
use sticky_testbed::{Plugin, Testbed};
use sticky_testing::fixtures::{app_cookie_policy, filter_state, lb_cookie_policy, named_targets, ring_state};

/// Measures the filter's per-request cost in the testbed.
#[derive(Parser)]
struct Args {
    /// The filter's .wasm (default: build it).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: u32,
}

fn state(targets: usize, policy: PolicyState) -> FilterState {
    let targets = named_targets((0..targets).map(|i| (format!("i-{i:017x}"), address(i))));
    filter_state(Some(policy), targets, ring_state(&[(1, 9)], 1))
}

fn address(i: usize) -> String {
    format!("10.{}.{}.{}:80", i >> 16 & 255, i >> 8 & 255, i & 255)
}

/// Mean microseconds per request of `run`.
fn measure(plugin: &mut Plugin, requests: u32, mut run: impl FnMut(&mut Plugin)) -> f64 {
    for _ in 0..requests / 10 {
        run(plugin);
    }
    let start = Instant::now();
    for _ in 0..requests {
        run(plugin);
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(requests)
}

/// The core's decision of an LB-cookie sticky hit (request and response halves), natively.
fn native_core(requests: u32) -> anyhow::Result<()> {
    let listener = sticky_core::CompiledListener::compile(&state(10, lb_cookie_policy(3600)))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let upstream = address(5);
    let first = listener.on_request(None, now);
    let issued = listener.on_response(&first, Some(upstream.as_bytes()), [], now, || Some([7; 12]));
    let cookie = issued
        .set_cookie
        .as_deref()
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let header = cookie.into_bytes();
    let time = |decide: &mut dyn FnMut() -> sticky_core::RequestDecision| {
        let start = Instant::now();
        for _ in 0..requests * 10 {
            let decision = decide();
            let _ = listener.on_response(&decision, Some(upstream.as_bytes()), [], now, || Some([7; 12]));
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(requests * 10)
    };
    let opened = time(&mut || listener.on_request(Some(&header), now));
    let mut cache = sticky_core::CookieCache::default();
    let cached = time(&mut || listener.on_request_cached(Some(&header), now, &mut cache));
    println!();
    println!(
        "The core's decision of a sticky hit, natively: {opened:.0} ns opening the cookie, {cached:.0} ns from the cookie cache"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wasm = match args.wasm {
        Some(path) => path,
        None => sticky_testing::artifacts::build_filter()?,
    };
    let testbed = Testbed::load(&wasm)?;
    println!(
        "Filter per-request cost in the testbed (request + response half), {} requests each, µs/request",
        args.requests
    );
    println!();
    println!("| targets | sticky hit (LB cookie) | miss (new assignment) | app-cookie hit |");
    println!("|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for targets in [10usize, 1_000, 100_000] {
        let target = targets / 2;
        let upstream = address(target);
        let lb = state(targets, lb_cookie_policy(3600));
        let mut plugin = testbed.plugin(&PluginConfig::new(Some(lb)).to_json(), &[])?;
        let first = plugin.request(&[])?;
        let cookie = plugin
            .respond(&first, Some(&upstream), &[])?
            .cookie("AWSELB")
            .unwrap_or_default();
        let header = format!("AWSELB={cookie}").into_bytes();
        let hit = measure(&mut plugin, args.requests, |p| {
            if let Ok(stream) = p.request(&[("cookie", &header)]) {
                let _ = p.respond(&stream, Some(&upstream), &[]);
            }
        });
        let miss = measure(&mut plugin, args.requests, |p| {
            if let Ok(stream) = p.request(&[]) {
                let _ = p.respond(&stream, Some(&upstream), &[]);
            }
        });
        let app = state(targets, app_cookie_policy(None));
        let mut plugin = testbed.plugin(&PluginConfig::new(Some(app)).to_json(), &[])?;
        let first = plugin.request(&[])?;
        let login = plugin.respond(&first, Some(&upstream), &[("set-cookie", b"session=abc; Path=/")])?;
        let sticky = login.cookie("AWSELB").unwrap_or_default();
        let both = format!("session=abc; AWSELB={sticky}").into_bytes();
        let app_hit = measure(&mut plugin, args.requests, |p| {
            if let Ok(stream) = p.request(&[("cookie", &both)]) {
                let _ = p.respond(&stream, Some(&upstream), &[]);
            }
        });
        println!("| {targets} | {hit:.2} | {miss:.2} | {app_hit:.2} |");
        rows.push((hit, miss, app_hit));
    }
    native_core(args.requests)?;
    let (first, last) = (rows[0], rows[2]);
    println!();
    println!(
        "growth 10 → 100,000 targets: sticky hit {:.2}×, miss {:.2}×, app-cookie hit {:.2}×",
        last.0 / first.0,
        last.1 / first.1,
        last.2 / first.2
    );
    Ok(())
}
