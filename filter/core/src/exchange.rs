//! One HTTP exchange through the filter, written once for every shell: what to read from the
//! request, where to route it, what to learn from the response and which cookie to set. A shell
//! implements [`ExchangeHost`] over its host's calls (proxy-wasm, Envoy's dynamic-module ABI, a
//! fake in tests) and calls [`Exchange::on_request_headers`] and
//! [`Exchange::on_response_headers`] from its hooks.

use std::sync::Arc;

use crate::cache::CookieCache;
use crate::counters::Counter;
use crate::listener::{
    CompiledListener, CookieStatus, RequestDecision, ResponseDecision, SessionCarriers, TargetIndex,
};
use crate::plugin::{PluginConfig, UpstreamReport};

/// What an exchange needs from its host. Header names are lowercase.
pub trait ExchangeHost {
    /// A header value as the host lends it (borrowed from the host, or a copy).
    type Value<'a>: AsRef<[u8]>
    where
        Self: 'a;

    /// The first value of a request header.
    fn request_header(&self, name: &str) -> Option<Self::Value<'_>>;
    /// Every value of a request header (HTTP/1.1 may carry several `Cookie` lines).
    fn request_header_values(&self, name: &str) -> Vec<Self::Value<'_>>;
    /// Replaces every value of a request header with `value`.
    fn set_request_header(&mut self, name: &str, value: &[u8]);
    fn remove_request_header(&mut self, name: &str);
    /// The first value of a response header.
    fn response_header(&self, name: &str) -> Option<Self::Value<'_>>;
    /// Every value of a response header (`set-cookie` has several).
    fn response_header_values(&self, name: &str) -> Vec<Self::Value<'_>>;
    fn remove_response_header(&mut self, name: &str);
    fn add_response_header(&mut self, name: &str, value: &[u8]);
    /// The address of the upstream that answered, asked of the host itself: only used when the
    /// route does not add the upstream header (dearer in some hosts).
    fn upstream_address(&self) -> Option<Vec<u8>>;
    /// Wall-clock Unix milliseconds (0 if the host cannot tell, which expires nothing early).
    fn now_millis(&self) -> u64;
    /// A fresh 96-bit nonce from a CSPRNG, or `None` if none can be drawn.
    fn nonce(&self) -> Option<[u8; 12]>;
    fn count(&self, counter: Counter);
    fn warn(&self, message: &str);
}

/// The part of the plugin configuration every exchange reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSettings {
    pub routing_header: String,
    pub upstream_header: String,
    /// See `PluginConfig::unreachable_after_ms`.
    pub unreachable_after_ms: u64,
}

impl From<&PluginConfig> for ExchangeSettings {
    fn from(config: &PluginConfig) -> Self {
        Self {
            routing_header: config.routing_header.clone(),
            upstream_header: config.upstream_header.clone(),
            unreachable_after_ms: config.unreachable_after_ms,
        }
    }
}

/// What a request decided, carried to its response.
#[derive(Debug)]
pub struct Exchange {
    /// The state this request was decided with; the response is decided with the same.
    listener: Option<Arc<CompiledListener>>,
    decision: RequestDecision,
    /// The target named in the routing header.
    routed: Option<TargetIndex>,
    /// Wall-clock Unix seconds, and milliseconds, when the request came.
    now: u64,
    started_ms: u64,
    /// The target a WebSocket upgrade was answered by (`101`), in canonical form.
    upgraded_to: Option<Box<str>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self {
            listener: None,
            decision: RequestDecision::UNPINNED,
            routed: None,
            now: 0,
            started_ms: 0,
            upgraded_to: None,
        }
    }
}

impl Exchange {
    /// The target whose WebSocket this stream now carries, if it was upgraded: the shell closes
    /// it once a state no longer [keeps connections](CompiledListener::keeps_connections_to) to it.
    pub fn upgraded_to(&self) -> Option<&str> {
        self.upgraded_to.as_deref()
    }

