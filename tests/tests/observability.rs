//! The monitoring files of `deploy/` against the live system: the Prometheus scrape
//! configuration's jobs scrape a real control service and a real Envoy (with the shell under
//! test), its relabelling gives the filter's counters one name whichever shell runs, and every
//! series the Grafana dashboard queries exists in what those scrapes return; the dashboard and
//! its provisioning file are in Grafana's formats; the metrics table of docs/operating.md names them all.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use sticky_tests::STICKY_COOKIE;
use sticky_tests::live::Live;

fn deploy(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct PrometheusConfig {
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Deserialize)]
struct ScrapeConfig {
    job_name: String,
    metrics_path: String,
    static_configs: Vec<StaticConfig>,
    #[serde(default)]
    metric_relabel_configs: Vec<Relabel>,
}

#[derive(Deserialize)]
struct StaticConfig {
    targets: Vec<String>,
}

#[derive(Deserialize)]
struct Relabel {
    source_labels: Vec<String>,
    regex: String,
    target_label: String,
    replacement: String,
}

impl ScrapeConfig {
    /// The metric names of a scrape's text, renamed as the job's relabelling does.
    fn names(&self, text: &str) -> BTreeSet<String> {
        let rules: Vec<(regex::Regex, &str)> = self
            .metric_relabel_configs
            .iter()
            .map(|rule| {
                assert_eq!(rule.source_labels, ["__name__"], "{}", self.job_name);
                assert_eq!(rule.target_label, "__name__", "{}", self.job_name);
                // Prometheus anchors relabelling regexes at both ends.
                let anchored = regex::Regex::new(&format!("^(?:{})$", rule.regex)).expect("an RE2 regex");
                (anchored, rule.replacement.as_str())
            })
            .collect();
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(|name| {
                let mut name = name.to_owned();
                for (regex, replacement) in &rules {
                    if regex.is_match(&name) {
                        name = regex.replace(&name, *replacement).into_owned();
                    }
                }
                name
            })
            .collect()
    }
}

/// The metric names a PromQL expression refers to (this product's and Envoy's).
fn referenced(expr: &str) -> Vec<String> {
    let identifier = regex::Regex::new(r"[a-zA-Z_:][a-zA-Z0-9_:]*").unwrap();
    identifier
        .find_iter(expr)
        .map(|m| m.as_str().to_owned())
        .filter(|name| name.starts_with("sticky_") || name.starts_with("envoy_"))
        .collect()
}

#[test]
fn the_dashboard_queries_only_what_the_scrape_configuration_collects_from_the_live_system() {
    let live = Live::start(1, &[]);
    // Some traffic, so that every kind of series has been touched at least once.
    let (cookie, _) = live.lb_cookie_session(0);
    for _ in 0..5 {
        live.get(0, "/", &[(STICKY_COOKIE, &cookie)]);
    }
    live.get(0, "/", &[(STICKY_COOKIE, "garbage")]);

    let config: PrometheusConfig = serde_yaml::from_str(&deploy("prometheus/prometheus.yml")).expect("prometheus.yml");
    let job = |name: &str| {
        config
            .scrape_configs
            .iter()
            .find(|j| j.job_name == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    };
    let control_job = job("sticky-control");
    let envoy_job = job("sticky-envoy");
    assert!(control_job.static_configs.iter().all(|s| !s.targets.is_empty()));
    assert!(envoy_job.static_configs.iter().all(|s| !s.targets.is_empty()));
    // Scrape as Prometheus would, on the jobs' paths.
    let control_text = sticky_tests::agent()
        .get(&format!(
            "http://{}{}",
            live.control.address(),
            control_job.metrics_path
        ))
        .call()
        .expect("the control service's metrics")
        .into_string()
        .unwrap();
    let envoy_text = live.envoys[0]
        .admin_get(&envoy_job.metrics_path)
        .expect("Envoy's metrics");
    let mut collected = control_job.names(&control_text);
    collected.extend(envoy_job.names(&envoy_text));
    assert!(
        collected.contains("sticky_filter_pinned"),
        "the relabelling gives the filter's counters one name: {:?}",
        collected.iter().filter(|n| n.contains("pinned")).collect::<Vec<_>>()
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/dashboards/sticky-sessions.json")).expect("dashboard JSON");
    // Grafana's dashboard model: what provisioning needs to load it.
    for field in ["uid", "title", "schemaVersion", "panels"] {
        assert!(!dashboard[field].is_null(), "the dashboard lacks {field}");
    }
    let variables = dashboard["templating"]["list"].as_array().expect("templating");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource")
    );
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operating.md")).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "panel ids are unique"
        );
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "{}: gridPos.{key}", panel["title"]);
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in referenced(expr) {
                queried += 1;
                assert!(
                    collected.contains(&name),
                    "{}: {name} is not collected ({expr})",
                    panel["title"]
                );
                // The filter's counters are in the Counters table by their short name.
                let documented = match name.strip_prefix("sticky_filter_") {
                    Some(counter) => {
                        readme.contains(&format!("`{}`", counter.replace("rejected_", "rejected.")))
                            || readme.contains(counter.trim_start_matches("rejected_"))
                    }
                    None => readme.contains(&name),
                };
                assert!(
                    documented,
                    "the metrics table of docs/operating.md does not name {name}"
                );
            }
        }
    }
    assert!(queried > 20, "{queried} series queried");

    #[derive(Deserialize)]
    struct Provisioning {
        #[serde(rename = "apiVersion")]
        api_version: u32,
        providers: Vec<serde_yaml::Value>,
    }
    let provisioning: Provisioning =
        serde_yaml::from_str(&deploy("grafana/provisioning/dashboards/sticky.yaml")).expect("provisioning YAML");
    assert_eq!(provisioning.api_version, 1);
    let provider = &provisioning.providers[0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    assert!(provider["options"]["path"].as_str().is_some_and(|p| p.starts_with('/')));
}
