//! The stickiness rules of docs/design.md §2, as tables.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::codec::{Binding, CookieContent, PolicyKind};
use crate::error::{Rejection, StateError};
use crate::listener::{CompiledListener, CookieStatus, RequestDecision, ResponseOutcome, Unreachable};
use crate::plugin::UpstreamReport;
use crate::state::{FilterState, PolicyState, SameSite};
use crate::testing::{
    app_cookie_policy, cookie_header, cookie_set, filter_state, key_ring, lb_cookie_policy, ring_state, targets,
};

const NOW: u64 = 1_700_000_000;
const LB: &str = "terraform-balancer";
const T1: &str = "127.0.0.1:9001";
const T2: &str = "127.0.0.1:9002";
const T3: &str = "127.0.0.1:9003";

fn state(policy: Option<PolicyState>) -> FilterState {
    FilterState {
        version: 7,
        // Key 1 is retired (still opens), key 2 seals.
        ..filter_state(
            policy,
            targets(&[T1, T2, T3], &[T3]),
            ring_state(&[(1, 11), (2, 22)], 2),
        )
    }
}

fn listener(policy: Option<PolicyState>) -> CompiledListener {
    CompiledListener::compile(&state(policy)).unwrap()
}

fn nonce() -> Option<[u8; 12]> {
    Some(rand_nonce())
}

fn rand_nonce() -> [u8; 12] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    n
}

/// Seals a cookie directly, for cases no response would produce.
fn forge(
    kind: PolicyKind,
    key: (u16, u8),
    target: &str,
    issued_at: u64,
    expires_at: u64,
    lb: &str,
    port: u16,
) -> String {
    let ring = key_ring(&[key], key.0);
    let binding = Binding::new(kind, port, lb).unwrap();
    ring.seal(
        &binding,
        &CookieContent {
            target_id: target,
            issued_at,
            expires_at,
            session_start: issued_at,
        },
        rand_nonce(),
    )
    .unwrap()
}

fn lb_cookie(target: &str, issued_at: u64, expires_at: u64) -> String {
    forge(PolicyKind::LbCookie, (2, 22), target, issued_at, expires_at, LB, 80)
}

/// The value of the stickiness cookie in a `Set-Cookie` header.
fn value_of(set_cookie: &str) -> String {
    cookie_set([set_cookie], "AWSELB").unwrap()
}

fn header(cookies: &[(&str, &str)]) -> Vec<u8> {
    cookie_header(cookies).into_bytes()
}

/// Runs a whole exchange: request with `cookies`, response from `upstream` with `set_cookies`.
fn exchange(
    l: &CompiledListener,
    cookies: &[(&str, &str)],
    upstream: &str,
    set_cookies: &[&str],
    now: u64,
) -> (RequestDecision, ResponseOutcome, Option<String>) {
    let header = header(cookies);
    let request = l.on_request((!cookies.is_empty()).then_some(header.as_slice()), now);
    let response = l.on_response(
        &request,
        Some(upstream.as_bytes()),
        set_cookies.iter().map(|s| s.as_bytes()),
        now,
        nonce,
    );
    (request, response.outcome, response.set_cookie)
}

/// What the route's upstream header reports (`ip:port` and Envoy's response flags).
fn from(value: &str) -> Option<UpstreamReport<'_>> {
    Some(UpstreamReport::parse(value.as_bytes()))
}

fn pinned_address(l: &CompiledListener, d: &RequestDecision) -> Option<String> {
    d.pinned.map(|i| l.target(i).unwrap().address.to_string())
}

#[test]
fn lb_cookie_request_table() {
    let l = listener(Some(lb_cookie_policy(600)));
    let valid = lb_cookie("i-1", NOW - 10, NOW + 590);
    let long = lb_cookie("i-0123456789abcdef0", NOW - 10, NOW + 590);
    let retired = forge(PolicyKind::LbCookie, (1, 11), "i-2", NOW - 10, NOW + 590, LB, 80);
    let mut tampered = URL_SAFE_NO_PAD.decode(&valid).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    let tampered = URL_SAFE_NO_PAD.encode(tampered);
    let cases: Vec<(&str, String, Result<&str, Rejection>)> = vec![
        ("valid", valid.clone(), Ok(T1)),
        ("retired key still accepted", retired, Ok(T2)),
        (
            "expired by its sealed expiry",
            lb_cookie("i-1", NOW - 700, NOW - 100),
            Err(Rejection::Expired),
        ),
        (
            "expired exactly now",
            lb_cookie("i-1", NOW - 600, NOW),
            Err(Rejection::Expired),
        ),
        (
            "older than the policy's period",
            lb_cookie("i-1", NOW - 601, 0),
            Err(Rejection::Expired),
        ),
        ("tampered", tampered, Err(Rejection::Forged)),
        (
            "truncated",
            long[..(long.len() / 4 - 1) * 4].to_owned(),
            Err(Rejection::Forged),
        ),
        (
            "truncated mid-group",
            valid[..valid.len() - 1].to_owned(),
            Err(Rejection::Malformed),
        ),
        ("garbage", "garbage!".into(), Err(Rejection::Malformed)),
        ("empty", String::new(), Err(Rejection::Malformed)),
        (
            "wrong key",
            forge(PolicyKind::LbCookie, (2, 99), "i-1", NOW, NOW + 600, LB, 80),
            Err(Rejection::Forged),
        ),
        (
            "key unknown",
            forge(PolicyKind::LbCookie, (9, 22), "i-1", NOW, NOW + 600, LB, 80),
            Err(Rejection::UnknownKey),
        ),
        (
            "foreign load balancer",
            forge(PolicyKind::LbCookie, (2, 22), "i-1", NOW, NOW + 600, "other", 80),
            Err(Rejection::Forged),
        ),
        (
            "foreign listener",
            forge(PolicyKind::LbCookie, (2, 22), "i-1", NOW, NOW + 600, LB, 443),
            Err(Rejection::Forged),
        ),
        (
            "wrong policy kind",
            forge(PolicyKind::AppCookie, (2, 22), "i-1", NOW, NOW + 600, LB, 80),
            Err(Rejection::Forged),
        ),
        (
            "unknown target",
            lb_cookie("i-9", NOW, NOW + 600),
            Err(Rejection::UnknownTarget),
        ),
        (
            "unhealthy target",
            lb_cookie("i-3", NOW, NOW + 600),
            Err(Rejection::UnhealthyTarget),
        ),
    ];
    for (name, value, expected) in cases {
        let header = header(&[("other", "1"), ("AWSELB", &value)]);
        let decision = l.on_request(Some(&header), NOW);
        match expected {
            Ok(address) => assert_eq!(pinned_address(&l, &decision).as_deref(), Some(address), "{name}"),
            Err(reason) => {
                assert_eq!(decision.pinned, None, "{name}");
                assert!(
                    matches!(decision.cookie, CookieStatus::Rejected { reason: r, .. } if r == reason),
                    "{name}: {:?}",
                    decision.cookie
                );
            }
        }
    }
}

