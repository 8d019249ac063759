//! Propagation through the live system (control service + Envoy following it), over xDS and,
//! for comparison, over the REST EDS of a hand-written bootstrap:
//! - policy: from SetLoadBalancerPoliciesOfListener's call to the first request Envoy handles
//!   under the new policy (a cookie issued, or no longer issued);
//! - registration: from RegisterInstancesWithLoadBalancer's call to the first request reaching
//!   the new target;
//! - listener creation (xDS only; a hand-written bootstrap has its listener fixed): from
//!   CreateLoadBalancerListeners's call to the first request the new listener serves;
//! - target death: from a target's death to its session being re-pinned, and to the health
//!   check taking it out of service.

use std::time::{Duration, Instant};

use anyhow::bail;

use sticky_envoy::{EnvoyBootstrap, EnvoyProcess};

use crate::live::Live;
use crate::{LOAD_BALANCER, STICKY_COOKIE, TARGET_IDS};

/// One kind of change measured over trials on one kind of Envoy configuration.
#[derive(Debug, Clone)]
pub struct Lags {
    /// What changed, and how Envoy is configured.
    pub what: String,
    /// API call sent -> first request showing the change, one per trial, sorted.
    pub effect: Vec<Duration>,
    /// API call sent -> answered (the service answers once every follower holds the change).
    pub answered: Vec<Duration>,
    /// Requests sent after the answer that did not show the change yet.
    pub stale_after_answer: usize,
}

impl Lags {
    fn new(what: &str) -> Self {
        Self {
            what: what.to_owned(),
            effect: Vec::new(),
            answered: Vec::new(),
            stale_after_answer: 0,
        }
    }

    fn sorted(mut self) -> Self {
        self.effect.sort();
        self.answered.sort();
        self
    }
}

