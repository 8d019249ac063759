//! The bouncer as an edge proxy, run by the operator's launcher in front of demo targets: what
//! targets are told of their clients (ELB's `X-Forwarded-*`), request hygiene (header names with
//! underscores refused, paths normalised, a stickiness cookie found in any `Cookie` line), and
//! its bounds under abusive clients: thousands of idle and slow-header connections while normal
//! clients are served, slow-header connections closed, new connections refused past the
//! configured limit while established sessions keep working, Envoy's memory bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sticky_demo_target::{DemoTargets, Echo};
use sticky_testing::artifacts::build_bouncer;
use sticky_testing::bouncer::BouncerProcess;
use sticky_testing::eventually;
use sticky_tests::launcher::LauncherSetup;
use sticky_tests::{STICKY_COOKIE, TARGET_IDS, agent, get};

/// The launcher running `setup` in `dir`, serving once its listener 80 answers, with an LB
/// cookie policy in force.
fn launch(setup: &LauncherSetup, dir: &std::path::Path) -> BouncerProcess {
    let config = dir.join("bouncer.toml");
    std::fs::write(&config, setup.file.render()).unwrap();
    let mut run = Command::new(build_bouncer().unwrap());
    run.arg("run").arg("--config").arg(&config);
    let launcher = BouncerProcess::spawn(run, &dir.join("bouncer.log")).unwrap();
    let url = format!("http://{}", setup.listener(80));
    let client = agent();
    eventually(Duration::from_secs(40), "the launcher's Envoy serves", || {
        get(&client, &url, "/", &[], &[]).is_ok_and(|r| r.status == 200 && r.try_target().is_some())
    });
    let api = setup.api();
    let lb = ("LoadBalancerName", sticky_tests::LOAD_BALANCER);
    api.call(
        "CreateLBCookieStickinessPolicy",
        &[lb, ("PolicyName", "LBCookie"), ("CookieExpirationPeriod", "600")],
    )
    .unwrap()
    .ok();
    api.call(
        "SetLoadBalancerPoliciesOfListener",
        &[lb, ("LoadBalancerPort", "80"), ("PolicyNames.member.1", "LBCookie")],
    )
    .unwrap()
    .ok();
    launcher
}

/// One HTTP/1.1 exchange on `stream` (kept alive): the status and the body.
fn exchange(stream: &mut TcpStream, request: &str) -> Result<(u16, String), String> {
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {} bytes", received.len()));
        }
        received.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if body.len() >= length {
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            return Ok((status, body[..length].to_owned()));
        }
    }
}

fn request(path: &str, headers: &[&str]) -> String {
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// Whether `appended` (the address Envoy appended to X-Forwarded-For) names `client`: its own
/// address, or for a client on loopback (this host itself) an address of this host, which is
/// what Envoy appends then.
fn is_client(appended: &str, client: IpAddr) -> bool {
    let Ok(address) = appended.parse::<IpAddr>() else {
        return false;
    };
    address == client || (client.is_loopback() && std::net::TcpListener::bind((address, 0)).is_ok())
}

fn connect(at: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&at, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

#[test]
fn targets_learn_their_clients_as_from_elb_and_requests_are_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
    let targets = DemoTargets::start(&specs).unwrap();
    let setup = LauncherSetup::new(dir.path(), targets.addresses());
    let _launcher = launch(&setup, dir.path());
    let at = setup.listener(80);
    let mut stream = connect(at);
    let client = stream.local_addr().unwrap().ip();

    // ELB's headers: the client's address appended to what it sent, the listener's protocol
    // and the port the client used, whatever the client claimed.
    let claimed = request(
        "/",
        &[
            "X-Forwarded-For: 203.0.113.7",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Port: 1",
        ],
    );
    let (status, body) = exchange(&mut stream, &claimed).unwrap();
    assert_eq!(status, 200);
    let echo: Echo = serde_json::from_str(&body).unwrap();
    let appended = echo
        .forwarded_for
        .as_deref()
        .and_then(|v| v.strip_prefix("203.0.113.7,"))
        .unwrap_or_else(|| panic!("the client's X-Forwarded-For is kept and appended to: {body}"));
    assert!(is_client(appended, client), "{appended} is not the client: {body}");
    assert_eq!(echo.forwarded_proto.as_deref(), Some("http"), "{body}");
    assert_eq!(echo.forwarded_port, Some(at.port().to_string()), "{body}");
    let (_, body) = exchange(&mut stream, &request("/", &[])).unwrap();
    let echo: Echo = serde_json::from_str(&body).unwrap();
    assert!(
        echo.forwarded_for.as_deref().is_some_and(|v| is_client(v, client)),
        "{body}"
    );

    // A stickiness cookie counts in whichever Cookie line carries it (HTTP/1.1 allows several).
    let first = get(&agent(), &format!("http://{at}"), "/", &[], &[]).unwrap();
    let (cookie, pinned) = (first.sticky_cookie().expect("an LB cookie"), first.target());
    let lines = request(
        "/",
        &[
            "Cookie: theme=dark",
            &format!("Cookie: {STICKY_COOKIE}={cookie}"),
            "Cookie: lang=en",
        ],
    );
    for _ in 0..9 {
        let (status, body) = exchange(&mut stream, &lines).unwrap();
        assert_eq!(status, 200);
        let echo: Echo = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echo.target, pinned,
            "a cookie in the second Cookie line was not honoured"
        );
    }

    // Paths reach targets normalised (RFC 3986 dot segments, merged slashes).
    let (_, body) = exchange(&mut stream, &request("/a/./b/../c//d", &[])).unwrap();
    let echo: Echo = serde_json::from_str(&body).unwrap();
    assert_eq!(echo.path, "/a/c/d");

    // A header name with an underscore is refused (it could smuggle past a CGI-style mapping).
    let mut fresh = connect(at);
    let (status, _) = exchange(&mut fresh, &request("/", &["X_Forwarded_For: 10.0.0.1"])).unwrap();
    assert_eq!(status, 400);
}

