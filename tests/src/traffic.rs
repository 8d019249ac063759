//! Sticky clients for the fault tests and the soak: each keeps its cookies like a browser, its
//! connections alive (one agent per client), logs in when it has no app session, and records
//! every request it sends (method, send and answer times, status, answering target, and the
//! stickiness cookie it carried with the target whose answer set it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{STICKY_COOKIE, agent, request};

/// How each client behaves.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Pause between two requests of one client.
    pub pause: Duration,
    /// The client logs in again (a new app session) every this many requests.
    pub relogin_every: u64,
    /// Every this many requests is a POST (not idempotent); the others are GETs. None: GETs only.
    pub post_every: Option<u64>,
    /// What the requests other than `/login` ask for (e.g. `/?delay_ms=200` to keep each in
    /// flight at the target for a while).
    pub path: &'static str,
    /// The client forgets every cookie (a new browser, a new sticky session) every this many
    /// requests. None: it keeps them.
    pub new_browser_every: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub client: usize,
    pub method: &'static str,
    pub sent: Instant,
    pub answered: Instant,
    /// None: a transport error.
    pub status: Option<u16>,
    pub target: Option<String>,
    /// The stickiness cookie the request carried, the target whose answer set it, and when.
    pub cookie_sent: Option<String>,
    pub cookie_target: Option<String>,
    pub cookie_received: Option<Instant>,
    /// For a failure: what Envoy or the transport said.
    pub error: Option<String>,
}

impl Sample {
    /// RFC 9110's idempotent methods: a retry cannot do twice what the client asked once.
    pub fn idempotent(&self) -> bool {
        matches!(self.method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE")
    }

    pub fn failed(&self) -> bool {
        self.status.is_none_or(|code| code >= 500)
    }

    pub fn latency(&self) -> Duration {
        self.answered.duration_since(self.sent)
    }
}

/// A client's cookies, kept like a browser keeps them (set, replaced, deleted).
#[derive(Debug, Default)]
pub struct Jar(pub HashMap<String, String>);

impl Jar {
    pub fn take(&mut self, set_cookies: &[String]) {
        for header in set_cookies {
            let Some((name, rest)) = header.split_once('=') else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or_default();
            let lower = header.to_ascii_lowercase();
            let deleted = value.is_empty() || lower.contains("max-age=0") || lower.contains("expires=thu, 01 jan 1970");
            if deleted {
                self.0.remove(name.trim());
            } else {
                self.0.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }
}

/// Clients sending through `url` until [`Traffic::stop`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(clients: usize, url: &str, plan: Plan) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let (stop, samples, url) = (Arc::clone(&stop), Arc::clone(&samples), url.to_owned());
                std::thread::spawn(move || client_loop(client, &url, plan, &stop, &samples))
            })
            .collect();
        Self { stop, samples, threads }
    }

    /// What was recorded so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The target each client's current stickiness cookie names (its last request's).
    pub fn pinned(&self) -> HashMap<usize, String> {
        let mut pinned = HashMap::new();
        for sample in self.samples() {
            match sample.cookie_target {
                Some(target) => pinned.insert(sample.client, target),
                None => pinned.remove(&sample.client),
            };
        }
        pinned
    }

    /// Stops the clients (each finishes the request it is sending) and returns every sample.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.samples.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn client_loop(client: usize, url: &str, plan: Plan, stop: &AtomicBool, samples: &Mutex<Vec<Sample>>) {
    let agent = agent();
    let mut jar = Jar::default();
    // The target whose answer set the current stickiness cookie, and when.
    let mut cookie_origin: Option<(String, Instant)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if plan
            .new_browser_every
            .is_some_and(|every| n > 0 && n.is_multiple_of(every))
        {
            jar = Jar::default();
            cookie_origin = None;
        }
        let (method, path) = if !jar.0.contains_key("session") || n.is_multiple_of(plan.relogin_every) {
            ("GET", "/login")
        } else if plan.post_every.is_some_and(|every| n.is_multiple_of(every)) {
            ("POST", plan.path)
        } else {
            ("GET", plan.path)
        };
        let cookie_sent = jar.0.get(STICKY_COOKIE).cloned();
        let (cookie_target, cookie_received) = match &cookie_origin {
            Some((target, at)) => (Some(target.clone()), Some(*at)),
            None => (None, None),
        };
        let sent = Instant::now();
        let result = request(&agent, method, url, path, &jar.pairs(), &[]);
        let answered = Instant::now();
        let sample = match result {
            Ok(reply) => {
                let target = (reply.status < 500)
                    .then(|| serde_json::from_str::<serde_json::Value>(&reply.body).ok())
                    .flatten()
                    .and_then(|v| v["target"].as_str().map(str::to_owned));
                jar.take(&reply.set_cookies);
                if reply.set_cookie(STICKY_COOKIE).is_some() {
                    cookie_origin = match (jar.0.contains_key(STICKY_COOKIE), &target) {
                        (true, Some(t)) => Some((t.clone(), answered)),
                        _ => None,
                    };
                }
                let error = (reply.status >= 500).then(|| reply.body.chars().take(200).collect());
                Sample {
                    client,
                    method,
                    sent,
                    answered,
                    status: Some(reply.status),
                    target,
                    cookie_sent,
                    cookie_target,
                    cookie_received,
                    error,
                }
            }
            Err(e) => Sample {
                client,
                method,
                sent,
                answered,
                status: None,
                target: None,
                cookie_sent,
                cookie_target,
                cookie_received,
                error: Some(e),
            },
        };
        samples.lock().unwrap_or_else(PoisonError::into_inner).push(sample);
        n += 1;
        std::thread::sleep(plan.pause);
    }
}
