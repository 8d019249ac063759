//! One list of behaviour scenarios (the stickiness rules of docs/design.md §2), written once
//! against [`Proxy`] and run against both real Envoy and the testbed: the testbed is trusted only
//! where it agrees with Envoy.

use std::collections::HashSet;
use std::time::Duration;

use sticky_core::{FilterState, PolicyState};

use crate::{SESSION_HEADER, STICKY_COOKIE};
use sticky_testing::fixtures::{app_cookie_policy, cookie_set, lb_cookie_policy};

/// What a scenario sees of one answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The target that answered.
    pub target: String,
    pub set_cookies: Vec<String>,
    /// The session header the answer carries.
    pub session: Option<String>,
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
    /// GET `path` without cookies, with these request headers.
    fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer;
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
    /// What the scenario changes in the listener's state beyond the policy (cookie attributes,
    /// session header, draining targets).
    pub adjust: fn(&mut FilterState),
    pub run: fn(&mut dyn Proxy) -> Check,
}

/// No change to the state.
fn as_is(_: &mut FilterState) {}

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
            adjust: as_is,
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
            adjust: as_is,
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
            adjust: as_is,
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
            adjust: as_is,
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
            adjust: as_is,
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
            adjust: as_is,
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
            adjust: as_is,
            run: |p| {
                let login = p.get("/login", &[], None);
                ensure(login.sticky().is_none(), "a stickiness cookie without a policy")?;
                ensure(
                    pinned(p, &[], 9).len() == 3,
                    "requests not spread over the three targets",
                )
            },
        },
        Scenario {
            name: "lb cookie with an absolute lifetime: the session ends then, however active",
            policy: Some(PolicyState::LbCookie {
                expiration_period: 300,
                max_lifetime: 3,
            }),
            adjust: as_is,
            // Whole seconds: 1 s in, the session is at most 2 s old; 3.1 s in, at least 3 s.
            run: |p| {
                let first = p.get("/", &[], None);
                let cookie = first.sticky().ok_or("no cookie")?;
                p.wait(Duration::from_millis(1000));
                let active = p.get("/", &[(STICKY_COOKIE, &cookie)], None);
                ensure(active.target == first.target, "not pinned within the lifetime")?;
                ensure(
                    active.sticky().is_none(),
                    "a refresh within the lifetime (the idle period is far)",
                )?;
                p.wait(Duration::from_millis(2100));
                let over = p.get("/", &[(STICKY_COOKIE, &cookie)], None);
                ensure(
                    over.sticky().is_some_and(|c| c != cookie),
                    "the session went on past its absolute lifetime",
                )
            },
        },
        Scenario {
            name: "cors twin: both cookies issued, the twin SameSite=None; Secure, either pins",
            policy: lb(300),
            adjust: |s| s.cookie.cors_twin = true,
            run: |p| {
                let first = p.get("/", &[], None);
                let twin_name = format!("{STICKY_COOKIE}CORS");
                let twin = first.cookie(&twin_name).ok_or("no CORS twin")?;
                let twin_header = first
                    .set_cookies
                    .iter()
                    .find(|c| c.starts_with(&format!("{twin_name}=")))
                    .cloned()
                    .unwrap_or_default();
                ensure(
                    twin_header.contains("; Secure") && twin_header.contains("SameSite=None"),
                    format!("the twin is not SameSite=None; Secure: {twin_header}"),
                )?;
                ensure(first.sticky().is_some(), "no cookie beside the twin")?;
                ensure(
                    pinned(p, &[(twin_name.as_str(), &twin)], 6) == HashSet::from([first.target]),
                    "the twin alone does not pin",
                )
            },
        },
        Scenario {
            name: "cookie attributes: Domain, Path, Secure, SameSite=None and Partitioned as set",
            policy: lb(300),
            adjust: |s| {
                s.cookie.domain = Some("example.com".to_owned());
                s.cookie.secure = true;
                s.cookie.same_site = sticky_core::SameSite::None;
                s.cookie.partitioned = true;
            },
            run: |p| {
                let first = p.get("/", &[], None);
                let header = first
                    .set_cookies
                    .iter()
                    .find(|c| c.starts_with(&format!("{STICKY_COOKIE}=")))
                    .cloned()
                    .ok_or("no cookie")?;
                for attribute in [
                    "; Domain=example.com",
                    "; Path=/",
                    "; Secure",
                    "; SameSite=None",
                    "; Partitioned",
                ] {
                    ensure(header.contains(attribute), format!("{header} lacks {attribute}"))?;
                }
                Ok(())
            },
        },
        Scenario {
            name: "session header: a client without cookies keeps its session in the header",
            policy: lb(300),
            adjust: |s| s.session_header = Some(SESSION_HEADER.to_owned()),
            run: |p| {
                let first = p.get_with("/", &[]);
                let session = first.session.clone().ok_or("no session header on the first answer")?;
                let answers: HashSet<String> = (0..6)
                    .map(|_| p.get_with("/", &[(SESSION_HEADER, &session)]).target)
                    .collect();
                ensure(
                    answers == HashSet::from([first.target]),
                    format!("the header does not pin: {answers:?}"),
                )?;
                let forged = p.get_with("/", &[(SESSION_HEADER, "garbage")]);
                ensure(
                    forged.session.is_some_and(|s| s != session),
                    "a forged header got no new session",
                )
            },
        },
        Scenario {
            name: "draining target: no new session is placed on it",
            policy: lb(300),
            adjust: |s| {
                if let Some(first) = s.targets.first_mut() {
                    first.draining = true;
                }
            },
            run: |p| {
                let answers: Vec<Answer> = (0..9).map(|_| p.get("/", &[], None)).collect();
                let targets: HashSet<&str> = answers.iter().map(|a| a.target.as_str()).collect();
                ensure(
                    targets == HashSet::from(["i-target2", "i-target3"]),
                    format!("new sessions went to {targets:?}"),
                )?;
                ensure(
                    answers.iter().all(|a| a.sticky().is_some()),
                    "a new session without a cookie",
                )
            },
        },
    ]
}