#[test]
fn lb_cookie_first_response_assigns_the_answering_target() {
    let l = listener(Some(lb_cookie_policy(600)));
    let (request, outcome, set_cookie) = exchange(&l, &[], T2, &[], NOW);
    assert_eq!(request.pinned, None);
    assert_eq!(outcome, ResponseOutcome::Assigned);
    let set_cookie = set_cookie.unwrap();
    assert!(set_cookie.contains("Max-Age=600"), "{set_cookie}");
    let (request, outcome, set_cookie) = exchange(&l, &[("AWSELB", &value_of(&set_cookie))], T2, &[], NOW + 1);
    assert_eq!(pinned_address(&l, &request).as_deref(), Some(T2));
    assert_eq!(
        (outcome, set_cookie),
        (ResponseOutcome::Unchanged, None),
        "a fresh cookie is not refreshed"
    );
}

#[test]
fn lb_cookie_expiry_slides_after_a_quarter_of_the_period() {
    let l = listener(Some(lb_cookie_policy(600)));
    let value = lb_cookie("i-1", NOW - 149, NOW + 451);
    let (_, outcome, _) = exchange(&l, &[("AWSELB", &value)], T1, &[], NOW);
    assert_eq!(outcome, ResponseOutcome::Unchanged);
    let (_, outcome, set_cookie) = exchange(&l, &[("AWSELB", &value)], T1, &[], NOW + 1);
    assert_eq!(outcome, ResponseOutcome::Refreshed);
    let refreshed = value_of(&set_cookie.unwrap());
    // The refreshed cookie is valid a whole period after the refresh.
    let later = l.on_request(Some(&header(&[("AWSELB", &refreshed)])), NOW + 590);
    assert_eq!(pinned_address(&l, &later).as_deref(), Some(T1));
}

#[test]
fn lb_cookie_invalid_cookies_get_a_new_target_and_cookie() {
    let l = listener(Some(lb_cookie_policy(600)));
    for (name, value, outcome) in [
        ("garbage", "garbage".to_owned(), ResponseOutcome::Assigned),
        (
            "expired",
            lb_cookie("i-1", NOW - 700, NOW - 100),
            ResponseOutcome::Assigned,
        ),
        (
            "deregistered target",
            lb_cookie("i-9", NOW, NOW + 600),
            ResponseOutcome::Repinned,
        ),
        (
            "unhealthy target",
            lb_cookie("i-3", NOW, NOW + 600),
            ResponseOutcome::Repinned,
        ),
    ] {
        let (request, got, set_cookie) = exchange(&l, &[("AWSELB", &value)], T2, &[], NOW);
        assert_eq!(request.pinned, None, "{name}");
        assert_eq!(got, outcome, "{name}");
        let fresh = value_of(&set_cookie.unwrap());
        let next = l.on_request(Some(&header(&[("AWSELB", &fresh)])), NOW + 1);
        assert_eq!(
            pinned_address(&l, &next).as_deref(),
            Some(T2),
            "{name}: the new cookie pins to the new target"
        );
    }
}

#[test]
fn lb_cookie_session_when_period_is_zero() {
    let l = listener(Some(lb_cookie_policy(0)));
    let (_, _, set_cookie) = exchange(&l, &[], T1, &[], NOW);
    let set_cookie = set_cookie.unwrap();
    assert!(
        !set_cookie.contains("Max-Age") && !set_cookie.contains("Expires"),
        "{set_cookie}"
    );
    let much_later = l.on_request(Some(&header(&[("AWSELB", &value_of(&set_cookie))])), NOW + 86_400 * 365);
    assert_eq!(pinned_address(&l, &much_later).as_deref(), Some(T1));
    let (_, outcome, _) = exchange(&l, &[("AWSELB", &value_of(&set_cookie))], T1, &[], NOW + 86_400);
    assert_eq!(
        outcome,
        ResponseOutcome::Unchanged,
        "session cookies are never refreshed"
    );
}

#[test]
fn lb_cookie_first_valid_of_several_wins() {
    let l = listener(Some(lb_cookie_policy(600)));
    let header = header(&[("AWSELB", "junk"), ("AWSELB", &lb_cookie("i-2", NOW, NOW + 600))]);
    assert_eq!(
        pinned_address(&l, &l.on_request(Some(&header), NOW)).as_deref(),
        Some(T2)
    );
}

#[test]
fn lb_cookie_answer_from_an_unknown_or_unhealthy_upstream_issues_nothing() {
    let l = listener(Some(lb_cookie_policy(600)));
    let (_, outcome, set_cookie) = exchange(&l, &[], "127.0.0.1:1", &[], NOW);
    assert_eq!((outcome, set_cookie), (ResponseOutcome::UnknownUpstream, None));
    let (_, outcome, set_cookie) = exchange(&l, &[], T3, &[], NOW);
    assert_eq!((outcome, set_cookie), (ResponseOutcome::UnhealthyUpstream, None));
    let request = l.on_request(None, NOW);
    let response = l.on_response(&request, None, [], NOW, nonce);
    assert_eq!(
        response.outcome,
        ResponseOutcome::UnknownUpstream,
        "local replies have no upstream"
    );
    let response = l.on_response(&request, Some(T1.as_bytes()), [], NOW, || None);
    assert_eq!(
        (response.outcome, response.set_cookie),
        (ResponseOutcome::NoNonce, None)
    );
}

#[test]
fn lb_cookie_pinned_target_that_did_not_answer_moves_the_session() {
    let l = listener(Some(lb_cookie_policy(600)));
    let (request, outcome, set_cookie) = exchange(&l, &[("AWSELB", &lb_cookie("i-1", NOW, NOW + 600))], T2, &[], NOW);
    assert_eq!(pinned_address(&l, &request).as_deref(), Some(T1));
    assert_eq!(outcome, ResponseOutcome::Repinned);
    let next = l.on_request(Some(&header(&[("AWSELB", &value_of(&set_cookie.unwrap()))])), NOW);
    assert_eq!(pinned_address(&l, &next).as_deref(), Some(T2));
}

