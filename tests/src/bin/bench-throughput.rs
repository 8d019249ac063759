//! Requests per second through Envoy (1 worker) to one fast target: without the filter, and
//! with the filter on the LB-cookie sticky-hit path. Both Envoys run side by side in the same
//! run; rounds alternate between them; `wrk` generates the load. Prints a table and the ratio.

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use sticky_core::{CookieSettings, FilterState, PolicyState, TargetState};
use sticky_demo_target::DemoTargets;
use sticky_envoy::{Bootstrap, EnvoyProcess, HttpFilters, build_filter, random_key_ring};

/// Throughput of Envoy without the filter vs with the filter (sticky hit), measured with wrk.
#[derive(Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds per system (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
}

struct Measurement {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(url: &str, cookie: Option<&str>, args: &Args) -> anyhow::Result<Measurement> {
    let mut command = Command::new("wrk");
    command.args([
        "-t1",
        &format!("-c{}", args.connections),
        &format!("-d{}s", args.duration),
        "--latency",
    ]);
    if let Some(cookie) = cookie {
        command.args(["-H", &format!("Cookie: AWSELB={cookie}")]);
    }
    let output = command
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run wrk ({e}); install it: apt-get install wrk"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        anyhow::bail!("wrk saw errors:\n{text}");
    }
    let field =
        |prefix: &str| -> Option<&str> { text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(str::trim) };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in:\n{text}"))?;
    let latency = |label: &str| field(label).map(parse_wrk_duration).unwrap_or(f64::NAN);
    Ok(Measurement {
        requests_per_second: rps,
        p50_ms: latency("50%"),
        p99_ms: latency("99%"),
    })
}

/// wrk prints `123.45us`, `1.23ms` or `1.02s`.
fn parse_wrk_duration(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let targets = DemoTargets::start(&[("i-fast", 0)])?;
    let (id, address) = targets.addresses().remove(0);
    let state = FilterState {
        version: 1,
        load_balancer: "bench".to_owned(),
        listener_port: 80,
        policy: Some(PolicyState::LbCookie {
            expiration_period: 3600,
        }),
        cookie: CookieSettings::default(),
        targets: vec![TargetState {
            id,
            address: address.to_string(),
            healthy: true,
        }],
        keys: random_key_ring(1)?,
    };
    let dir = std::env::temp_dir().join(format!("sticky-bench-{}", std::process::id()));
    let with_filter = Bootstrap::sticky(build_filter()?, state)?;
    let mut without_filter = with_filter.clone();
    without_filter.filters = HttpFilters::RouterOnly;
    without_filter.admin_port = sticky_envoy::free_port()?;
    without_filter.listen_port = sticky_envoy::free_port()?;
    let plain = EnvoyProcess::start(&without_filter, &dir.join("plain"), 1)?;
    let sticky = EnvoyProcess::start(&with_filter, &dir.join("sticky"), 1)?;

    let first = ureq::get(&format!("{}/", sticky.url())).call()?;
    let cookie = first
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.strip_prefix("AWSELB="))
        .ok_or_else(|| anyhow::anyhow!("no stickiness cookie issued"))?
        .to_owned();

    // Warm both up, then alternate.
    let warm = Args { duration: 2, ..args };
    wrk(&plain.url(), None, &warm)?;
    wrk(&sticky.url(), Some(&cookie), &warm)?;
    let args = Args {
        duration: args.duration,
        rounds: args.rounds,
        connections: args.connections,
    };
    let mut rows: Vec<(&str, Vec<Measurement>)> = vec![
        ("Envoy, no filter", Vec::new()),
        ("Envoy + sticky filter, LB cookie sticky hit", Vec::new()),
    ];
    for round in 0..args.rounds {
        rows[0].1.push(wrk(&plain.url(), None, &args)?);
        rows[1].1.push(wrk(&sticky.url(), Some(&cookie), &args)?);
        eprintln!("round {} of {} done", round + 1, args.rounds);
        std::thread::sleep(Duration::from_millis(200));
    }
    let pinned = sticky.sticky_counter("pinned")?;

    println!(
        "Envoy 1 worker, wrk -t1 -c{} -d{}s, {} alternating rounds, one demo target; median of rounds",
        args.connections, args.duration, args.rounds
    );
    println!();
    println!("| system | req/s | p50 ms | p99 ms | ratio to no filter |");
    println!("|---|---:|---:|---:|---:|");
    let baseline = median(rows[0].1.iter().map(|m| m.requests_per_second).collect());
    for (name, measurements) in &rows {
        let rps = median(measurements.iter().map(|m| m.requests_per_second).collect());
        let p50 = median(measurements.iter().map(|m| m.p50_ms).collect());
        let p99 = median(measurements.iter().map(|m| m.p99_ms).collect());
        println!("| {name} | {rps:.0} | {p50:.3} | {p99:.3} | {:.2}x |", rps / baseline);
    }
    println!();
    println!(
        "per-round req/s: no filter {:?}",
        rows[0]
            .1
            .iter()
            .map(|m| m.requests_per_second.round())
            .collect::<Vec<_>>()
    );
    println!(
        "per-round req/s: sticky    {:?}",
        rows[1]
            .1
            .iter()
            .map(|m| m.requests_per_second.round())
            .collect::<Vec<_>>()
    );
    println!("sticky.pinned counter after the run: {pinned} (every measured request was a sticky hit)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
