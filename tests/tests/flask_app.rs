//! The seed's case end to end: the seed's Flask app with Flask-Session (server-side sessions on
//! each VM's own disk) under gunicorn, three VMs behind the real control service and a real
//! Envoy with the shell under test. Without stickiness a logged-in user loses the session as soon
//! as a request lands on another VM; with the app cookie policy on `session` (the seed's
//! `osc-cli lbu CreateAppCookieStickinessPolicy --CookieName session`), the session and its
//! visit count stay, and logging out ends the stickiness too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sticky_testing::flask::FlaskTargets;
use sticky_tests::live::Live;
use sticky_tests::{STICKY_COOKIE, TARGET_IDS};

fn visits(body: &str) -> (String, Option<String>, u64) {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        value["target"].as_str().unwrap_or_default().to_owned(),
        value["user"].as_str().map(str::to_owned),
        value["visits"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_flask_session_survives_only_with_app_cookie_stickiness() {
    let targets = FlaskTargets::start(&TARGET_IDS).unwrap_or_else(|e| panic!("{e:#}"));
    let live = Live::start_with(targets, 1, &[]);

    // No policy: the session lives on one VM only; requests spread, so it is lost.
    let login = live.get(0, "/login", &[]);
    let session = login.cookie_value("session").expect("Flask-Session sets its cookie");
    let seen: Vec<(String, Option<String>, u64)> = (0..9)
        .map(|_| visits(&live.get(0, "/", &[("session", &session)]).body))
        .collect();
    assert!(
        seen.iter().any(|(_, user, _)| user.is_none()),
        "without stickiness another VM does not know the session: {seen:?}"
    );

    // The seed's policy: stickiness follows the app's `session` cookie.
    live.create_app_cookie_policy("AppCookie", "session");
    live.set_policy(Some("AppCookie"));
    let login = live.get(0, "/login", &[]);
    let session = login.cookie_value("session").expect("a new session");
    let sticky = login.sticky_cookie().expect("stickiness starts with the session");
    let vm = login.target();
    let both = [("session", session.as_str()), (STICKY_COOKIE, sticky.as_str())];
    for expected in 1..=10u64 {
        let (target, user, count) = visits(&live.get(0, "/", &both).body);
        assert_eq!(
            (target.as_str(), user.as_deref(), count),
            (vm.as_str(), Some("demo"), expected)
        );
    }
    // Logging out deletes the app's cookie, and the stickiness cookie with it.
    let logout = live.get(0, "/logout", &both);
    assert_eq!(logout.target(), vm);
    let deleted = logout
        .set_cookies
        .iter()
        .any(|c| c.starts_with(&format!("{STICKY_COOKIE}=;")) && c.contains("Max-Age=0"));
    assert!(deleted, "{:?}", logout.set_cookies);
}