#[test]
fn no_policy_never_pins_nor_sets_cookies() {
    let l = listener(None);
    let (request, outcome, set_cookie) = exchange(
        &l,
        &[("AWSELB", &lb_cookie("i-1", NOW, NOW + 600)), ("session", "s")],
        T1,
        &["session=s"],
        NOW,
    );
    assert_eq!(request, RequestDecision::UNPINNED);
    assert_eq!((outcome, set_cookie), (ResponseOutcome::Unchanged, None));
    assert!(!l.has_policy() && !l.reads_response_cookies());
}

const FLASK_SESSION: &str = "session=eyJ1c2VyIjoiYWxpY2UifQ.ZZZ.sig; HttpOnly; Path=/";

#[test]
fn app_cookie_stickiness_starts_when_the_target_sets_the_app_cookie() {
    let l = listener(Some(app_cookie_policy(None)));
    let (request, outcome, set_cookie) = exchange(&l, &[], T1, &[], NOW);
    assert_eq!(
        (request.pinned, outcome, set_cookie),
        (None, ResponseOutcome::Unchanged, None),
        "nothing sticky before the app cookie"
    );
    let (_, outcome, set_cookie) = exchange(&l, &[], T1, &["other=1", FLASK_SESSION], NOW);
    assert_eq!(outcome, ResponseOutcome::Assigned);
    let set_cookie = set_cookie.unwrap();
    assert!(
        !set_cookie.contains("Max-Age") && !set_cookie.contains("Expires"),
        "session app cookie, session stickiness cookie: {set_cookie}"
    );
    let ours = value_of(&set_cookie);
    let session = "eyJ1c2VyIjoiYWxpY2UifQ.ZZZ.sig";
    let both = l.on_request(Some(&header(&[("session", session), ("AWSELB", &ours)])), NOW + 5);
    assert_eq!(pinned_address(&l, &both).as_deref(), Some(T1));
    let ours_only = l.on_request(Some(&header(&[("AWSELB", &ours)])), NOW + 5);
    assert_eq!(
        ours_only.pinned, None,
        "without the app cookie the request is not pinned"
    );
    let empty_app = l.on_request(Some(&header(&[("session", ""), ("AWSELB", &ours)])), NOW + 5);
    assert_eq!(empty_app.pinned, None, "an empty app cookie is no app cookie");
    assert!(l.reads_response_cookies());
}

#[test]
fn app_cookie_lifetime_is_followed() {
    let l = listener(Some(app_cookie_policy(None)));
    let cases: [(&str, Option<&str>); 4] = [
        ("session=a; Path=/", None),
        ("session=a; Max-Age=3600; Path=/", Some("Max-Age=3600")),
        (
            "session=a; Expires=Wed, 15 Nov 2023 22:23:20 GMT",
            Some("Max-Age=87000"),
        ),
        (
            "session=a; Expires=Wed, 15 Nov 2023 22:23:20 GMT",
            Some("Expires=Wed, 15 Nov 2023 22:23:20 GMT"),
        ),
    ];
    for (app_set_cookie, expected) in cases {
        let (_, outcome, set_cookie) = exchange(&l, &[], T1, &[app_set_cookie], NOW);
        assert_eq!(outcome, ResponseOutcome::Assigned);
        let set_cookie = set_cookie.unwrap();
        match expected {
            Some(attribute) => assert!(set_cookie.contains(attribute), "{app_set_cookie} -> {set_cookie}"),
            None => assert!(!set_cookie.contains("Max-Age"), "{app_set_cookie} -> {set_cookie}"),
        }
    }
    // The sealed expiry follows too: the cookie stops pinning when the app cookie would expire.
    let (_, _, set_cookie) = exchange(&l, &[], T1, &["session=a; Max-Age=60"], NOW);
    let ours = value_of(&set_cookie.unwrap());
    let cookies = header(&[("session", "a"), ("AWSELB", &ours)]);
    assert!(l.on_request(Some(&cookies), NOW + 59).pinned.is_some());
    assert!(matches!(
        l.on_request(Some(&cookies), NOW + 60).cookie,
        CookieStatus::Rejected {
            reason: Rejection::Expired,
            ..
        }
    ));
}

#[test]
fn an_absurd_app_cookie_lifetime_is_capped_not_a_crash() {
    // Found by the testbed's fuzzer: Max-Age near u64::MAX overflowed the Expires computation.
    let l = listener(Some(app_cookie_policy(None)));
    let (_, outcome, set_cookie) = exchange(&l, &[], T1, &["session=x; Max-Age=6304884492704500459"], NOW);
    assert_eq!(outcome, ResponseOutcome::Assigned);
    let set_cookie = set_cookie.unwrap();
    assert!(
        set_cookie.contains("Expires=Sun, 07 Feb 2106 06:28:15 GMT"),
        "{set_cookie}"
    );
    let cookies = header(&[("session", "x"), ("AWSELB", &value_of(&set_cookie))]);
    assert!(l.on_request(Some(&cookies), NOW + 86_400 * 365 * 50).pinned.is_some());
}

#[test]
fn app_cookie_deleted_by_the_target_deletes_the_stickiness_cookie() {
    let l = listener(Some(app_cookie_policy(None)));
    let (_, _, set_cookie) = exchange(&l, &[], T1, &[FLASK_SESSION], NOW);
    let ours = value_of(&set_cookie.unwrap());
    for deletion in [
        "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/",
        "session=x; Max-Age=0",
    ] {
        let (_, outcome, set_cookie) = exchange(&l, &[("session", "a"), ("AWSELB", &ours)], T1, &[deletion], NOW + 1);
        assert_eq!(outcome, ResponseOutcome::Deleted);
        let set_cookie = set_cookie.unwrap();
        assert!(
            set_cookie.starts_with("AWSELB=;") && set_cookie.contains("Max-Age=0"),
            "{set_cookie}"
        );
    }
}

#[test]
fn app_cookie_set_again_renews_the_stickiness_cookie() {
    let l = listener(Some(app_cookie_policy(None)));
    let (_, _, set_cookie) = exchange(&l, &[], T1, &["session=a; Max-Age=60"], NOW);
    let ours = value_of(&set_cookie.unwrap());
    let (request, outcome, set_cookie) = exchange(
        &l,
        &[("session", "a"), ("AWSELB", &ours)],
        T1,
        &["session=b; Max-Age=60"],
        NOW + 30,
    );
    assert!(request.pinned.is_some());
    assert_eq!(outcome, ResponseOutcome::Refreshed);
    assert!(set_cookie.unwrap().contains("Max-Age=60"));
    let (_, outcome, set_cookie) = exchange(&l, &[("session", "a"), ("AWSELB", &ours)], T1, &[], NOW + 31);
    assert_eq!(
        (outcome, set_cookie),
        (ResponseOutcome::Unchanged, None),
        "nothing to do when the app is silent"
    );
}

