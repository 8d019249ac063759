//! Several replicas on one shared store: the two threads that keep this replica
//! (`replica::Replica`) in step — the listener, which reloads the state when another replica
//! commits, and the coordinator, which renews the leader lease and the heartbeat — and the
//! in-force wait across replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::service::Service;
use crate::store::StoreLocation;
use crate::store::postgres::{ChangeListener, Coordination};

/// A replica heard from within this many leases is alive (its followers count).
const PEER_LIVENESS_LEASES: u32 = 2;
/// How often the listener looks at the stored version even without a notification (one lost
/// with a broken connection is then caught up all the same).
const LISTEN_CHECK: Duration = Duration::from_millis(500);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts the listener and the coordinator of a replica on a shared store (nothing to do on
/// SQLite). They run on their own threads: the PostgreSQL client blocks.
pub fn start(service: &Arc<Service>, location: &StoreLocation) {
    let StoreLocation::Postgres(url) = location else {
        return;
    };
    let (listener, coordinator) = ((Arc::clone(service), url.clone()), (Arc::clone(service), url.clone()));
    let spawned = std::thread::Builder::new()
        .name("store-listener".into())
        .spawn(move || listen(&listener.0, &listener.1))
        .and_then(|_| {
            std::thread::Builder::new()
                .name("coordinator".into())
                .spawn(move || coordinate(&coordinator.0, &coordinator.1))
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the replica's threads");
    }
}

/// Reloads the state whenever another replica commits (or a check finds the store ahead).
fn listen(service: &Service, url: &str) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome: Result<(), crate::store::StoreError> = ChangeListener::connect(url).and_then(|mut listener| {
            backoff = Duration::from_millis(100);
            loop {
                // Caught up before waiting, so a change made while (re)connecting is not missed.
                if listener.stored_version()? > service.version() {
                    let snapshot = listener.load()?;
                    service.catch_up(snapshot);
                }
                service.replica.set_store_reachable(true);
                listener.wait(LISTEN_CHECK)?;
            }
        });
        if let Err(e) = outcome {
            service.replica.set_store_reachable(false);
            tracing::error!(error = %e, "lost the store's change notifications; reconnecting");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
        }
    }
}

/// Renews the leader lease (or takes it when free) and the heartbeat, every third of a lease.
/// Leadership counts from when a renewal was sent, so this replica stops leading before the
/// lease it holds can expire in the database, even when the store becomes unreachable.
fn coordinate(service: &Service, url: &str) {
    let replica = &service.replica;
    let lease = replica.config.lease;
    let period = lease / 3;
    let mut coordination: Option<Coordination> = None;
    loop {
        if service.is_stopping() {
            // `leave` gives the lease up; renewing it now would hold it past this process.
            replica.set_leading_until(None);
            return;
        }
        let sent = Instant::now();
        let outcome = (|| {
            let c = match coordination.as_mut() {
                Some(c) => c,
                None => coordination.insert(Coordination::connect(url)?),
            };
            let leads = c.lead(&replica.config.id, lease)?;
            let peers = c.heartbeat(&replica.config.id, &replica.config.url, lease * PEER_LIVENESS_LEASES)?;
            Ok::<_, crate::store::StoreError>((leads, peers))
        })();
        match outcome {
            Ok((leads, peers)) => {
                let was = replica.is_leader();
                // A margin for the clocks' rates: step down a tenth of a lease early.
                replica.set_leading_until(leads.then(|| sent + lease - lease / 10));
                if leads != was {
                    tracing::info!(replica = %replica.config.id, leads, "leadership changed");
                }
                replica.set_peers(peers);
            }
            Err(e) => {
                coordination = None;
                tracing::warn!(error = %e, "cannot renew the lease or heartbeat");
            }
        }
        std::thread::sleep(period.saturating_sub(sent.elapsed()));
        // A lease not renewed in time lapses here: the leader-only tasks stop.
        if !replica.is_leader() {
            replica.set_leading_until(None);
        }
    }
}

/// A clean stop of a replica on a shared store: gives the lease up (another replica takes it
/// at once rather than after it expires) and leaves the replicas' list.
pub fn leave(service: &Service, location: &StoreLocation) {
    let StoreLocation::Postgres(url) = location else {
        return;
    };
    let id = &service.replica.config.id;
    let outcome = Coordination::connect(url).and_then(|mut c| {
        c.step_down(id)?;
        c.leave(id)
    });
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not give the lease up; another replica takes it when it expires");
    }
}

/// Waits until every live follower of this replica and of every other live replica holds
/// `version` (filters) and `endpoints_version` (Envoys), at most `limit`; on time-out or
/// refusal, the followers (and replicas) still behind. A replica that refuses connections is
/// gone, and its followers with it: they follow another replica, which serves them the latest
/// state as they reconnect.
pub async fn wait_in_force(
    service: &Service,
    client: &reqwest::Client,
    token: Option<&str>,
    version: u64,
    endpoints_version: u64,
    limit: Duration,
) -> Result<(), Vec<String>> {
    let local = service.wait_until_current(version, endpoints_version, limit);
    let peers = service.replica.peers().into_iter().map(|peer| async move {
        let url = format!(
            "{}/v1/in-force?version={version}&endpoints_version={endpoints_version}&wait_ms={}",
            peer.url.trim_end_matches('/'),
            limit.as_millis()
        );
        let mut request = client.get(&url).timeout(limit + Duration::from_secs(1));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(answer) if answer.status() == reqwest::StatusCode::NO_CONTENT => Ok(()),
            Ok(answer) => {
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                Err(match status {
                    reqwest::StatusCode::CONFLICT => text
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(|l| format!("replica {}: {l}", peer.id))
                        .collect(),
                    _ => vec![format!("replica {} answered {status}: {}", peer.id, text.trim())],
                })
            }
            Err(e) if e.is_connect() => {
                tracing::info!(replica = %peer.id, "a replica is gone; its followers follow another");
                Ok(())
            }
            Err(e) => Err(vec![format!("replica {} unreachable: {e}", peer.id)]),
        }
    });
    let (local, peers) = tokio::join!(local, futures::future::join_all(peers));
    let mut lagging = local.err().unwrap_or_default();
    for outcome in peers {
        lagging.extend(outcome.err().unwrap_or_default());
    }
    if lagging.is_empty() { Ok(()) } else { Err(lagging) }
}