/// This process's limit on open files (the launcher's Envoy inherits it).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?.to_owned();
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// Envoy's heap in use (bytes), from its admin `/memory`.
fn envoy_allocated(admin: &str) -> u64 {
    let text = ureq::get(&format!("{admin}/memory"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["allocated"].as_str().and_then(|v| v.parse().ok()).unwrap()
}

/// An Envoy counter from its admin `/stats`, summed over the names containing `part`.
fn envoy_counter(admin: &str, part: &str) -> u64 {
    let text = ureq::get(&format!("{admin}/stats"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .filter(|l| l.contains(part))
        .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn the_edge_serves_clients_beside_thousands_of_idle_and_slow_ones_and_refuses_past_its_limit() {
    // Thousands of connections, within this host's open-file limit (Envoy holds as many).
    let limit = 3_000.min(open_files_limit().saturating_sub(500) / 2);
    let (idle_count, slow_count) = (limit * 8 / 10, limit / 8);
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<(&str, u16)> = TARGET_IDS.iter().map(|id| (*id, 0)).collect();
    let targets = DemoTargets::start(&specs).unwrap();
    let mut setup = LauncherSetup::new(dir.path(), targets.addresses());
    setup.file.max_connections = Some(limit as u64);
    let _launcher = launch(&setup, dir.path());
    let at = setup.listener(80);
    let url = format!("http://{at}");
    let admin = format!("http://127.0.0.1:{}", setup.file.admin_port);
    let allocated_before = envoy_allocated(&admin);

    // An established session: a kept-alive connection whose cookie pins a target.
    let first = get(&agent(), &url, "/", &[], &[]).unwrap();
    let (cookie, pinned) = (first.sticky_cookie().expect("an LB cookie"), first.target());
    let pinned_request = request("/", &[&format!("Cookie: {STICKY_COOKIE}={cookie}")]);
    let mut session = connect(at);
    let session_target = |session: &mut TcpStream| {
        let (status, body) = exchange(session, &pinned_request).unwrap();
        assert_eq!(status, 200);
        serde_json::from_str::<Echo>(&body).unwrap().target
    };
    assert_eq!(session_target(&mut session), pinned);

    // The flood: connections that send nothing, and connections that never finish their headers.
    let idle: Vec<TcpStream> = (0..idle_count).map(|_| connect(at)).collect();
    let mut slow: Vec<TcpStream> = (0..slow_count)
        .map(|_| {
            let mut stream = connect(at);
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    let flooded = Instant::now();

    // Normal clients are served meanwhile, each on a new connection.
    let mut latencies: Vec<Duration> = (0..100)
        .map(|_| {
            let started = Instant::now();
            let reply = get(&agent(), &url, "/", &[], &[]).unwrap();
            assert_eq!(reply.status, 200);
            started.elapsed()
        })
        .collect();
    latencies.sort();
    let allocated_flooded = envoy_allocated(&admin);
    eprintln!(
        "figure: {idle_count} idle + {slow_count} slow-header connections: 100 new clients served, \
         p50 {:?}, p99 {:?}, max {:?}; Envoy heap {:.1} MiB before, {:.1} MiB flooded ({} bytes a connection)",
        latencies[49],
        latencies[98],
        latencies[99],
        allocated_before as f64 / 1_048_576.0,
        allocated_flooded as f64 / 1_048_576.0,
        allocated_flooded.saturating_sub(allocated_before) / (idle_count + slow_count) as u64,
    );
    assert!(
        latencies[99] < Duration::from_secs(2),
        "a client waited {:?}",
        latencies[99]
    );
    assert!(
        allocated_flooded < 256 << 20,
        "Envoy's heap grew to {allocated_flooded} bytes"
    );
    assert_eq!(session_target(&mut session), pinned);

    // Past the limit Envoy closes new connections at once; the established session keeps working.
    let mut extra = Vec::new();
    eventually(Duration::from_secs(20), "new connections refused at the limit", || {
        let mut probe = connect(at);
        let refused = exchange(&mut probe, &request("/", &[])).is_err();
        if !refused {
            extra.push(probe);
            extra.extend((0..50).map(|_| connect(at)));
        }
        refused
    });
    assert!(envoy_counter(&admin, "downstream_global_cx_overflow") > 0);
    assert_eq!(session_target(&mut session), pinned);

    // Slow-header connections are closed once the request headers timeout passes (408).
    for stream in &mut slow {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "a slow-header client got {text}"
        );
    }
    let closed_after = flooded.elapsed();
    assert!(
        closed_after < Duration::from_secs(25),
        "slow-header connections lasted {closed_after:?}"
    );
    eprintln!("figure: slow-header connections all closed {closed_after:?} after the flood began");

    // Connections freed, new clients are served again.
    drop(extra);
    drop(slow);
    drop(idle);
    eventually(Duration::from_secs(10), "new clients served after the flood", || {
        get(&agent(), &url, "/", &[], &[]).is_ok_and(|r| r.status == 200)
    });
    assert_eq!(session_target(&mut session), pinned);
}