#[test]
fn app_cookie_failover_rewrites_the_cookie_and_the_session_stays_on_the_new_target() {
    let mut s = state(Some(app_cookie_policy(None)));
    let healthy = CompiledListener::compile(&s).unwrap();
    let (_, _, set_cookie) = exchange(&healthy, &[], T1, &["session=a; Max-Age=3600"], NOW);
    let on_t1 = value_of(&set_cookie.unwrap());

    // i-1 fails its health checks: the request is not pinned; the answer from i-2 rewrites the
    // cookie although the app does not set `session` again, keeping the sealed expiry.
    s.targets[0].healthy = false;
    let failed = CompiledListener::compile(&s).unwrap();
    let (request, outcome, set_cookie) = exchange(&failed, &[("session", "a"), ("AWSELB", &on_t1)], T2, &[], NOW + 10);
    assert_eq!(request.pinned, None);
    assert_eq!(outcome, ResponseOutcome::Repinned);
    let set_cookie = set_cookie.unwrap();
    assert!(
        set_cookie.contains("Max-Age=3590"),
        "the session keeps its lifetime: {set_cookie}"
    );
    let on_t2 = value_of(&set_cookie);

    // i-1 comes back: the session stays on i-2.
    s.targets[0].healthy = true;
    let recovered = CompiledListener::compile(&s).unwrap();
    let request = recovered.on_request(Some(&header(&[("session", "a"), ("AWSELB", &on_t2)])), NOW + 20);
    assert_eq!(pinned_address(&recovered, &request).as_deref(), Some(T2));

    // Deregistration moves the session the same way.
    s.targets.retain(|t| t.id != "i-2");
    let deregistered = CompiledListener::compile(&s).unwrap();
    let (request, outcome, set_cookie) = exchange(
        &deregistered,
        &[("session", "a"), ("AWSELB", &on_t2)],
        T1,
        &[],
        NOW + 30,
    );
    assert!(matches!(
        request.cookie,
        CookieStatus::Rejected {
            reason: Rejection::UnknownTarget,
            ..
        }
    ));
    assert_eq!(outcome, ResponseOutcome::Repinned);
    let back = deregistered.on_request(
        Some(&header(&[
            ("session", "a"),
            ("AWSELB", &value_of(&set_cookie.unwrap())),
        ])),
        NOW + 31,
    );
    assert_eq!(pinned_address(&deregistered, &back).as_deref(), Some(T1));
}

#[test]
fn app_cookie_without_a_stickiness_cookie_or_with_a_forged_one_is_not_rewritten() {
    let l = listener(Some(app_cookie_policy(None)));
    for cookies in [vec![("session", "a")], vec![("session", "a"), ("AWSELB", "forged")]] {
        let (request, outcome, set_cookie) = exchange(&l, &cookies, T1, &[], NOW);
        assert_eq!(
            (request.pinned, outcome, set_cookie),
            (None, ResponseOutcome::Unchanged, None),
            "{cookies:?}"
        );
    }
}

#[test]
fn app_cookie_explicit_duration_overrides_the_app_cookie_lifetime() {
    let l = listener(Some(app_cookie_policy(Some(120))));
    let (_, _, set_cookie) = exchange(&l, &[], T1, &["session=a; Max-Age=3600"], NOW);
    let set_cookie = set_cookie.unwrap();
    assert!(set_cookie.contains("Max-Age=120"), "{set_cookie}");
    let cookies = header(&[("session", "a"), ("AWSELB", &value_of(&set_cookie))]);
    assert!(l.on_request(Some(&cookies), NOW + 119).pinned.is_some());
    assert!(l.on_request(Some(&cookies), NOW + 120).pinned.is_none());
}

#[test]
fn app_and_lb_cookies_are_not_interchangeable() {
    let app = listener(Some(app_cookie_policy(None)));
    let lb = listener(Some(lb_cookie_policy(600)));
    let (_, _, set_cookie) = exchange(&lb, &[], T1, &[], NOW);
    let lb_value = value_of(&set_cookie.unwrap());
    let request = app.on_request(Some(&header(&[("session", "a"), ("AWSELB", &lb_value)])), NOW);
    assert!(matches!(
        request.cookie,
        CookieStatus::Rejected {
            reason: Rejection::Forged,
            ..
        }
    ));
}

#[test]
fn many_stickiness_cookies_are_tried_a_bounded_number_of_times() {
    let l = listener(Some(lb_cookie_policy(600)));
    let mut cookies: Vec<(&str, String)> = (0..1000).map(|_| ("AWSELB", "junk".to_owned())).collect();
    cookies.push(("AWSELB", lb_cookie("i-1", NOW, NOW + 600)));
    let header = header(&cookies.iter().map(|(n, v)| (*n, v.as_str())).collect::<Vec<_>>());
    assert_eq!(
        l.on_request(Some(&header), NOW).pinned,
        None,
        "the valid cookie is past the bound"
    );
}