#[derive(Debug, Clone)]
pub struct Propagation {
    /// Policy, registration and listener creation, over xDS and over the REST EDS of a
    /// hand-written bootstrap, in one run.
    pub lags: Vec<Lags>,
    pub repinned_after: Duration,
    /// Requests that failed while the session moved.
    pub failed_while_repinning: u32,
    /// None when not waited for.
    pub out_of_service_after: Option<Duration>,
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Measures `trials` policy flips, registrations and listener creations on an Envoy
/// configured over xDS, the same policy flips and registrations on an Envoy with a hand-written
/// bootstrap (REST EDS, polled every 100 ms), then one target death (waiting for the health
/// check too when `wait_health` is set).
pub fn measure(trials: usize, wait_health: bool) -> anyhow::Result<Propagation> {
    let mut lags = Vec::new();
    {
        let live = Live::start(1, &[]);
        live.create_lb_cookie_policy("LBCookie", 300);
        lags.push(policy_lags(&live, trials, "policy change, xDS")?);
        lags.push(registration_lags(&live, trials, "registration, xDS")?);
        lags.push(listener_lags(&live, trials)?);
    }
    {
        // REST EDS carries no token: over TLS, Envoy presents its certificate.
        let mut live = Live::start_over_tls(0, &[]);
        let shell = crate::shell_under_test().build()?;
        let mut bootstrap = sticky_envoy::XdsBootstrap::new(shell.clone(), live.control.address(), "rest-eds", 0);
        crate::xds::envoy_credentials(&live.control, &mut bootstrap);
        let bootstrap = EnvoyBootstrap::following(
            shell,
            live.control.address(),
            bootstrap.tls,
            LOAD_BALANCER,
            80,
            "rest-eds",
        )?;
        let dir = tempfile::tempdir()?;
        live.envoys.push(EnvoyProcess::start(&bootstrap, dir.path(), 1)?);
        live.create_lb_cookie_policy("LBCookie", 300);
        lags.push(policy_lags(
            &live,
            trials,
            "policy change, REST EDS (hand-written bootstrap)",
        )?);
        lags.push(registration_lags(
            &live,
            trials,
            "registration, REST EDS (hand-written bootstrap)",
        )?);
    }

    // Target death, with an LB cookie session on the target.
    let mut live = Live::start(1, &[]);
    live.create_lb_cookie_policy("LBCookie", 300);
    live.set_policy(Some("LBCookie"));
    let first = live.get(0, "/", &[]);
    let (cookie, victim) = (first.sticky_cookie().unwrap_or_default(), first.target());
    live.targets.stop(&victim);
    let died = Instant::now();
    let mut failed_while_repinning = 0;
    let repinned_after = loop {
        match live.try_get(0, "/", &[(STICKY_COOKIE, &cookie)]) {
            Ok(reply) if reply.status == 200 && reply.target() != victim && reply.sticky_cookie().is_some() => {
                break died.elapsed();
            }
            Ok(reply) if reply.status == 200 => {}
            _ => failed_while_repinning += 1,
        }
        if died.elapsed() > Duration::from_secs(30) {
            bail!("the session was not re-pinned within 30 s");
        }
    };
    let out_of_service_after = if wait_health {
        loop {
            if live.instance_state(&victim) == "OutOfService" {
                break Some(died.elapsed());
            }
            if died.elapsed() > Duration::from_secs(30) {
                bail!("the health check did not take the dead target out of service within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        None
    };
    live.targets.restart(&victim)?;
    Ok(Propagation {
        lags,
        repinned_after,
        failed_while_repinning,
        out_of_service_after,
    })
}

/// Requests through Envoy 0 until `shows` holds of a reply; the time from `sent`, and how many
/// replies did not show it.
fn until(
    live: &Live,
    sent: Instant,
    mut shows: impl FnMut(&crate::Reply) -> bool,
) -> anyhow::Result<(Duration, usize)> {
    let mut stale = 0;
    loop {
        if let Ok(reply) = live.try_get(0, "/", &[])
            && reply.status == 200
            && shows(&reply)
        {
            return Ok((sent.elapsed(), stale));
        }
        stale += 1;
        if sent.elapsed() > Duration::from_secs(5) {
            bail!("the change did not reach Envoy within 5 s");
        }
    }
}

/// SetLoadBalancerPoliciesOfListener, on and off: until a request gets (or no longer gets) a cookie.
pub fn policy_lags(live: &Live, trials: usize, what: &str) -> anyhow::Result<Lags> {
    let mut lags = Lags::new(what);
    for trial in 0..trials {
        let enable = trial % 2 == 0;
        let sent = Instant::now();
        live.set_policy(enable.then_some("LBCookie"));
        lags.answered.push(sent.elapsed());
        let (lag, stale) = until(live, sent, |reply| reply.sticky_cookie().is_some() == enable)?;
        lags.effect.push(lag);
        lags.stale_after_answer += stale;
        std::thread::sleep(Duration::from_millis(20));
    }
    live.set_policy(None);
    Ok(lags.sorted())
}

/// RegisterInstancesWithLoadBalancer of a target deregistered before: until a request reaches
/// it (round robin over the three, no policy).
pub fn registration_lags(live: &Live, trials: usize, what: &str) -> anyhow::Result<Lags> {
    let mut lags = Lags::new(what);
    let moving = TARGET_IDS[2];
    for _ in 0..trials {
        live.call(
            "DeregisterInstancesFromLoadBalancer",
            &[("Instances.member.1.InstanceId", moving)],
        );
        let sent = Instant::now();
        live.call(
            "RegisterInstancesWithLoadBalancer",
            &[("Instances.member.1.InstanceId", moving)],
        );
        lags.answered.push(sent.elapsed());
        let (lag, _) = until(live, sent, |reply| reply.target() == moving)?;
        lags.effect.push(lag);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(lags.sorted())
}

/// CreateLoadBalancerListeners on a new port: until the new listener serves a request; then
/// DeleteLoadBalancerListeners.
fn listener_lags(live: &Live, trials: usize) -> anyhow::Result<Lags> {
    let mut lags = Lags::new("listener creation, xDS");
    let base = live.envoys[0].url();
    let served = |port: u16| -> anyhow::Result<String> {
        let (host, first) = base.trim_start_matches("http://").rsplit_once(':').unwrap_or_default();
        let first: u16 = first.parse()?;
        Ok(format!("http://{host}:{}", first - 80 + port))
    };
    let agent = crate::agent();
    for trial in 0..trials {
        // Ports 81 and 82 in turn (the pool's free ports cover the first Envoy's 80–83).
        let port = 81 + u16::try_from(trial % 2)?;
        let url = served(port)?;
        let text = port.to_string();
        let sent = Instant::now();
        live.call(
            "CreateLoadBalancerListeners",
            &[
                ("Listeners.member.1.Protocol", "HTTP"),
                ("Listeners.member.1.LoadBalancerPort", &text),
                ("Listeners.member.1.InstancePort", "80"),
            ],
        );
        lags.answered.push(sent.elapsed());
        let mut stale = 0;
        loop {
            if crate::get(&agent, &url, "/", &[], &[]).is_ok_and(|r| r.status == 200) {
                lags.effect.push(sent.elapsed());
                break;
            }
            stale += 1;
            if sent.elapsed() > Duration::from_secs(5) {
                bail!("listener {port} was not served within 5 s");
            }
        }
        lags.stale_after_answer += stale;
        live.call("DeleteLoadBalancerListeners", &[("LoadBalancerPorts.member.1", &text)]);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(lags.sorted())
}

impl Lags {
    /// A Markdown table of `lags`, one row each.
    pub fn table(lags: &[Lags]) -> String {
        let mut out = String::from(
            "| change (Envoy configured by) | trials | API call → first request showing it: p50 / p99 / max ms | API call → answered: p50 / p99 ms | requests after the answer not showing it yet |\n|---|---:|---:|---:|---:|\n",
        );
        for lags in lags {
            out.push_str(&format!(
                "| {} | {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {} |\n",
                lags.what,
                lags.effect.len(),
                ms(percentile(&lags.effect, 0.5)),
                ms(percentile(&lags.effect, 0.99)),
                ms(lags.effect.last().copied().unwrap_or_default()),
                ms(percentile(&lags.answered, 0.5)),
                ms(percentile(&lags.answered, 0.99)),
                lags.stale_after_answer,
            ));
        }
        out
    }
}

impl Propagation {
    pub fn markdown(&self) -> String {
        let mut out = Lags::table(&self.lags);
        out.push('\n');
        out.push_str(&format!(
            "- Target death → its session re-pinned to another target: {:.1} ms ({} failed requests meanwhile)\n",
            ms(self.repinned_after),
            self.failed_while_repinning
        ));
        if let Some(d) = self.out_of_service_after {
            out.push_str(&format!(
                "- Target death → health check OutOfService (interval 5 s, UnhealthyThreshold 2): {:.2} s\n",
                d.as_secs_f64()
            ));
        }
        out
    }
}
