//! The prober: runs each registered instance's check (`HTTP:port/path` is healthy on a 200
//! answer, `TCP:port` when a connection opens) at its interval, and feeds each result to the
//! state machine in `state.rs`. It runs on the leading replica only; the flips it finds reach
//! the others through the store. It keeps the consecutive counts itself (only flips are
//! shared), starting from the published health when it takes over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::health::InstanceHealth;
use crate::model::HealthTarget;
use crate::service::Service;

/// One probe to run.
#[derive(Debug, Clone)]
struct Probe {
    key: (String, String),
    address: SocketAddr,
    target: HealthTarget,
    path: String,
    timeout: Duration,
    interval: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

enum Slot {
    /// Next probe due at this instant, under the check it was scheduled with.
    DueAt(Instant, Duration, HealthTarget, String),
    InFlight,
}

/// Runs the health checks, while this replica leads, until the process ends.
pub async fn run(service: Arc<Service>) {
    let mut leadership = service.replica.leadership();
    loop {
        if *leadership.borrow_and_update() {
            tracing::info!("health checks running on this replica");
            tokio::select! {
                () = probe(&service) => {}
                _ = leadership.wait_for(|leads| !*leads) => {}
            }
            tracing::info!("health checks stopped on this replica: another one leads");
        } else if leadership.changed().await.is_err() {
            return;
        }
    }
}

/// Probes until stopped (dropped when leadership is lost, with the probes it started).
async fn probe(service: &Arc<Service>) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the health check client; health checks are off");
            return std::future::pending().await;
        }
    };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<((String, String), Option<InstanceHealth>)>();
    // Each instance's state machine, with its consecutive counts.
    let mut states: HashMap<(String, String), InstanceHealth> = HashMap::new();
    let mut slots: HashMap<(String, String), Slot> = HashMap::new();
    // Aborted with this task when leadership is lost: a former leader publishes nothing more.
    let mut probes_in_flight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // A change (e.g. a registration) is looked at at once: a new instance's first probe, which
    // decides its health, does not wait for the next tick.
    let mut changes = service.subscribe();
    // The checks to run, rebuilt only when the domain changed: a bouncer of 1,000 load
    // balancers runs thousands, and each result or tick must not cost as much as all of them.
    let mut probes: HashMap<(String, String), Probe> = HashMap::new();
    let mut revisions: HashMap<String, u64> = HashMap::new();
    let mut probes_at = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Ok(()) = changes.changed() => {}
            Some(_) = probes_in_flight.join_next(), if !probes_in_flight.is_empty() => continue,
            Some((key, health)) = done_rx.recv() => {
                if let Some(health) = health {
                    states.insert(key.clone(), health);
                }
                if let Some(probe) = probes.get(&key) {
                    let (interval, target, path) = (probe.interval, probe.target, probe.path.clone());
                    slots.insert(key, Slot::DueAt(Instant::now() + interval, interval, target, path));
                } else {
                    slots.remove(&key);
                }
                continue;
            }
        }
        let version = service.version();
        if probes_at != Some(version) {
            update_probes(service, &mut probes, &mut revisions);
            probes_at = Some(version);
            slots.retain(|key, _| probes.contains_key(key));
            states.retain(|key, _| probes.contains_key(key));
        }
        let now = Instant::now();
        for probe in probes.values() {
            let due = match slots.get(&probe.key) {
                None => true,
                // A reconfigured check starts over at once.
                Some(Slot::DueAt(at, interval, target, path)) => {
                    *at <= now
                        || (*interval, *target, path.as_str()) != (probe.interval, probe.target, probe.path.as_str())
                }
                Some(Slot::InFlight) => false,
            };
            if !due {
                continue;
            }
            let probe = probe.clone();
            slots.insert(probe.key.clone(), Slot::InFlight);
            let previous = match states.get(&probe.key) {
                Some(state) => state.clone(),
                // New here: from what the replica that led before published.
                None => service
                    .read(|inner| inner.health(&probe.key.0, &probe.key.1).cloned())
                    .unwrap_or(InstanceHealth::PENDING),
            };
            let (service, client, done) = (Arc::clone(service), client.clone(), done_tx.clone());
            probes_in_flight.spawn(async move {
                let outcome = check(&client, &probe).await;
                service.metrics.count(
                    "sticky_control_health_probes_total",
                    &[("result", if outcome.is_ok() { "ok" } else { "failed" })],
                );
                let next = previous.after(outcome, probe.healthy_threshold, probe.unhealthy_threshold);
                if next.status != previous.status {
                    tracing::info!(load_balancer = %probe.key.0, instance = %probe.key.1, status = ?next.status, reason = %next.last_failure, "health changed");
                }
                // A flip may commit to a shared store: off the async workers.
                let published = {
                    let (service, key, next) = (Arc::clone(&service), probe.key.clone(), next.clone());
                    tokio::task::spawn_blocking(move || service.set_health(key, next)).await
                };
                // Not recorded: the state stays as it was, so the next probe flips it again.
                let recorded = match published {
                    Ok(Ok(())) => Some(next),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e.message, "health change not recorded");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "health change not recorded");
                        None
                    }
                };
                let _ = done.send((probe.key, recorded));
            });
        }
    }
}