#[test]
fn state_is_validated_before_use() {
    let valid = state(Some(lb_cookie_policy(600)));
    type Mutation = Box<dyn Fn(&mut FilterState)>;
    let cases: Vec<(&str, Mutation, StateError)> = vec![
        (
            "cookie name",
            Box::new(|s| s.cookie.name = "a b".into()),
            StateError::CookieName("a b".into()),
        ),
        (
            "cookie path",
            Box::new(|s| s.cookie.path = "/;x".into()),
            StateError::CookiePath("/;x".into()),
        ),
        (
            "samesite none",
            Box::new(|s| s.cookie.same_site = SameSite::None),
            StateError::SameSiteNoneWithoutSecure,
        ),
        (
            "app cookie name",
            Box::new(|s| {
                s.policy = Some(PolicyState::AppCookie {
                    app_cookie_name: "se;ss".into(),
                    duration_seconds: None,
                })
            }),
            StateError::CookieName("se;ss".into()),
        ),
        (
            "name clash",
            Box::new(|s| {
                s.policy = Some(PolicyState::AppCookie {
                    app_cookie_name: "AWSELB".into(),
                    duration_seconds: None,
                })
            }),
            StateError::CookieNameClash("AWSELB".into()),
        ),
        (
            "cookie domain",
            Box::new(|s| s.cookie.domain = Some("exa mple.com".into())),
            StateError::CookieDomain("exa mple.com".into()),
        ),
        (
            "partitioned without secure",
            Box::new(|s| s.cookie.partitioned = true),
            StateError::PartitionedWithoutSecure,
        ),
        (
            "session header",
            Box::new(|s| s.session_header = Some("cookie".into())),
            StateError::SessionHeader("cookie".into()),
        ),
        (
            "twin clash",
            Box::new(|s| {
                s.cookie.cors_twin = true;
                s.policy = Some(PolicyState::AppCookie {
                    app_cookie_name: "AWSELBCORS".into(),
                    duration_seconds: None,
                })
            }),
            StateError::CookieNameClash("AWSELBCORS".into()),
        ),
        (
            "lb name",
            Box::new(|s| s.load_balancer = String::new()),
            StateError::LoadBalancerName,
        ),
        (
            "target id",
            Box::new(|s| s.targets[0].id = "a b".into()),
            StateError::TargetId("a b".into()),
        ),
        (
            "target address",
            Box::new(|s| s.targets[0].address = "localhost:80".into()),
            StateError::TargetAddress {
                id: "i-1".into(),
                address: "localhost:80".into(),
            },
        ),
        (
            "duplicate id",
            Box::new(|s| s.targets[1].id = "i-1".into()),
            StateError::DuplicateTargetId("i-1".into()),
        ),
        (
            "duplicate address",
            Box::new(|s| s.targets[1].address = T1.into()),
            StateError::DuplicateTargetAddress(T1.into()),
        ),
        (
            "active key",
            Box::new(|s| s.keys.active = 5),
            StateError::ActiveKeyMissing(5),
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut s = valid.clone();
        mutate(&mut s);
        assert_eq!(CompiledListener::compile(&s).unwrap_err(), expected, "{name}");
    }
    assert!(matches!(
        CompiledListener::from_json(b"{not json").unwrap_err(),
        StateError::Json(_)
    ));
    assert!(matches!(
        CompiledListener::from_json(b"{\"version\":1}").unwrap_err(),
        StateError::Json(_)
    ));
}

#[test]
fn state_json_round_trips_and_defaults_apply() {
    let s = state(Some(app_cookie_policy(Some(30))));
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<FilterState>(&json).unwrap(), s);
    let minimal = r#"{"version":1,"load_balancer":"lb","listener_port":80,"keys":{"active":1,"keys":[{"id":1,"secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}}"#;
    let l = CompiledListener::from_json(minimal.as_bytes()).unwrap();
    assert_eq!(
        (l.version(), l.has_policy(), l.cookie_settings().name.as_str()),
        (1, false, "AWSELB")
    );
    let ipv6 = r#"{"version":1,"load_balancer":"lb","listener_port":80,"policy":{"kind":"lb_cookie","expiration_period":60},"targets":[{"id":"a","address":"[::1]:80","healthy":true}],"keys":{"active":1,"keys":[{"id":1,"secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}}"#;
    let l = CompiledListener::from_json(ipv6.as_bytes()).unwrap();
    assert_eq!(&*l.targets()[0].address, "[::1]:80");
}

#[test]
fn requests_no_cookie_pins_go_round_robin_over_healthy_targets_only() {
    let l = listener(None);
    let picked: Vec<_> = (0..6)
        .map(|n| l.pick(n, NOW).and_then(|i| l.target(i)).map(|t| t.address.to_string()))
        .collect();
    let expected: Vec<_> = [T1, T2, T1, T2, T1, T2].iter().map(|a| Some((*a).to_owned())).collect();
    assert_eq!(picked, expected, "i-3 is unhealthy: never picked");
    assert_eq!(
        l.pick(u64::MAX, NOW)
            .and_then(|i| l.target(i))
            .map(|t| t.id.to_string())
            .as_deref(),
        Some("i-2")
    );
    let mut none_healthy = state(Some(lb_cookie_policy(600)));
    for target in &mut none_healthy.targets {
        target.healthy = false;
    }
    assert_eq!(CompiledListener::compile(&none_healthy).unwrap().pick(0, NOW), None);
}

