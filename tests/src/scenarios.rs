//! One list of behaviour scenarios (the stickiness rules of docs/design.md §2), written once
//! against [`Proxy`] and run against both real Envoy and the testbed: the testbed is trusted only
//! where it agrees with Envoy.

use std::collections::HashSet;
use std::time::Duration;

use sticky_core::PolicyState;

use crate::STICKY_COOKIE;
use sticky_testing::fixtures::{app_cookie_policy, cookie_set, lb_cookie_policy};

/// What a scenario sees of one answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The target that answered.
    pub target: String,
    pub set_cookies: Vec<String>,
}

impl Answer {
    pub fn cookie(&self, name: &str) -> Option<String> {
        cookie_set(self.set_cookies.iter().map(String::as_str), name)
    }

    pub fn sticky(&self) -> Option<String> {
        self.cookie(STICKY_COOKIE)
    }
}

/// A proxy running the filter in front of the demo targets (`i-target1..3`).
pub trait Proxy {
    /// GET `path` with exactly `cookies` and, when given, a client-supplied routing header.
    fn get(&mut self, path: &str, cookies: &[(&str, &str)], routing_header: Option<&str>) -> Answer;
    /// Lets `duration` pass for the filter.
    fn wait(&mut self, duration: Duration);
    /// `ip:port` of target `id`.
    fn address_of(&self, id: &str) -> String;
}

pub type Check = Result<(), String>;

fn ensure(condition: bool, what: impl Into<String>) -> Check {
    if condition { Ok(()) } else { Err(what.into()) }
}

pub struct Scenario {
    pub name: &'static str,
    pub policy: Option<PolicyState>,
    pub run: fn(&mut dyn Proxy) -> Check,
}

fn lb(period: u64) -> Option<PolicyState> {
    Some(lb_cookie_policy(period))
}

fn app() -> Option<PolicyState> {
    Some(app_cookie_policy(None))
}

fn pinned(proxy: &mut dyn Proxy, cookies: &[(&str, &str)], times: usize) -> HashSet<String> {
    (0..times).map(|_| proxy.get("/", cookies, None).target).collect()
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "lb cookie: the first answer sets the cookie, which pins",
            policy: lb(300),
            run: |p| {
                let first = p.get("/", &[], None);
                let cookie = first.sticky().ok_or("no cookie on the first answer")?;
                ensure(
                    pinned(p, &[(STICKY_COOKIE, &cookie)], 10) == HashSet::from([first.target]),
                    "not pinned",
                )
            },
        },
        Scenario {
            name: "lb cookie: not honoured after its duration",
            policy: lb(1),
            run: |p| {
                let cookie = p.get("/", &[], None).sticky().ok_or("no cookie")?;
                p.wait(Duration::from_millis(2100));
                let late = p.get("/", &[(STICKY_COOKIE, &cookie)], None);
                ensure(
                    late.sticky().is_some_and(|c| c != cookie),
                    "an expired cookie got no new cookie",
                )
            },
        },
        Scenario {
            name: "lb cookie: garbage gets a new valid cookie",
            policy: lb(300),
            run: |p| {
                let answer = p.get("/", &[(STICKY_COOKIE, "garbage")], None);
                let cookie = answer.sticky().ok_or("no new cookie")?;
                ensure(
                    pinned(p, &[(STICKY_COOKIE, &cookie)], 5) == HashSet::from([answer.target]),
                    "the new cookie does not pin",
                )
            },
        },
        Scenario {
            name: "a client routing header has no effect",
            policy: lb(300),
            run: |p| {
                let first = p.get("/", &[], None);
                let cookie = first.sticky().ok_or("no cookie")?;
                let other = ["i-target1", "i-target2", "i-target3"]
                    .into_iter()
                    .find(|t| *t != first.target)
                    .unwrap_or("i-target1");
                let spoofed = p.address_of(other);
                let answers: HashSet<String> = (0..5)
                    .map(|_| p.get("/", &[(STICKY_COOKIE, &cookie)], Some(&spoofed)).target)
                    .collect();
                ensure(
                    answers == HashSet::from([first.target]),
                    format!("followed the spoofed header: {answers:?}"),
                )?;
                let unpinned: HashSet<String> = (0..9).map(|_| p.get("/", &[], Some(&spoofed)).target).collect();
                ensure(unpinned.len() > 1, "unpinned requests all went to the spoofed target")
            },
        },
        Scenario {
            name: "app cookie: stickiness starts when the target sets session, needs both cookies",
            policy: app(),
            run: |p| {
                ensure(
                    p.get("/", &[], None).sticky().is_none(),
                    "a cookie before the app set session",
                )?;
                let login = p.get("/login", &[], None);
                let session = login.cookie("session").ok_or("the app set no session")?;
                let sticky = login.sticky().ok_or("no stickiness cookie beside session")?;
                let both = [("session", session.as_str()), (STICKY_COOKIE, sticky.as_str())];
                ensure(
                    pinned(p, &both, 10) == HashSet::from([login.target]),
                    "not pinned with both cookies",
                )?;
                ensure(
                    pinned(p, &[(STICKY_COOKIE, &sticky)], 9).len() > 1,
                    "pinned without the app cookie",
                )
            },
        },
        Scenario {
            name: "app cookie: deleting session deletes the stickiness cookie",
            policy: app(),
            run: |p| {
                let login = p.get("/login", &[], None);
                let session = login.cookie("session").ok_or("no session")?;
                let sticky = login.sticky().ok_or("no stickiness cookie")?;
                let logout = p.get("/logout", &[("session", &session), (STICKY_COOKIE, &sticky)], None);
                let deleted = logout
                    .set_cookies
                    .iter()
                    .any(|c| c.starts_with(&format!("{STICKY_COOKIE}=;")) && c.contains("Max-Age=0"));
                ensure(deleted, format!("not deleted: {:?}", logout.set_cookies))
            },
        },
        Scenario {
            name: "no policy: no cookie, plain balancing",
            policy: None,
            run: |p| {
                let login = p.get("/login", &[], None);
                ensure(login.sticky().is_none(), "a stickiness cookie without a policy")?;
                ensure(
                    pinned(p, &[], 9).len() == 3,
                    "requests not spread over the three targets",
                )
            },
        },
    ]
}