/// Brings `probes` (every registered instance of every load balancer, with its check) up to
/// date: only the load balancers whose revision moved since `revisions` are looked at again.
fn update_probes(
    service: &Service,
    probes: &mut HashMap<(String, String), Probe>,
    revisions: &mut HashMap<String, u64>,
) {
    service.read(|inner| {
        let mut changed: Vec<String> = revisions
            .keys()
            .filter(|name| inner.revision(name).is_none())
            .cloned()
            .collect();
        for lb in inner.load_balancers() {
            let revision = inner.revision(&lb.name);
            if revision.is_some() && revisions.get(&lb.name).copied() != revision {
                changed.push(lb.name.clone());
            }
        }
        for name in changed {
            probes.retain(|(lb, _), _| *lb != name);
            let Some(lb) = inner.load_balancer(&name) else {
                revisions.remove(&name);
                continue;
            };
            if let Some(revision) = inner.revision(&name) {
                revisions.insert(name.clone(), revision);
            }
            let Ok((target, path)) = lb.health_check.parsed_target() else {
                continue;
            };
            let port = match target {
                HealthTarget::Http { port } | HealthTarget::Tcp { port } => port,
            };
            for id in lb.instances.iter().chain(lb.draining.keys()) {
                let Some(address) = inner.registry().resolve(id, port) else {
                    continue;
                };
                let key = (lb.name.clone(), id.clone());
                let probe = Probe {
                    key: key.clone(),
                    address,
                    target,
                    path: path.clone(),
                    timeout: Duration::from_secs(u64::from(lb.health_check.timeout)),
                    interval: Duration::from_secs(u64::from(lb.health_check.interval)),
                    healthy_threshold: lb.health_check.healthy_threshold,
                    unhealthy_threshold: lb.health_check.unhealthy_threshold,
                };
                probes.insert(key, probe);
            }
        }
    });
}

async fn check(client: &reqwest::Client, probe: &Probe) -> Result<(), String> {
    match probe.target {
        HealthTarget::Tcp { .. } => {
            match tokio::time::timeout(probe.timeout, tokio::net::TcpStream::connect(probe.address)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connection failed: {e}")),
                Err(_) => Err("connection timed out".to_owned()),
            }
        }
        HealthTarget::Http { .. } => {
            let url = format!("http://{}{}", probe.address, probe.path);
            match client.get(&url).timeout(probe.timeout).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::OK => Ok(()),
                Ok(response) => Err(format!("HTTP status {}", response.status().as_u16())),
                Err(e) if e.is_timeout() => Err("request timed out".to_owned()),
                Err(e) => Err(format!("request failed: {e}")),
            }
        }
    }
}