#[test]
fn a_target_envoy_could_not_reach_is_passed_over_until_the_hold_ends() {
    use crate::listener::UNREACHABLE_HOLD_SECONDS as HOLD;
    let l = listener(Some(lb_cookie_policy(600)));
    let (i1, i2) = (0, 1);
    let retried = || true;
    // Only another registered target answering a request routed to i-1, confirmed (Envoy
    // retried after waiting on i-1), marks it.
    assert!(
        l.observe_answer(Some(T1.as_bytes()), from(T1), retried, NOW).is_none(),
        "it answered itself"
    );
    let unknown = from("10.9.9.9:80 -");
    assert!(
        l.observe_answer(Some(T1.as_bytes()), unknown, retried, NOW).is_none(),
        "an unknown upstream proves nothing"
    );
    assert!(
        l.observe_answer(Some(T1.as_bytes()), None, retried, NOW).is_none(),
        "no upstream proves nothing"
    );
    assert!(
        l.observe_answer(None, from(T2), retried, NOW).is_none(),
        "nothing was routed"
    );
    assert!(
        l.observe_answer(Some(T1.as_bytes()), from(T2), || false, NOW).is_none(),
        "unconfirmed: Envoy did not know i-1 yet, or retried at once"
    );
    assert!(!l.is_unreachable(i1, NOW));
    // Envoy's own 503 after giving up on the upstream marks that upstream (a POST it did not
    // retry), whatever was routed.
    let gave_up = listener(Some(lb_cookie_policy(600)));
    for (flags, marked) in [
        ("UC", true),
        ("UF,URX", true),
        ("UR", true),
        ("-", false),
        ("NR", false),
    ] {
        let value = format!("{T2} {flags}");
        assert_eq!(
            gave_up.observe_answer(None, from(&value), || true, NOW).is_some(),
            marked,
            "{flags}"
        );
        assert_eq!(gave_up.is_unreachable(i2, NOW), marked, "{flags}");
    }
    let quick = listener(Some(lb_cookie_policy(600)));
    let refused_at_once = format!("{T2} UF");
    assert!(
        quick
            .observe_answer(None, from(&refused_at_once), || false, NOW)
            .is_none(),
        "Envoy gave up at once (refused): unconfirmed, nothing learnt"
    );
    assert_eq!(
        UpstreamReport::parse(T1.as_bytes()),
        UpstreamReport {
            address: T1.as_bytes(),
            failed: false,
            upgrade: false,
        },
        "a bare address (the upstream.address property)"
    );
    let upgraded = format!("{T1} - upgrade");
    assert_eq!(
        UpstreamReport::parse(upgraded.as_bytes()),
        UpstreamReport {
            address: T1.as_bytes(),
            failed: false,
            upgrade: true,
        },
        "the WebSocket route marks its answers"
    );
    assert_eq!(
        l.observe_answer(Some(T1.as_bytes()), from(T2), retried, NOW),
        Some((i1, Unreachable::RetriedElsewhere))
    );

    // No request is routed to it while the hold lasts: not the unpinned ones...
    let picked: Vec<_> = (0..4).map(|n| l.pick(n, NOW + HOLD - 1)).collect();
    assert_eq!(picked, [Some(i2); 4]);
    // ...nor those whose cookie names it: the cookie is rejected, and rewritten for whoever
    // answers.
    let cookie = lb_cookie("i-1", NOW, NOW + 600);
    let (request, outcome, set_cookie) = exchange(&l, &[("AWSELB", &cookie)], T2, &[], NOW + 1);
    assert_eq!(request.pinned, None);
    assert_eq!(
        request.cookie,
        CookieStatus::Rejected {
            reason: Rejection::UnreachableTarget,
            expires_at: Some(NOW + 600),
            session_start: Some(NOW),
        }
    );
    assert_eq!(outcome, ResponseOutcome::Repinned);
    let next = l.on_request(Some(&header(&[("AWSELB", &value_of(&set_cookie.unwrap()))])), NOW + 1);
    assert_eq!(pinned_address(&l, &next).as_deref(), Some(T2));

    // A new state for the same targets keeps the mark; a target that moved address does not,
    // nor one the health check saw fail and recover.
    let renewed = listener(Some(lb_cookie_policy(600)));
    renewed.carry_unreachable_from(&l);
    assert!(renewed.is_unreachable(i1, NOW + 1));
    let mut moved = state(Some(lb_cookie_policy(600)));
    moved.targets[0].address = "127.0.0.1:9101".into();
    let moved = CompiledListener::compile(&moved).unwrap();
    moved.carry_unreachable_from(&l);
    assert!(!moved.is_unreachable(i1, NOW + 1));
    let mut unhealthy = state(Some(lb_cookie_policy(600)));
    unhealthy.targets[0].healthy = false;
    let unhealthy = CompiledListener::compile(&unhealthy).unwrap();
    unhealthy.carry_unreachable_from(&l);
    let recovered = listener(Some(lb_cookie_policy(600)));
    recovered.carry_unreachable_from(&unhealthy);
    assert!(!recovered.is_unreachable(i1, NOW + 1));

    // A marked target that answers (routed there because nothing else was left) is reachable.
    let answered = listener(Some(lb_cookie_policy(600)));
    answered.carry_unreachable_from(&l);
    assert!(
        answered
            .observe_answer(Some(T2.as_bytes()), from(T1), || false, NOW + 1)
            .is_none()
    );
    assert!(!answered.is_unreachable(i1, NOW + 1));

    // When the hold ends it takes requests again.
    assert!(!l.is_unreachable(i1, NOW + HOLD));
    assert_eq!(l.pick(0, NOW + HOLD), Some(i1));
    let back = l.on_request(Some(&header(&[("AWSELB", &cookie)])), NOW + HOLD);
    assert_eq!(back.pinned, Some(i1));

    // Every healthy target unreachable: the round robin goes on over them all, and cookies
    // keep their target (sessions do not flap between unreachable targets).
    let all = listener(Some(lb_cookie_policy(600)));
    let marked = |routed: &str, other: &str| {
        all.observe_answer(Some(routed.as_bytes()), from(other), retried, NOW)
            .is_some()
    };
    assert!(marked(T1, T2));
    assert!(marked(T2, T3), "i-3 is unhealthy: it may answer, it is never picked");
    let picked: Vec<_> = (0..2).map(|n| all.pick(n, NOW + 1)).collect();
    assert_eq!(picked, [Some(i1), Some(i2)]);
    let stays = all.on_request(Some(&header(&[("AWSELB", &cookie)])), NOW + 1);
    assert_eq!(stays.pinned, Some(i1));
}

/// The cookie cache remembers openings only: every request decides the same with it as
/// without it, including the checks that depend on the time and on the state.
#[test]
fn a_cached_cookie_decides_exactly_as_an_opened_one() {
    use crate::cache::CookieCache;
    let l = listener(Some(lb_cookie_policy(600)));
    let valid = lb_cookie("i-2", NOW, NOW + 600);
    let on_unhealthy = lb_cookie("i-3", NOW, NOW + 600);
    let unknown = lb_cookie("i-9", NOW, NOW + 600);
    let mut tampered = valid.clone().into_bytes();
    tampered[20] ^= 1;
    let tampered = String::from_utf8(tampered).unwrap();
    let mut cache = CookieCache::default();
    // (cookie, when): each decided twice with the cache (a miss, then a hit) and once without.
    let cases = [
        (valid.as_str(), NOW),
        (valid.as_str(), NOW + 599),
        // Past its sealed expiry: rejected, cached or not.
        (valid.as_str(), NOW + 600),
        (on_unhealthy.as_str(), NOW),
        (unknown.as_str(), NOW),
        (tampered.as_str(), NOW),
        ("garbage", NOW),
    ];
    for (cookie, now) in cases {
        let header = header(&[("AWSELB", cookie)]);
        let plain = l.on_request(Some(&header), now);
        let first = l.on_request_cached(Some(&header), now, &mut cache);
        let second = l.on_request_cached(Some(&header), now, &mut cache);
        assert_eq!(first, plain, "{cookie} at {now}");
        assert_eq!(second, plain, "{cookie} at {now}, from the cache");
    }
    assert_eq!(cache.len(), 3, "only authentic cookies are remembered: {cache:?}");
}

#[test]
fn a_new_state_empties_the_cookie_cache() {
    use crate::cache::CookieCache;
    let l = listener(Some(lb_cookie_policy(600)));
    let header = header(&[("AWSELB", &lb_cookie("i-2", NOW, NOW + 600))]);
    let mut cache = CookieCache::default();
    assert!(l.on_request_cached(Some(&header), NOW, &mut cache).pinned.is_some());
    assert_eq!(cache.len(), 1);
    // The next state no longer holds key 2: the cookie must not pin from the cache.
    let next = CompiledListener::compile(&FilterState {
        version: 8,
        ..filter_state(
            Some(lb_cookie_policy(600)),
            targets(&[T1, T2, T3], &[T3]),
            ring_state(&[(1, 11)], 1),
        )
    })
    .unwrap();
    let decision = next.on_request_cached(Some(&header), NOW, &mut cache);
    assert_eq!(decision.pinned, None);
    assert!(matches!(
        decision.cookie,
        CookieStatus::Rejected {
            reason: Rejection::UnknownKey,
            ..
        }
    ));
    assert!(cache.is_empty());
}

