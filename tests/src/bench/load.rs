//! Load generation (wrk) and what a proxy process spent (CPU time, memory), from `/proc`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// One wrk run against one system.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU seconds (user + system) the proxy process spent during the run.
    pub proxy_cpu_seconds: f64,
}

impl Measurement {
    /// CPU seconds of the proxy process per 1,000 requests.
    pub fn cpu_per_1000(&self) -> f64 {
        if self.requests == 0 {
            return f64::NAN;
        }
        self.proxy_cpu_seconds * 1000.0 / self.requests as f64
    }
}

/// How wrk is run: one thread, fixed connections and duration, bound to `cpus` if given.
#[derive(Debug, Clone)]
pub struct Load {
    pub connections: u32,
    pub duration: Duration,
    pub cpus: Option<String>,
}

impl Load {
    /// Runs wrk against `url` with the request headers `headers` while reading the CPU time of
    /// process `proxy_pid`. Any non-2xx answer or socket error fails the run.
    pub fn run(&self, url: &str, headers: &[(&str, &str)], proxy_pid: u32) -> anyhow::Result<Measurement> {
        let mut command = match &self.cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpus, "wrk"]);
                command
            }
            None => Command::new("wrk"),
        };
        command.args([
            "-t1".to_owned(),
            format!("-c{}", self.connections),
            format!("-d{}s", self.duration.as_secs().max(1)),
            "--latency".to_owned(),
        ]);
        for (name, value) in headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        let before = cpu_seconds(proxy_pid)?;
        let output = command
            .arg(url)
            .output()
            .context("cannot run wrk; install it with scripts/bench-setup (apt-get install wrk)")?;
        let after = cpu_seconds(proxy_pid)?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!("wrk failed: {}\n{text}", String::from_utf8_lossy(&output.stderr));
        }
        parse_wrk(&text, after - before)
    }
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(text: &str, proxy_cpu_seconds: f64) -> anyhow::Result<Measurement> {
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors:\n{text}");
    }
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(str::trim);
    let requests_per_second = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in:\n{text}"))?;
    // "  123456 requests in 10.00s, 12.34MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .with_context(|| format!("no request count in:\n{text}"))?;
    let latency = |label: &str| field(label).map_or(f64::NAN, parse_duration_ms);
    Ok(Measurement {
        requests,
        requests_per_second,
        p50_ms: latency("50%"),
        p99_ms: latency("99%"),
        proxy_cpu_seconds,
    })
}

/// wrk prints `123.45us`, `1.23ms`, `1.02s` or `1.5m`.
fn parse_duration_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (text, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

/// User + system CPU seconds process `pid` has used (all its threads), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid} gone"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / clock_ticks_per_second()),
        _ => bail!("cannot read the CPU time of process {pid}: {stat}"),
    }
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident memory of process `pid` in MiB, from `/proc/<pid>/status`.
pub fn resident_mib(pid: u32) -> anyhow::Result<f64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .with_context(|| format!("no VmRSS for process {pid}"))
}

/// Binds every thread of this process (and those it starts later) to `cpus`.
pub fn bind_this_process(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset -a -p -c {cpus} failed");
    }
    Ok(())
}

/// The median of `values` (NaN for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 1s test @ http://127.0.0.1:1234/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.31ms  210.00us   4.00ms   90.00%
    Req/Sec    12.10k   300.00    12.50k    80.00%
  Latency Distribution
     50%    1.28ms
     75%    1.35ms
     90%    1.50ms
     99%  850.00us
  12101 requests in 1.00s, 3.10MB read
Requests/sec:  12087.42
Transfer/sec:      3.10MB
";

    #[test]
    fn reads_wrk_report() {
        let m = parse_wrk(WRK, 0.5).expect("parsed");
        assert_eq!(m.requests, 12101);
        assert!((m.requests_per_second - 12087.42).abs() < 1e-9);
        assert!((m.p50_ms - 1.28).abs() < 1e-9);
        assert!((m.p99_ms - 0.85).abs() < 1e-9);
        assert!((m.cpu_per_1000() - 0.5 * 1000.0 / 12101.0).abs() < 1e-12);
    }

    #[test]
    fn wrk_errors_fail_the_run() {
        let text = format!("{WRK}  Non-2xx or 3xx responses: 3\n");
        assert!(parse_wrk(&text, 0.0).is_err());
        let text = format!("{WRK}  Socket errors: connect 0, read 1, write 0, timeout 0\n");
        assert!(parse_wrk(&text, 0.0).is_err());
    }

    #[test]
    fn reads_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("cpu") >= 0.0);
        assert!(resident_mib(pid).expect("rss") > 0.0);
    }
}
