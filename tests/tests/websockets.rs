//! Socket.IO behind the load balancer, as real-time apps use it: python-socketio in three
//! gunicorn VMs (`demo/realtime.py`), python-socketio clients, the real control service and an
//! Envoy with the shell under test. Engine.IO's long-polling requests of one connection must all
//! reach the VM that opened it, and the WebSocket it upgrades to must reach that VM too: the
//! stickiness cookie pins WebSockets like any request (HTTP/1.1 upgrades and RFC 8441's over
//! HTTP/2), under both policies, and a WebSocket
//! outlives a policy change, a key rotation and a restart of the control service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use sticky_testing::flask::{FlaskApp, FlaskTargets};
use sticky_tests::live::{Live, eventually};
use sticky_tests::socketio::{SocketIoClient, whoami_over_http2};
use sticky_tests::{STICKY_COOKIE, TARGET_IDS, key_id};

/// A client that long-polls, then upgrades to a WebSocket; returns once it has.
fn upgraded(url: &str, cookie: &str) -> (SocketIoClient, String) {
    let mut client = SocketIoClient::connect(url, "polling,websocket", cookie).unwrap_or_else(|e| panic!("{e}"));
    let mut target = String::new();
    eventually(Duration::from_secs(10), "the client upgrades to a WebSocket", || {
        let answer = client.whoami();
        target = answer["target"].as_str().unwrap_or_default().to_owned();
        answer["transport"] == "websocket"
    });
    (client, target)
}

#[test]
fn socket_io_is_sticky_over_polling_and_websockets_and_its_websockets_outlive_changes() {
    let targets = FlaskTargets::start_app(&TARGET_IDS, FlaskApp::Realtime).unwrap_or_else(|e| panic!("{e:#}"));
    // Keys rotate every 3 s (the service checks every 5 s).
    let mut live = Live::start_with(targets, 1, &["--key-rotation", "3"]);
    let url = live.envoys[0].url();

    // No stickiness: the polls of one Engine.IO connection spread over the VMs, which know
    // nothing of each other's connections.
    let failed = (0..3)
        .filter(|_| match SocketIoClient::connect(&url, "polling", "") {
            Err(_) => true,
            Ok(mut client) => (0..3).any(|_| client.whoami().get("error").is_some()),
        })
        .count();
    assert!(
        failed > 0,
        "Socket.IO polling worked without stickiness: the test proves nothing"
    );

    // LB cookie: the handshake's answer carries the cookie, every later poll and the WebSocket
    // upgrade carry it back, so the connection stays on one VM and upgrades.
    live.create_lb_cookie_policy("LBCookie", 300);
    live.set_policy(Some("LBCookie"));
    let (mut polled, polled_on) = upgraded(&url, "");
    for _ in 0..5 {
        assert_eq!(polled.websocket_target(), polled_on);
    }

    // A WebSocket-only client goes to the VM its cookie names, whichever it is.
    let mut cookies: HashMap<String, String> = HashMap::new();
    eventually(Duration::from_secs(10), "a cookie for each VM", || {
        let reply = live.get(0, "/", &[]);
        cookies.insert(reply.target(), reply.sticky_cookie().expect("an LB cookie"));
        cookies.len() == TARGET_IDS.len()
    });
    let mut websockets = Vec::new();
    for (vm, cookie) in &cookies {
        let header = format!("{STICKY_COOKIE}={cookie}");
        for _ in 0..3 {
            let mut client = SocketIoClient::connect(&url, "websocket", &header).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                &client.websocket_target(),
                vm,
                "a WebSocket went elsewhere than its cookie says"
            );
            websockets.push((client, vm.clone()));
        }
    }

    // Over HTTP/2 too (RFC 8441 extended CONNECT), a WebSocket goes where its cookie says.
    let authority = url.trim_start_matches("http://");
    for (vm, cookie) in &cookies {
        let answer = whoami_over_http2(authority, 3, &format!("{STICKY_COOKIE}={cookie}"));
        assert_eq!(answer["targets"], serde_json::json!([vm, vm, vm]), "{answer}");
    }

    // App cookie on Engine.IO's own `io` cookie: stickiness starts with the handshake that sets it.
    live.create_app_cookie_policy("EngineIo", "io");
    live.set_policy(Some("EngineIo"));
    let (mut app_sticky, app_sticky_on) = upgraded(&url, "");
    for _ in 0..5 {
        assert_eq!(app_sticky.websocket_target(), app_sticky_on);
    }

    // Open WebSockets outlive a policy change, a key rotation and the control service's restart:
    // none of them touches an established connection.
    let mut all_still_there = |when: &str| {
        assert_eq!(polled.websocket_target(), polled_on, "{when}");
        assert_eq!(app_sticky.websocket_target(), app_sticky_on, "{when}");
        for (client, vm) in &mut websockets {
            assert_eq!(&client.websocket_target(), vm, "{when}");
        }
    };
    live.set_policy(Some("LBCookie"));
    all_still_there("after a policy change");
    let old_key = key_id(&live.get(0, "/", &[]).sticky_cookie().expect("an LB cookie"));
    eventually(Duration::from_secs(15), "the keys rotate", || {
        live.get(0, "/", &[])
            .sticky_cookie()
            .is_some_and(|cookie| key_id(&cookie) != old_key)
    });
    all_still_there("after a key rotation");
    live.control.restart().unwrap_or_else(|e| panic!("{e}"));
    all_still_there("after the control service restarted");
    // And new WebSockets are pinned as before.
    let (vm, cookie) = cookies.iter().next().unwrap();
    let mut late = SocketIoClient::connect(&url, "websocket", &format!("{STICKY_COOKIE}={cookie}")).unwrap();
    assert_eq!(&late.websocket_target(), vm);
}