fn lb_cookie_with_max_lifetime(period: u64, max_lifetime: u64) -> PolicyState {
    PolicyState::LbCookie {
        expiration_period: period,
        max_lifetime,
    }
}

/// The sealed times of the cookie a `Set-Cookie` carries, opened with the listener's keys.
fn sealed_times(l: &CompiledListener, set_cookie: &str) -> (u64, u64, u64) {
    let value = value_of(set_cookie);
    match l.on_request(Some(&header(&[("AWSELB", &value)])), NOW).cookie {
        CookieStatus::Valid {
            issued_at,
            expires_at,
            session_start,
            ..
        } => (issued_at, expires_at, session_start),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_absolute_lifetime_is_carried_across_refreshes_and_never_extended() {
    // maxidle 600 s, maxlife 1,000 s (the seed's HAProxy `maxidle`/`maxlife`).
    let l = listener(Some(lb_cookie_with_max_lifetime(600, 1_000)));
    let (_, outcome, first) = exchange(&l, &[], T1, &[], NOW);
    assert_eq!(outcome, ResponseOutcome::Assigned);
    let first = first.unwrap();
    assert_eq!(sealed_times(&l, &first), (NOW, NOW + 600, NOW));
    // Refreshed at +500: the idle expiry slides, capped by the session's end at +1,000.
    let (_, outcome, refreshed) = exchange(&l, &[("AWSELB", &value_of(&first))], T1, &[], NOW + 500);
    assert_eq!(outcome, ResponseOutcome::Refreshed);
    let refreshed = refreshed.unwrap();
    assert!(refreshed.contains("Max-Age=500"), "{refreshed}");
    let (issued, expires, start) = sealed_times(&l, &refreshed);
    assert_eq!((issued, expires, start), (NOW + 500, NOW + 1_000, NOW));
    // At +900 a refresh would give nothing more: unchanged.
    let (_, outcome, _) = exchange(&l, &[("AWSELB", &value_of(&refreshed))], T1, &[], NOW + 900);
    assert_eq!(outcome, ResponseOutcome::Unchanged);
    // A re-pin (target gone) keeps the session's start.
    let gone = listener_with_targets(
        lb_cookie_with_max_lifetime(600, 1_000),
        crate::testing::targets(&[T1, T2], &[T1]),
    );
    let (request, outcome, moved) = exchange(&gone, &[("AWSELB", &value_of(&refreshed))], T2, &[], NOW + 901);
    assert_eq!(request.pinned, None);
    assert_eq!(outcome, ResponseOutcome::Repinned);
    let moved = value_of(&moved.unwrap());
    let carried = gone.on_request(Some(&header(&[("AWSELB", &moved)])), NOW + 901);
    assert!(
        matches!(carried.cookie, CookieStatus::Valid { session_start: NOW, expires_at, .. } if expires_at == NOW + 1_000),
        "{carried:?}"
    );
    // At the session's end the cookie no longer pins: a new session starts.
    let over = gone.on_request(Some(&header(&[("AWSELB", &moved)])), NOW + 1_000);
    assert!(matches!(
        over.cookie,
        CookieStatus::Rejected {
            reason: Rejection::Expired,
            ..
        }
    ));
    let (_, outcome, fresh) = exchange(&gone, &[("AWSELB", &moved)], T2, &[], NOW + 1_000);
    assert_eq!(outcome, ResponseOutcome::Assigned);
    let fresh = value_of(&fresh.unwrap());
    let next = gone.on_request(Some(&header(&[("AWSELB", &fresh)])), NOW + 1_001);
    assert!(matches!(next.cookie, CookieStatus::Valid { session_start, .. } if session_start == NOW + 1_000));
}

#[test]
fn a_browser_session_cookie_with_an_absolute_lifetime_ends_with_it() {
    let l = listener(Some(lb_cookie_with_max_lifetime(0, 300)));
    let (_, _, first) = exchange(&l, &[], T1, &[], NOW);
    let first = first.unwrap();
    assert!(first.contains("Max-Age=300"), "{first}");
    let value = value_of(&first);
    assert!(
        l.on_request(Some(&header(&[("AWSELB", &value)])), NOW + 299)
            .pinned
            .is_some()
    );
    assert!(
        l.on_request(Some(&header(&[("AWSELB", &value)])), NOW + 300)
            .pinned
            .is_none()
    );
}

fn listener_with_targets(policy: PolicyState, targets: Vec<crate::state::TargetState>) -> CompiledListener {
    let mut state = state(Some(policy));
    state.targets = targets;
    CompiledListener::compile(&state).unwrap()
}

#[test]
fn the_cors_twin_is_issued_beside_the_cookie_and_preferred_when_both_come() {
    let mut state = state(Some(lb_cookie_policy(600)));
    state.cookie.cors_twin = true;
    let l = CompiledListener::compile(&state).unwrap();
    let request = l.on_request(None, NOW);
    let response = l.on_response(&request, Some(T1.as_bytes()), [], NOW, nonce);
    let twin = response.set_twin.clone().unwrap();
    assert!(
        twin.starts_with("AWSELBCORS=") && twin.contains("; Secure") && twin.contains("SameSite=None"),
        "{twin}"
    );
    assert_eq!(response.set_cookies().count(), 2);
    let twin_value = cookie_set([twin.as_str()], "AWSELBCORS").unwrap();
    // Either alone pins.
    let only_twin = l.on_request(Some(&header(&[("AWSELBCORS", &twin_value)])), NOW + 1);
    assert_eq!(pinned_address(&l, &only_twin).as_deref(), Some(T1));
    // Both, naming different targets: the twin wins, as in ALB.
    let other = lb_cookie("i-2", NOW, NOW + 600);
    let both = l.on_request(
        Some(&header(&[("AWSELB", &other), ("AWSELBCORS", &twin_value)])),
        NOW + 1,
    );
    assert_eq!(pinned_address(&l, &both).as_deref(), Some(T1));
    // Without the twin setting, a twin cookie is ignored.
    let plain = listener(Some(lb_cookie_policy(600)));
    assert_eq!(
        plain
            .on_request(Some(&header(&[("AWSELBCORS", &twin_value)])), NOW + 1)
            .pinned,
        None
    );
}

#[test]
fn a_session_header_carries_the_session_of_a_client_without_cookies() {
    let mut state = state(Some(lb_cookie_policy(600)));
    state.session_header = Some("x-sticky-session".into());
    let l = CompiledListener::compile(&state).unwrap();
    let mut cache = crate::CookieCache::default();
    let none = crate::SessionCarriers::default();
    let request = l.on_request_carried(none, NOW, &mut cache);
    let response = l.on_response(&request, Some(T2.as_bytes()), [], NOW, nonce);
    let session = response.session_value.clone().unwrap();
    assert_eq!(Some(session.clone()), response.set_cookie.as_deref().map(value_of));
    let carried = crate::SessionCarriers {
        cookie: None,
        session_header: Some(session.as_bytes()),
    };
    let pinned = l.on_request_carried(carried, NOW + 1, &mut cache);
    assert_eq!(pinned_address(&l, &pinned).as_deref(), Some(T2));
    // Same rules as the cookie: expired, forged or bound elsewhere is not honoured.
    let expired = l.on_request_carried(carried, NOW + 600, &mut cache);
    assert_eq!(expired.pinned, None);
    let forged = crate::SessionCarriers {
        cookie: None,
        session_header: Some(b"AAAA"),
    };
    assert!(matches!(
        l.on_request_carried(forged, NOW, &mut cache).cookie,
        CookieStatus::Rejected {
            reason: Rejection::Malformed,
            ..
        }
    ));
    // A listener without a session header ignores the header.
    let plain = listener(Some(lb_cookie_policy(600)));
    assert_eq!(plain.on_request_carried(carried, NOW + 1, &mut cache).pinned, None);
}

#[test]
fn a_draining_target_keeps_its_sessions_and_gets_no_new_one() {
    let mut draining = crate::testing::targets(&[T1, T2], &[]);
    draining[0].draining = true;
    let l = listener_with_targets(lb_cookie_policy(600), draining.clone());
    // Never picked for a request no cookie pins.
    for sequence in 0..4 {
        assert_eq!(
            l.pick(sequence, NOW).and_then(|t| l.target(t)).map(|t| &*t.address),
            Some(T2)
        );
    }
    // A session already on it stays there, and is refreshed there.
    let on_t1 = lb_cookie("i-1", NOW - 200, NOW + 400);
    let (request, outcome, _) = exchange(&l, &[("AWSELB", &on_t1)], T1, &[], NOW);
    assert_eq!(pinned_address(&l, &request).as_deref(), Some(T1));
    assert_eq!(outcome, ResponseOutcome::Refreshed);
    // No session starts or moves there, even if Envoy sends a request to it.
    let (_, outcome, set_cookie) = exchange(&l, &[], T1, &[], NOW);
    assert_eq!((outcome, set_cookie), (ResponseOutcome::DrainingUpstream, None));
    // Unhealthy while draining: its sessions move at once.
    draining[0].healthy = false;
    let failed = listener_with_targets(lb_cookie_policy(600), draining);
    let (request, outcome, _) = exchange(&failed, &[("AWSELB", &on_t1)], T2, &[], NOW);
    assert_eq!(request.pinned, None);
    assert_eq!(outcome, ResponseOutcome::Repinned);
}

#[test]
fn websockets_stay_open_to_targets_and_draining_endpoints_only() {
    // T1 is a session-draining target, T2 a target, 127.0.0.1:9004 an endpoint draining its
    // connections only; T3 is deregistered and drained (its WebSockets close).
    let mut targets = crate::testing::targets(&[T1, T2], &[]);
    targets[0].draining = true;
    let mut state = state(Some(lb_cookie_policy(600)));
    state.targets = targets;
    state.draining_endpoints = vec!["127.0.0.1:9004".into()];
    let l = CompiledListener::compile(&state).unwrap();
    for (address, kept) in [
        (T1, true),
        (T2, true),
        ("127.0.0.1:9004", true),
        (T3, false),
        ("127.0.0.2:9001", false),
        ("", false),
    ] {
        assert_eq!(l.keeps_connections_to(address), kept, "{address}");
    }
    // Envoy's form of an address is the state's, however the service wrote it.
    state.draining_endpoints = vec!["[0:0::1]:9004".into()];
    let v6 = CompiledListener::compile(&state).unwrap();
    assert!(v6.keeps_connections_to("[::1]:9004"));
    state.draining_endpoints = vec!["not-an-address".into()];
    assert_eq!(
        CompiledListener::compile(&state).unwrap_err(),
        StateError::DrainingEndpoint("not-an-address".into())
    );
}

#[test]
fn an_inspected_cookie_shows_what_it_seals_and_the_filters_verdict() {
    let l = listener(Some(lb_cookie_policy(300)));
    let valid = lb_cookie("i-1", NOW, NOW + 300);
    let inspection = l.inspect(valid.as_bytes(), NOW + 10).unwrap();
    let sealed = inspection.sealed.unwrap();
    assert_eq!(
        (
            sealed.key_id,
            sealed.issued_at,
            sealed.expires_at,
            sealed.target_id.as_str()
        ),
        (2, NOW, NOW + 300, "i-1")
    );
    assert!(matches!(inspection.status, CookieStatus::Valid { .. }));
    // Each row: a cookie, whether it opens, the verdict.
    let rows: [(String, bool, Rejection); 6] = [
        (lb_cookie("i-1", NOW - 400, NOW - 100), true, Rejection::Expired),
        (lb_cookie("i-9", NOW, NOW + 300), true, Rejection::UnknownTarget),
        (lb_cookie("i-3", NOW, NOW + 300), true, Rejection::UnhealthyTarget),
        (
            forge(PolicyKind::LbCookie, (2, 22), "i-1", NOW, NOW + 300, LB, 81),
            false,
            Rejection::Forged,
        ),
        (
            forge(PolicyKind::LbCookie, (5, 55), "i-1", NOW, NOW + 300, LB, 80),
            false,
            Rejection::UnknownKey,
        ),
        ("not a cookie".to_owned(), false, Rejection::Malformed),
    ];
    for (cookie, opens, reason) in rows {
        let inspection = l.inspect(cookie.as_bytes(), NOW).unwrap();
        assert_eq!(inspection.sealed.is_some(), opens, "{cookie}");
        assert!(
            matches!(inspection.status, CookieStatus::Rejected { reason: r, .. } if r == reason),
            "{cookie}: {:?}",
            inspection.status
        );
    }
    assert!(
        listener(None).inspect(valid.as_bytes(), NOW).is_none(),
        "no policy, nothing to inspect"
    );
}