    /// Decides a request with `listener` (the state in force, if any): reads the cookie, routes
    /// with the routing header (replacing any client copy) and remembers what the response needs.
    /// `sequence` gives the round-robin position for a request no cookie pins; `cache` holds
    /// the cookies this VM or worker already authenticated.
    pub fn on_request_headers<H: ExchangeHost>(
        host: &mut H,
        settings: &ExchangeSettings,
        listener: Option<Arc<CompiledListener>>,
        sequence: impl FnOnce() -> u64,
        cache: &mut CookieCache,
    ) -> Exchange {
        let mut exchange = Exchange::default();
        let Some(listener) = listener else {
            // No state yet: Envoy balances; a client's routing header never counts.
            host.count(Counter::NoState);
            remove_routing_header(host, settings);
            return exchange;
        };
        exchange.started_ms = host.now_millis();
        exchange.now = exchange.started_ms / 1000;
        if listener.has_policy() {
            let first_line = host.request_header("cookie");
            let session = listener.session_header().and_then(|name| host.request_header(name));
            let session_header = session.as_ref().map(AsRef::as_ref);
            let mut decide = |cookie: Option<&[u8]>| {
                listener.on_request_carried(SessionCarriers { cookie, session_header }, exchange.now, cache)
            };
            exchange.decision = decide(first_line.as_ref().map(AsRef::as_ref));
            // Nearly every request has one Cookie line: the others are read (in proxy-wasm, a
            // copy of the whole header map) only when the first held no cookie to decide by.
            if first_line.is_some() && exchange.decision.cookie == CookieStatus::Absent {
                let lines = host.request_header_values("cookie");
                if lines.len() > 1 {
                    exchange.decision = decide(crate::cookies::one_cookie_header(&lines).as_deref());
                }
            }
            drop(first_line);
            drop(session);
            if let Some(counter) = Counter::for_request(&exchange.decision) {
                host.count(counter);
            }
        }
        // Pinned: the cookie's target. Otherwise the filter balances over the healthy targets of
        // its state itself, so a deregistered target is out at once, not at Envoy's next EDS
        // refresh, and a target Envoy could not reach is skipped.
        exchange.routed = exchange
            .decision
            .pinned
            .or_else(|| listener.pick(sequence(), exchange.now));
        match exchange.routed.and_then(|i| listener.target(i)) {
            // Replacing drops every client-supplied copy of the header.
            Some(target) => host.set_request_header(&settings.routing_header, target.routing_value.as_bytes()),
            None => remove_routing_header(host, settings),
        }
        if listener.has_policy() || exchange.routed.is_some() {
            exchange.listener = Some(listener);
        }
        exchange
    }

    /// Decides the response: learns which target answered (and whether Envoy could not reach
    /// the one it was sent to), then sets, refreshes or deletes the cookie. `current` is the
    /// state in force now, which may be newer than the one that decided the request: what is
    /// learnt about targets goes there.
    pub fn on_response_headers<H: ExchangeHost>(
        &mut self,
        host: &mut H,
        settings: &ExchangeSettings,
        current: Option<&CompiledListener>,
    ) {
        let Some(listener) = self.listener.take() else {
            host.remove_response_header(&settings.upstream_header);
            return;
        };
        // Borrowed from the host until the end: the header is removed last (Envoy's route adds
        // it to every response; it never reaches the client).
        let from_header = host.response_header(&settings.upstream_header);
        let asked = match from_header {
            Some(_) => None,
            None => host.upstream_address(),
        };
        let upstream = from_header.as_ref().map(AsRef::as_ref).or(asked.as_deref());
        let report = upstream.map(UpstreamReport::parse);
        let routed = self
            .routed
            .and_then(|i| listener.target(i))
            .map(|t| t.address.as_bytes());
        let gave_up = report.is_some_and(|r| r.failed);
        // Only the WebSocket route marks its answers, so other responses cost no status read.
        if let Some(report) = report.filter(|r| r.upgrade && !r.failed)
            && host
                .response_header(":status")
                .is_some_and(|status| status.as_ref() == b"101")
        {
            self.upgraded_to = std::str::from_utf8(report.address)
                .ok()
                .and_then(crate::listener::canonical_address);
        }
        // Read only on a failover: how long the exchange took, and how many attempts Envoy's
        // route reports it took.
        let confirm = || {
            host.now_millis().saturating_sub(self.started_ms) >= settings.unreachable_after_ms
                && (gave_up
                    || host
                        .response_header("x-envoy-attempt-count")
                        .is_some_and(|count| count.as_ref() != b"1"))
        };
        let learner = current.unwrap_or(&listener);
        if let Some((target, why)) = learner.observe_answer(routed, report, confirm, self.now) {
            host.count(Counter::Unreachable);
            if let Some(target) = learner.target(target) {
                host.warn(&format!(
                    "sticky: target {} ({}) unreachable for {} s: {}",
                    target.id,
                    target.address,
                    crate::listener::UNREACHABLE_HOLD_SECONDS,
                    why.as_str()
                ));
            }
        }
        let decided = if listener.has_policy() {
            // Envoy's own 503 after giving up on the upstream: nobody answered.
            let answered = report.filter(|r| !r.failed).map(|r| r.address);
            let set_cookies = if listener.reads_response_cookies() {
                host.response_header_values("set-cookie")
            } else {
                Vec::new()
            };
            let response = listener.on_response(
                &self.decision,
                answered,
                set_cookies.iter().map(AsRef::as_ref),
                self.now,
                || host.nonce(),
            );
            if let Some(counter) = Counter::for_response(response.outcome) {
                host.count(counter);
            }
            Some(response)
        } else {
            None
        };
        let had_header = from_header.is_some();
        drop(from_header);
        if had_header {
            host.remove_response_header(&settings.upstream_header);
        }
        if let Some(response) = decided {
            add_session_headers(host, &listener, &response);
        }
    }
}

