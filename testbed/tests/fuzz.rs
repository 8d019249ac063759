//! Fuzzing the compiled filter's header handling through the testbed (targets `headers-lb`
//! and `headers-app`): arbitrary cookie, routing-header and Set-Cookie bytes, mutated valid
//! cookies, huge and numerous cookies, under both policies. Half the budget mutates the corpus
//! (`fuzz/corpus/headers-*/`, where a trapping input is saved), half generates structured
//! inputs. Bounded: `STICKY_FUZZ_SECONDS` (default 30) per policy; a longer run is the same
//! test with a larger value. Any trap fails the test with the input that caused it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use sticky_core::{FilterState, PluginConfig, PolicyState};
use sticky_testbed::Testbed;
use sticky_testing::fixtures::{app_cookie_policy, filter_state, lb_cookie_policy, ring_state, targets};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n.max(1)) as usize
    }

    /// Up to `max` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn state(policy: PolicyState) -> FilterState {
    let addresses = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"];
    filter_state(
        Some(policy),
        targets(&addresses, &addresses[2..]),
        ring_state(&[(1, 3)], 1),
    )
}

/// One fuzz input: (cookie header, routing header, set-cookie, upstream).
fn input(rng: &mut Rng, valid: &[String]) -> (Vec<u8>, Vec<u8>, Vec<u8>, Option<String>) {
    let mut cookie = match rng.below(6) {
        0 => rng.bytes(400),
        1 => {
            // A valid cookie with bytes flipped, cut or repeated.
            let mut v = valid[rng.below(valid.len() as u64)].clone().into_bytes();
            for _ in 0..1 + rng.below(3) {
                if v.is_empty() {
                    break;
                }
                let at = rng.below(v.len() as u64);
                match rng.below(3) {
                    0 => v[at] ^= 1 << rng.below(8),
                    1 => v.truncate(at),
                    _ => v.insert(at, rng.next() as u8),
                }
            }
            [b"AWSELB=".to_vec(), v].concat()
        }
        2 => {
            let many: Vec<String> = (0..rng.below(800)).map(|i| format!("AWSELB=x{i}")).collect();
            many.join("; ").into_bytes()
        }
        3 => [
            b"session=".to_vec(),
            rng.bytes(20),
            b"; AWSELB=".to_vec(),
            valid[0].clone().into_bytes(),
        ]
        .concat(),
        4 => vec![b'A'; 1 + rng.below(60_000)],
        _ => format!("AWSELB={}; session=s", valid[rng.below(valid.len() as u64)]).into_bytes(),
    };
    if rng.below(4) == 0 {
        cookie.extend(rng.bytes(30));
    }
    let routing = if rng.below(2) == 0 {
        rng.bytes(40)
    } else {
        b"127.0.0.1:9003".to_vec()
    };
    let set_cookie = match rng.below(4) {
        0 => rng.bytes(200),
        1 => format!("session={}; Max-Age={}", rng.next(), rng.next() as i64).into_bytes(),
        2 => b"session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT".to_vec(),
        _ => [b"session=a; Expires=".to_vec(), rng.bytes(30)].concat(),
    };
    let upstream = match rng.below(4) {
        0 => None,
        1 => Some(String::from_utf8_lossy(&rng.bytes(12)).into_owned()),
        n => Some(format!("127.0.0.1:900{n}")),
    };
    (cookie, routing, set_cookie, upstream)
}

#[test]
fn fuzz_the_filter_with_arbitrary_header_bytes() {
    let seconds: u64 = std::env::var("STICKY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let wasm = sticky_testing::artifacts::build_filter().unwrap_or_else(|e| panic!("{e}"));
    let testbed = Testbed::load(&wasm).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001 ^ u64::from(std::process::id()));
    let mut executions = 0u64;
    for (name, policy) in [("lb", lb_cookie_policy(600)), ("app", app_cookie_policy(None))] {
        let mut plugin = testbed
            .plugin(&PluginConfig::new(Some(state(policy))).to_json(), &[])
            .unwrap();
        // A few valid cookies to mutate.
        let valid: Vec<String> = (1..=2)
            .filter_map(|i| {
                let stream = plugin.request(&[]).ok()?;
                let response = plugin
                    .respond(
                        &stream,
                        Some(&format!("127.0.0.1:900{i}")),
                        &[("set-cookie", b"session=s")],
                    )
                    .ok()?;
                response.cookie("AWSELB")
            })
            .collect();
        assert!(!valid.is_empty());
        // Half the budget: mutations of the corpus (`fuzz/corpus/headers/`) and of the valid
        // cookies, each input `cookie \0 routing header \0 set-cookie \0 upstream`.
        let seeds: Vec<Vec<u8>> = valid
            .iter()
            .map(|v| {
                format!("AWSELB={v}; session=s\0127.0.0.1:9002\0session=t; Max-Age=60\0127.0.0.1:9001").into_bytes()
            })
            .collect();
        let target = format!("headers-{name}");
        let report = sticky_fuzz::run_for(&target, seconds / 2, &seeds, |input| {
            let mut fields = input.split(|b| *b == 0);
            let (cookie, routing, set_cookie) = (
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            );
            let upstream = fields.next().map(|u| String::from_utf8_lossy(u).into_owned());
            let stream = plugin
                .request(&[("cookie", cookie), ("x-sticky-target", routing)])
                .unwrap_or_else(|e| panic!("trap on request half ({e})"));
            assert!(stream.header_count("x-sticky-target") <= 1);
            plugin
                .respond(&stream, upstream.as_deref(), &[("set-cookie", set_cookie)])
                .unwrap_or_else(|e| panic!("trap on response half ({e})"));
        });
        executions += report.executions;
        // The other half: structured inputs (huge and numerous cookies, cut valid ones).
        let deadline = Instant::now() + Duration::from_secs(seconds - seconds / 2);
        while Instant::now() < deadline {
            let (cookie, routing, set_cookie, upstream) = input(&mut rng, &valid);
            let stream = plugin
                .request(&[("cookie", &cookie), ("x-sticky-target", &routing)])
                .unwrap_or_else(|e| {
                    panic!(
                        "trap on request half ({e}); cookie {:?}",
                        String::from_utf8_lossy(&cookie)
                    )
                });
            assert!(stream.header_count("x-sticky-target") <= 1);
            plugin
                .respond(&stream, upstream.as_deref(), &[("set-cookie", &set_cookie)])
                .unwrap_or_else(|e| {
                    panic!(
                        "trap on response half ({e}); set-cookie {:?}",
                        String::from_utf8_lossy(&set_cookie)
                    )
                });
            executions += 1;
        }
        assert!(plugin.unsupported_calls().is_empty());
    }
    println!("fuzz: {executions} executions in {} s, 0 traps", 2 * seconds);
}
