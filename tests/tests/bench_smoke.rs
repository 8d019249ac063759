//! The benchmark program runs every step end to end (`--smoke`: about a second per
//! measurement): all systems answer and stick as their rows say, the scale and propagation
//! steps complete, and the Markdown table and the PNG chart are written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn benchmark_smoke_run_writes_every_row_and_the_chart() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .output()
        .expect("run the bench program");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench --smoke failed:\n{stderr}");
    let results = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    for row in [
        "| 1 |", "| 2 |", "| 2n |", "| 2r |", "| 3a |", "| 3b |", "| 3c |", "| 3d |", "| 6a |", "| 6b |", "| 6c |",
        "| 6d |", "| 4 |", "| 4b |", "| 5 |", "| 5b |", "| 8 |", "| 8a |", "| 8b |", "| 8c |", "| 8d |", "| 9 |",
        "| 9a |", "| 9b |", "| 9c |", "| 9d |",
    ] {
        let line = results
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row} in:\n{results}"));
        let rps: f64 = line
            .split('|')
            .nth(3)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no req/s in {line}"));
        assert!(rps > 0.0, "{line}");
    }
    for size in [
        "| wasm | 10 |",
        "| wasm | 1000 |",
        "| native | 10 |",
        "| native | 1000 |",
    ] {
        assert!(
            results.lines().any(|l| l.starts_with(size)),
            "no scale row {size}:\n{results}"
        );
    }
    for change in [
        "| policy change, xDS |",
        "| registration, xDS |",
        "| listener creation, xDS |",
        "| policy change, REST EDS",
        "| registration, REST EDS",
    ] {
        assert!(results.contains(change), "no propagation row {change}:\n{results}");
    }
    assert!(results.contains("re-pinned"), "{results}");
    let png = std::fs::read(out.path().join("throughput.png")).expect("chart");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a PNG chart"
    );
}

#[test]
fn replica_benchmark_smoke_run_prints_every_table() {
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--replicas", "--smoke"])
        .output()
        .expect("run the bench program");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench --replicas --smoke failed:\n{stderr}");
    let tables = String::from_utf8_lossy(&output.stdout);
    for row in [
        "| SQLite, 1 process |",
        "| PostgreSQL, 1 replica |",
        "| PostgreSQL, 3 replicas |",
        "| policy change, 3 replicas, xDS |",
        "| registration, 3 replicas, xDS |",
        "| 10 | 1 | 3 |",
        "| 10 | 10 | 3 |",
        "| 100 | 1 | 3 |",
        "| 100 | 10 | 3 |",
    ] {
        let line = tables
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row} in:\n{tables}"));
        let first: f64 = line
            .split('|')
            .nth(2)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {line}"));
        assert!(first > 0.0, "{line}");
    }
}
