//! Fuzz target `cookie`: arbitrary `Cookie` header bytes (and, for the app-cookie policy,
//! `Set-Cookie` bytes) through the decoder and both policies' decisions. Nothing panics, and
//! nothing pins unless the header carries a genuine cookie verbatim: mutating a cookie never
//! forges one. Corpus: `fuzz/corpus/cookie/`; budget `STICKY_FUZZ_SECONDS` (default 10).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sticky_core::{CompiledListener, CookieStatus, PolicyState};
use sticky_testing::fixtures::{app_cookie_policy, filter_state, lb_cookie_policy, ring_state, targets};

const NOW: u64 = 1_800_000_000;

fn listener(policy: PolicyState) -> CompiledListener {
    let addresses = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"];
    let state = filter_state(
        Some(policy),
        targets(&addresses, &addresses[2..]),
        ring_state(&[(1, 1), (2, 2)], 2),
    );
    CompiledListener::compile(&state).unwrap()
}

/// The cookie value `listener` issues for a session answered by target `n`.
fn genuine(listener: &CompiledListener, n: u8, set_cookie: &[u8]) -> String {
    let decision = listener.on_request(Some(b"session=s"), NOW);
    let address = format!("127.0.0.1:900{n}");
    let response = listener.on_response(&decision, Some(address.as_bytes()), [set_cookie], NOW, || Some([n; 12]));
    let header = response.set_cookie.expect("a cookie is issued");
    header
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("AWSELB="))
        .expect("AWSELB cookie")
        .to_owned()
}

#[test]
fn fuzz_cookie_headers_through_both_policies() {
    let lb = listener(lb_cookie_policy(600));
    let app = listener(app_cookie_policy(None));
    let genuine_values: Vec<String> = vec![
        genuine(&lb, 1, b""),
        genuine(&lb, 2, b""),
        genuine(&app, 1, b"session=s; Max-Age=600"),
        genuine(&app, 2, b"session=s"),
    ];
    let seeds: Vec<Vec<u8>> = genuine_values
        .iter()
        .flat_map(|v| {
            [
                format!("AWSELB={v}").into_bytes(),
                format!("session=abc; AWSELB={v}").into_bytes(),
                format!("a=b; AWSELB={v}; c=d; AWSELB=x").into_bytes(),
            ]
        })
        .collect();
    sticky_fuzz::run("cookie", 10, &seeds, |input| {
        for (listener, name) in [(&lb, "lb"), (&app, "app")] {
            let decision = listener.on_request(Some(input), NOW);
            if let CookieStatus::Valid { .. } = decision.cookie {
                assert!(
                    genuine_values
                        .iter()
                        .any(|v| input.windows(v.len()).any(|w| w == v.as_bytes())),
                    "{name}: a header without a genuine cookie pinned: {:?}",
                    String::from_utf8_lossy(input)
                );
            }
            // The same bytes as the app's Set-Cookie, and as the upstream address.
            let _ = listener.on_response(&decision, Some(input), [input], NOW, || Some([9; 12]));
            let _ = listener.on_response(&decision, Some(b"127.0.0.1:9001"), [input], NOW, || None);
        }
    });
}