/// Adds what `response` issues: the cookie, its CORS twin, the session header.
fn add_session_headers<H: ExchangeHost>(host: &mut H, listener: &CompiledListener, response: &ResponseDecision) {
    for set_cookie in response.set_cookies() {
        host.add_response_header("set-cookie", set_cookie.as_bytes());
    }
    if let (Some(name), Some(value)) = (listener.session_header(), &response.session_value) {
        // Ours only: a copy the upstream set does not reach the client beside it.
        host.remove_response_header(name);
        host.add_response_header(name, value.as_bytes());
    }
}

/// Removes a client-supplied routing header. Reading first: a read of an absent header is the
/// cheaper call in proxy-wasm, and clients almost never send it.
fn remove_routing_header<H: ExchangeHost>(host: &mut H, settings: &ExchangeSettings) {
    if host.request_header(&settings.routing_header).is_some() {
        host.remove_request_header(&settings.routing_header);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::testing::{filter_state, lb_cookie_policy, ring_state, targets};

    const T1: &str = "127.0.0.1:9001";
    const T2: &str = "127.0.0.1:9002";

    /// The routing header naming `target`: twice, so Envoy's first retry goes to it again.
    fn routed_to(target: &str) -> String {
        format!("{target},{target}")
    }
    const NOW_MS: u64 = 1_700_000_000_000;

    /// Header lists, a fixed clock and a log of counters: the least a host is.
    #[derive(Default)]
    struct ListHost {
        request: Vec<(String, Vec<u8>)>,
        response: Vec<(String, Vec<u8>)>,
        counted: RefCell<Vec<Counter>>,
    }

    fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    impl ExchangeHost for ListHost {
        type Value<'a> = &'a [u8];

        fn request_header(&self, name: &str) -> Option<&[u8]> {
            values(&self.request, name).first().copied()
        }
        fn request_header_values(&self, name: &str) -> Vec<&[u8]> {
            values(&self.request, name)
        }
        fn set_request_header(&mut self, name: &str, value: &[u8]) {
            self.remove_request_header(name);
            self.request.push((name.to_owned(), value.to_vec()));
        }
        fn remove_request_header(&mut self, name: &str) {
            self.request.retain(|(k, _)| k != name);
        }
        fn response_header(&self, name: &str) -> Option<&[u8]> {
            values(&self.response, name).first().copied()
        }
        fn response_header_values(&self, name: &str) -> Vec<&[u8]> {
            values(&self.response, name)
        }
        fn remove_response_header(&mut self, name: &str) {
            self.response.retain(|(k, _)| k != name);
        }
        fn add_response_header(&mut self, name: &str, value: &[u8]) {
            self.response.push((name.to_owned(), value.to_vec()));
        }
        fn upstream_address(&self) -> Option<Vec<u8>> {
            None
        }
        fn now_millis(&self) -> u64 {
            NOW_MS
        }
        fn nonce(&self) -> Option<[u8; 12]> {
            Some([9; 12])
        }
        fn count(&self, counter: Counter) {
            self.counted.borrow_mut().push(counter);
        }
        fn warn(&self, _message: &str) {}
    }

    fn settings() -> ExchangeSettings {
        ExchangeSettings::from(&PluginConfig::new(None))
    }

    fn listener() -> Arc<CompiledListener> {
        let state = filter_state(
            Some(lb_cookie_policy(600)),
            targets(&[T1, T2], &[]),
            ring_state(&[(1, 5)], 1),
        );
        Arc::new(CompiledListener::compile(&state).unwrap())
    }

    /// One exchange: `request` headers in, the target `upstream` answers.
    fn run(listener: Option<Arc<CompiledListener>>, request: &[(&str, &[u8])], upstream: &str) -> ListHost {
        let mut host = ListHost {
            request: request.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect(),
            ..ListHost::default()
        };
        let settings = settings();
        let current = listener.clone();
        let mut exchange =
            Exchange::on_request_headers(&mut host, &settings, listener, || 0, &mut CookieCache::default());
        host.response
            .push((settings.upstream_header.clone(), format!("{upstream} -").into_bytes()));
        exchange.on_response_headers(&mut host, &settings, current.as_deref());
        host
    }

    /// One exchange with `listener`: a request without headers, then `response`.
    fn respond(listener: &Arc<CompiledListener>, response: &[(&str, &[u8])]) -> (ListHost, Exchange) {
        let mut host = ListHost::default();
        let settings = settings();
        let mut exchange = Exchange::on_request_headers(
            &mut host,
            &settings,
            Some(Arc::clone(listener)),
            || 0,
            &mut CookieCache::default(),
        );
        host.response = response.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect();
        exchange.on_response_headers(&mut host, &settings, Some(listener));
        (host, exchange)
    }

    #[test]
    fn without_a_state_a_client_routing_header_is_removed_and_nothing_is_set() {
        let host = run(None, &[("x-sticky-target", T2.as_bytes())], T1);
        assert!(values(&host.request, "x-sticky-target").is_empty());
        assert!(values(&host.response, "set-cookie").is_empty());
        assert_eq!(*host.counted.borrow(), [Counter::NoState]);
    }

    #[test]
    fn a_first_visit_is_routed_by_the_filter_and_gets_a_cookie_for_the_target_that_answered() {
        let host = run(Some(listener()), &[("x-sticky-target", b"10.0.0.9:80")], T2);
        assert_eq!(values(&host.request, "x-sticky-target").len(), 1, "one routing header");
        assert_ne!(values(&host.request, "x-sticky-target")[0], b"10.0.0.9:80");
        assert!(
            values(&host.response, "x-sticky-upstream").is_empty(),
            "never reaches the client"
        );
        assert_eq!(values(&host.response, "set-cookie").len(), 1);
        assert_eq!(*host.counted.borrow(), [Counter::Assigned]);
    }

    #[test]
    fn the_session_header_the_client_gets_is_the_filters_alone() {
        let mut state = filter_state(
            Some(lb_cookie_policy(600)),
            targets(&[T1, T2], &[]),
            ring_state(&[(1, 5)], 1),
        );
        state.session_header = Some("x-sticky-session".into());
        let listener = Arc::new(CompiledListener::compile(&state).unwrap());
        let (host, _) = respond(
            &listener,
            &[
                ("x-sticky-upstream", format!("{T1} -").as_bytes()),
                ("x-sticky-session", b"from-the-app"),
            ],
        );
        let sessions = values(&host.response, "x-sticky-session");
        assert_eq!(sessions.len(), 1);
        assert_ne!(sessions[0], b"from-the-app");
        assert_eq!(values(&host.response, "set-cookie").len(), 1);
    }

    /// The `name=value` of the cookie a first visit answered by `T2` gets.
    fn issued_cookie(listener: &Arc<CompiledListener>) -> String {
        let first = run(Some(Arc::clone(listener)), &[], T2);
        let set_cookie = String::from_utf8(values(&first.response, "set-cookie")[0].to_vec()).unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn a_valid_cookie_pins_and_is_counted_once() {
        let listener = listener();
        let cookie = issued_cookie(&listener);
        let hit = run(Some(listener), &[("cookie", cookie.as_bytes())], T2);
        assert_eq!(values(&hit.request, "x-sticky-target"), [routed_to(T2).as_bytes()]);
        assert!(
            values(&hit.response, "set-cookie").is_empty(),
            "a fresh cookie is not reissued"
        );
        assert_eq!(*hit.counted.borrow(), [Counter::Pinned]);
    }

    #[test]
    fn a_cookie_in_any_cookie_line_pins() {
        let listener = listener();
        let cookie = issued_cookie(&listener);
        let lines: [(&str, &[u8]); 3] = [
            ("cookie", b"theme=dark"),
            ("cookie", cookie.as_bytes()),
            ("cookie", b"lang=en"),
        ];
        let hit = run(Some(listener), &lines, T2);
        assert_eq!(values(&hit.request, "x-sticky-target"), [routed_to(T2).as_bytes()]);
        assert_eq!(*hit.counted.borrow(), [Counter::Pinned]);
    }

    /// The exchange after `upstream_value` (the upstream header) and `status` answered.
    fn answered(upstream_value: &str, status: &[u8]) -> Exchange {
        let response = [(":status", status), ("x-sticky-upstream", upstream_value.as_bytes())];
        respond(&listener(), &response).1
    }

    #[test]
    fn a_websocket_is_watched_only_once_upgraded_on_the_websocket_route() {
        assert_eq!(answered(&format!("{T1} - upgrade"), b"101").upgraded_to(), Some(T1));
        // An IPv6 target is known in the form the state is compiled to.
        assert_eq!(
            answered("[0:0::1]:9001 - upgrade", b"101").upgraded_to(),
            Some("[::1]:9001")
        );
        for (value, status, why) in [
            (format!("{T1} - upgrade"), &b"400"[..], "the target refused the upgrade"),
            (
                format!("{T1} UF,URX upgrade"),
                b"503",
                "Envoy gave up: nothing upgraded",
            ),
            (format!("{T1} -"), b"101", "not the WebSocket route: nothing watched"),
        ] {
            assert_eq!(answered(&value, status).upgraded_to(), None, "{why}");
        }
    }
}
