//! The benchmark's outputs: Markdown tables, a PNG chart, and the README's results section.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use plotters::prelude::*;

use super::load::{Measurement, median};

/// Where the chart's font comes from (Debian `fonts-dejavu-core`, installed by
/// `scripts/bench-setup`).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One system measured over several rounds.
#[derive(Debug, Clone)]
pub struct Row {
    /// Numbered as in issue 6's list, e.g. "3c".
    pub key: &'static str,
    pub system: String,
    pub measurements: Vec<Measurement>,
}

/// The medians of a row's rounds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_per_1000: f64,
}

impl Row {
    pub fn summary(&self) -> Summary {
        let of = |f: fn(&Measurement) -> f64| median(self.measurements.iter().map(f).collect());
        Summary {
            requests_per_second: of(|m| m.requests_per_second),
            p50_ms: of(|m| m.p50_ms),
            p99_ms: of(|m| m.p99_ms),
            cpu_per_1000: of(Measurement::cpu_per_1000),
        }
    }
}

/// The throughput table: every system, with ratios to Envoy without a filter (`plain`), to
/// Envoy's native stateful session (`native`) and, for CPU, to the do-nothing wasm filter
/// (`wasm_floor`) and the do-nothing dynamic module (`module_floor`).
pub fn throughput_table(
    rows: &[Row],
    plain: &str,
    native: &str,
    wasm_floor: &str,
    module_floor: &str,
) -> anyhow::Result<String> {
    let find = |key: &str| {
        rows.iter()
            .find(|r| r.key == key)
            .map(Row::summary)
            .with_context(|| format!("no row {key}"))
    };
    let (plain, native) = (find(plain)?, find(native)?);
    let (wasm_floor, module_floor) = (find(wasm_floor)?, find(module_floor)?);
    let mut out = String::new();
    out.push_str(
        "| # | system | req/s | p50 ms | p99 ms | proxy CPU s / 1,000 req | req/s vs (1) no filter | req/s vs (4) native | CPU vs (2) do-nothing wasm | CPU vs (2n) do-nothing module |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let s = row.summary();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.4} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
            row.key,
            row.system,
            s.requests_per_second,
            s.p50_ms,
            s.p99_ms,
            s.cpu_per_1000,
            s.requests_per_second / plain.requests_per_second,
            s.requests_per_second / native.requests_per_second,
            s.cpu_per_1000 / wasm_floor.cpu_per_1000,
            s.cpu_per_1000 / module_floor.cpu_per_1000,
        );
    }
    Ok(out)
}

/// One size of the scale measurement.
#[derive(Debug, Clone)]
pub struct ScalePoint {
    /// The filter's shell (`wasm`, `native`).
    pub shell: &'static str,
    pub targets: usize,
    pub hit: Row,
    /// Resident memory of the Envoy with the filter after the run.
    pub envoy_mib: f64,
    /// Resident memory of an idle Envoy without the filter with the same cluster.
    pub plain_envoy_mib: f64,
}

pub fn scale_table(points: &[ScalePoint]) -> String {
    let mut out = String::new();
    out.push_str("| shell | targets | req/s (sticky hit) | p50 ms | p99 ms | proxy CPU s / 1,000 req | CPU vs smallest | Envoy RSS MiB, filter | Envoy RSS MiB, no filter (idle) |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for point in points {
        let s = point.hit.summary();
        // Each shell against its own smallest size.
        let base = points
            .iter()
            .filter(|p| p.shell == point.shell)
            .min_by_key(|p| p.targets)
            .map(|p| p.hit.summary().cpu_per_1000);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.4} | {:.2}× | {:.1} | {:.1} |",
            point.shell,
            point.targets,
            s.requests_per_second,
            s.p50_ms,
            s.p99_ms,
            s.cpu_per_1000,
            base.map_or(f64::NAN, |b| s.cpu_per_1000 / b),
            point.envoy_mib,
            point.plain_envoy_mib,
        );
    }
    out
}

/// A PNG with two horizontal bar charts: requests/s and proxy CPU per 1,000 requests.
pub fn chart(rows: &[Row], title: &str, path: &Path) -> anyhow::Result<()> {
    let font =
        std::fs::read(FONT).with_context(|| format!("{FONT} (install fonts-dejavu-core: scripts/bench-setup)"))?;
    // plotters wants the font for the whole process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    if plotters::style::register_font("sans-serif", FontStyle::Normal, font).is_err() {
        bail!("{FONT} is not a font plotters can read");
    }
    let labels: Vec<String> = rows.iter().map(|r| format!("({}) {}", r.key, r.system)).collect();
    let summaries: Vec<Summary> = rows.iter().map(Row::summary).collect();
    let height = 140 + 42 * rows.len() as u32;
    let root = BitMapBackend::new(path, (1500, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(900);
    let panels: [(&DrawingArea<_, _>, &str, Vec<f64>, u32); 2] = [
        (
            &left,
            "requests/s (higher is better)",
            summaries.iter().map(|s| s.requests_per_second).collect(),
            560,
        ),
        (
            &right,
            "proxy CPU s / 1,000 requests (lower is better)",
            summaries.iter().map(|s| s.cpu_per_1000).collect(),
            20,
        ),
    ];
    for (area, caption, values, label_width) in panels {
        let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max) * 1.15;
        let max = if max > 0.0 { max } else { 1.0 };
        let n = values.len();
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0.0..max, 0.0..n as f64)?;
        let names = labels.clone();
        let show_names = label_width > 100;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .x_labels(6)
            .x_label_formatter(&|x| {
                if max >= 100.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.2}")
                }
            })
            .y_labels(n * 2 + 1)
            .y_label_formatter(&|y| {
                // Labels at bar centres (i + 0.5), counted from the top.
                let slot = (y - 0.5).round();
                if !show_names || (y - 0.5 - slot).abs() > 0.01 || slot < 0.0 {
                    return String::new();
                }
                n.checked_sub(1 + slot as usize)
                    .and_then(|i| names.get(i))
                    .cloned()
                    .unwrap_or_default()
            })
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let slot = (n - 1 - i) as f64;
            let color = Palette99::pick(i).filled();
            Rectangle::new([(0.0, slot + 0.15), (v.max(0.0), slot + 0.85)], color)
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let slot = (n - 1 - i) as f64;
            let text = if *v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.4}")
            };
            Text::new(text, (v.max(0.0), slot + 0.62), ("sans-serif", 13))
        }))?;
    }
    root.present()?;
    Ok(())
}

/// Replaces the text between `<!-- bench:start -->` and `<!-- bench:end -->` in `readme`.
pub fn update_readme(readme: &Path, section: &str) -> anyhow::Result<()> {
    const START: &str = "<!-- bench:start -->";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(readme)?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        bail!("{} has no {START} … {END} section", readme.display());
    };
    if end < start {
        bail!("{}: {END} before {START}", readme.display());
    }
    let updated = format!("{}{START}\n{section}{}", &text[..start], &text[end..]);
    std::fs::write(readme, updated)?;
    Ok(())
}
