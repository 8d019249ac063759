//! A listener's compiled state and the stickiness decisions of docs/design.md §2.
//!
//! [`CompiledListener::compile`] validates a [`FilterState`] once and builds the lookup maps a request
//! needs; [`CompiledListener::on_request`] and [`CompiledListener::on_response`] are then pure functions of the
//! headers, the clock and (for new cookies) a nonce.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::{CookieCache, OpenedSession};
use crate::codec::{Binding, CookieContent, KeyRing, MAX_TARGET_ID_LEN, PolicyKind, open_buffer};
use crate::cookies::{self, AppCookieChange, Lifetime};
use crate::error::{JsonError, Rejection, StateError};
use crate::plugin::UpstreamReport;
use crate::state::{CookieSettings, FilterState, PolicyState, SameSite};

/// The cookies, and header, of one request that may carry its session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCarriers<'a> {
    /// The `Cookie` header.
    pub cookie: Option<&'a [u8]>,
    /// The session header (when the listener names one).
    pub session_header: Option<&'a [u8]>,
}

/// At most this many stickiness cookies of one request are tried (bounds the work a client can
/// cause with a header full of them).
const MAX_COOKIE_ATTEMPTS: usize = 4;

/// The latest expiry a cookie can carry (the wire format's u32 seconds).
const MAX_EXPIRY: u64 = u32::MAX as u64;

/// How long a target Envoy could not reach gets no request from the filter (pinned or not):
/// as long as Envoy's outlier detection ejects it (`base_ejection_time`), by which time the
/// health check has decided. Envoy's `override_host` keeps sending requests that name an
/// ejected host to it, so the filter must stop naming it.
pub const UNREACHABLE_HOLD_SECONDS: u64 = 30;

/// Index of a target in the listener's target list.
pub type TargetIndex = usize;

/// `ip:port` in the one form Envoy prints it (`upstream.address`, `%UPSTREAM_REMOTE_ADDRESS%`),
/// or `None` if it is not one.
pub fn canonical_address(text: &str) -> Option<Box<str>> {
    text.parse::<SocketAddr>()
        .ok()
        .map(|address| address.to_string().into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: Box<str>,
    pub address: Box<str>,
    /// The routing header's value for this target: its address twice. Envoy's `override_host`
    /// sends an attempt to the first address and the first retry to the second, so a request
    /// that failed on this target (a reset on a reused keep-alive connection, the commonest
    /// failure of a healthy target) is tried once more on it, on a new connection, before the
    /// fallback picks another target: one benign race never moves a session.
    pub routing_value: Box<str>,
    pub healthy: bool,
    /// Session draining: its sessions stay, no new one is placed on it.
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Policy {
    LbCookie {
        /// 0: browser-session cookie.
        period: u64,
        /// Absolute lifetime from the session's start; 0: none.
        max_lifetime: u64,
    },
    AppCookie {
        app_cookie_name: String,
        duration: Option<u64>,
    },
}

impl Policy {
    fn kind(&self) -> PolicyKind {
        match self {
            Policy::LbCookie { .. } => PolicyKind::LbCookie,
            Policy::AppCookie { .. } => PolicyKind::AppCookie,
        }
    }

    /// The longest a cookie may live under this policy, counted from its issue time.
    fn max_age(&self) -> Option<u64> {
        match self {
            Policy::LbCookie { period: 0, .. } => None,
            Policy::LbCookie { period, .. } => Some(*period),
            Policy::AppCookie { duration, .. } => duration.filter(|d| *d > 0),
        }
    }
}

/// Keys to target indices, sorted by key.
#[derive(Debug)]
struct SortedIndex(Vec<(Box<[u8]>, TargetIndex)>);

impl SortedIndex {
    /// Sorts the entries; a key listed twice is refused with the index of its second target.
    fn new(mut entries: Vec<(Box<[u8]>, TargetIndex)>) -> Result<Self, TargetIndex> {
        entries.sort_unstable();
        let duplicate = entries.windows(2).find_map(|pair| match pair {
            [a, b] if a.0 == b.0 => Some(a.1.max(b.1)),
            _ => None,
        });
        match duplicate {
            Some(index) => Err(index),
            None => Ok(Self(entries)),
        }
    }

    fn get(&self, key: &[u8]) -> Option<TargetIndex> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, index)| *index)
    }
}

/// How the filter learnt that Envoy could not reach a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Envoy answered its own 503 after giving up on it (response flags).
    EnvoyGaveUp,
    /// A request routed to it was retried and answered by another target.
    RetriedElsewhere,
}

impl Unreachable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unreachable::EnvoyGaveUp => "Envoy gave up on it (its own 503)",
            Unreachable::RetriedElsewhere => "a request routed to it was retried on another target",
        }
    }
}

/// A validated state, ready to decide requests. Built once per state change.
#[derive(Debug)]
pub struct CompiledListener {
    version: u64,
    policy: Option<(Policy, Binding)>,
    cookie: CookieSettings,
    /// The CORS twin's settings, when the listener issues one.
    twin: Option<CookieSettings>,
    session_header: Option<String>,
    targets: Vec<Target>,
    /// Sorted lookup tables: a binary search costs no hashing and keeps the artifact small.
    by_id: SortedIndex,
    by_address: SortedIndex,
    /// The healthy targets not draining, for requests no cookie pins.
    healthy: Vec<TargetIndex>,
    /// Canonical addresses Envoy still holds connections to without routing requests there
    /// (connection draining without session draining).
    draining_endpoints: SortedIndex,
    keys: KeyRing,
    /// Per target, until when (Unix seconds) it counts as unreachable: the one thing requests
    /// change, learnt from responses ([`CompiledListener::observe_answer`]). Atomics, so a listener
    /// shared between requests (or threads) needs no lock.
    unreachable_until: Vec<AtomicU64>,
}

/// What a request's stickiness cookie turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieStatus {
    /// No stickiness cookie, or none needed (app policy without the app cookie, or no policy).
    Absent,
    /// Valid: the request is pinned to `target`.
    Valid {
        target: TargetIndex,
        issued_at: u64,
        expires_at: u64,
        session_start: u64,
    },
    /// Not honoured. When the cookie was authentic but its target is gone, `expires_at` and
    /// `session_start` keep what it sealed, so a rewritten cookie keeps the session's lifetime.
    Rejected {
        reason: Rejection,
        expires_at: Option<u64>,
        session_start: Option<u64>,
    },
}

/// What a stickiness cookie seals (see [`CompiledListener::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSession {
    pub key_id: u16,
    pub issued_at: u64,
    /// 0: a browser-session cookie.
    pub expires_at: u64,
    pub session_start: u64,
    pub target_id: String,
}

/// A cookie value looked at by an operator: what it seals when it opens, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieInspection {
    pub sealed: Option<SealedSession>,
    pub status: CookieStatus,
}

/// The request half of a decision, carried to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDecision {
    /// The target to route to, if the request is pinned.
    pub pinned: Option<TargetIndex>,
    pub cookie: CookieStatus,
    /// The application cookie of an app-cookie policy was present (and not empty).
    pub app_cookie_present: bool,
}

impl RequestDecision {
    /// Decision for a request when no policy applies.
    pub const UNPINNED: RequestDecision = RequestDecision {
        pinned: None,
        cookie: CookieStatus::Absent,
        app_cookie_present: false,
    };
}

/// What the response half did; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Nothing to set (no policy, a valid cookie that needs no refresh, app cookie not set).
    Unchanged,
    /// A session started: a new cookie names the target that answered.
    Assigned,
    /// The cookie's expiry slid forward (LB cookie), or followed a re-set app cookie.
    Refreshed,
    /// The cookie's target was gone (deregistered or unhealthy): the new cookie names the new target.
    Repinned,
    /// The application deleted its cookie: the stickiness cookie is deleted too.
    Deleted,
    /// The answering upstream is not a registered target (or there was none): nothing issued.
    UnknownUpstream,
    /// The answering upstream is registered but unhealthy: nothing issued.
    UnhealthyUpstream,
    /// The answering upstream is draining: no session starts or moves there.
    DrainingUpstream,
    /// No nonce could be drawn: nothing issued.
    NoNonce,
}

/// The response half of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseDecision {
    pub outcome: ResponseOutcome,
    /// A `Set-Cookie` value to add to the response.
    pub set_cookie: Option<String>,
    /// The CORS twin's `Set-Cookie`, beside `set_cookie`.
    pub set_twin: Option<String>,
    /// The sealed session for the session header (empty: the session ended).
    pub session_value: Option<String>,
}

impl ResponseDecision {
    fn nothing(outcome: ResponseOutcome) -> Self {
        Self {
            outcome,
            set_cookie: None,
            set_twin: None,
            session_value: None,
        }
    }

    /// Every `Set-Cookie` value to add, the twin last.
    pub fn set_cookies(&self) -> impl Iterator<Item = &str> {
        self.set_cookie.iter().chain(&self.set_twin).map(String::as_str)
    }
}

impl CompiledListener {
    /// Parses and validates a JSON state.
    pub fn from_json(json: &[u8]) -> Result<Self, StateError> {
        let state: FilterState = serde_json::from_slice(json).map_err(JsonError::from)?;
        Self::compile(&state)
    }

    /// Validates a state and builds its lookup structures.
    pub fn compile(state: &FilterState) -> Result<Self, StateError> {
        let cookie = state.cookie.clone();
        if !cookies::is_cookie_name(&cookie.name) {
            return Err(StateError::CookieName(cookie.name));
        }
        if !cookies::is_cookie_path(&cookie.path) {
            return Err(StateError::CookiePath(cookie.path));
        }
        if cookie.same_site == SameSite::None && !cookie.secure {
            return Err(StateError::SameSiteNoneWithoutSecure);
        }
        if let Some(domain) = &cookie.domain
            && !cookies::is_cookie_domain(domain)
        {
            return Err(StateError::CookieDomain(domain.clone()));
        }
        if cookie.partitioned && !cookie.secure {
            return Err(StateError::PartitionedWithoutSecure);
        }
        let twin = cookie.cors_twin.then(|| cookies::twin_settings(&cookie));
        if let Some(twin) = &twin
            && !cookies::is_cookie_name(&twin.name)
        {
            return Err(StateError::CookieName(twin.name.clone()));
        }
        if let Some(header) = &state.session_header
            && !cookies::is_session_header(header)
        {
            return Err(StateError::SessionHeader(header.clone()));
        }
        let policy = match &state.policy {
            None => None,
            Some(PolicyState::LbCookie {
                expiration_period,
                max_lifetime,
            }) => Some(Policy::LbCookie {
                period: *expiration_period,
                max_lifetime: *max_lifetime,
            }),
            Some(PolicyState::AppCookie {
                app_cookie_name,
                duration_seconds,
            }) => {
                if !cookies::is_cookie_name(app_cookie_name) {
                    return Err(StateError::CookieName(app_cookie_name.clone()));
                }
                if *app_cookie_name == cookie.name {
                    return Err(StateError::CookieNameClash(cookie.name));
                }
                if let Some(twin) = &twin
                    && *app_cookie_name == twin.name
                {
                    return Err(StateError::CookieNameClash(twin.name.clone()));
                }
                Some(Policy::AppCookie {
                    app_cookie_name: app_cookie_name.clone(),
                    duration: *duration_seconds,
                })
            }
        };
        let policy = match policy {
            Some(policy) => {
                let binding = Binding::new(policy.kind(), state.listener_port, &state.load_balancer)?;
                Some((policy, binding))
            }
            // Still validate the name, so a state is refused the same way with or without a policy.
            None => Binding::new(PolicyKind::LbCookie, state.listener_port, &state.load_balancer).map(|_| None)?,
        };
        let keys = KeyRing::from_state(&state.keys)?;

        let mut targets = Vec::with_capacity(state.targets.len());
        let mut by_id = Vec::with_capacity(state.targets.len());
        let mut by_address = Vec::with_capacity(state.targets.len());
        for (index, target) in state.targets.iter().enumerate() {
            let id_ok = !target.id.is_empty()
                && target.id.len() <= MAX_TARGET_ID_LEN
                && target.id.bytes().all(|b| b.is_ascii_graphic());
            if !id_ok {
                return Err(StateError::TargetId(target.id.clone()));
            }
            let address: SocketAddr = target.address.parse().map_err(|_| StateError::TargetAddress {
                id: target.id.clone(),
                address: target.address.clone(),
            })?;
            // Canonical form, as Envoy prints `upstream.address`.
            let address: Box<str> = address.to_string().into();
            by_id.push((Box::<[u8]>::from(target.id.as_bytes()), index));
            by_address.push((Box::<[u8]>::from(address.as_bytes()), index));
            targets.push(Target {
                id: target.id.as_str().into(),
                routing_value: format!("{address},{address}").into(),
                address,
                healthy: target.healthy,
                draining: target.draining,
            });
        }
        let listed = |i: TargetIndex, field: fn(&crate::state::TargetState) -> &String| {
            state.targets.get(i).map(|t| field(t).clone()).unwrap_or_default()
        };
        let by_id = SortedIndex::new(by_id).map_err(|i| StateError::DuplicateTargetId(listed(i, |t| &t.id)))?;
        let by_address =
            SortedIndex::new(by_address).map_err(|i| StateError::DuplicateTargetAddress(listed(i, |t| &t.address)))?;
        let healthy = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.healthy && !t.draining)
            .map(|(i, _)| i)
            .collect();
        let mut draining_endpoints = Vec::with_capacity(state.draining_endpoints.len());
        for (index, address) in state.draining_endpoints.iter().enumerate() {
            let canonical = canonical_address(address).ok_or_else(|| StateError::DrainingEndpoint(address.clone()))?;
            draining_endpoints.push((Box::<[u8]>::from(canonical.as_bytes()), index));
        }
        let draining_endpoints = SortedIndex::new(draining_endpoints).map_err(|i| {
            StateError::DuplicateTargetAddress(state.draining_endpoints.get(i).cloned().unwrap_or_default())
        })?;
        Ok(Self {
            version: state.version,
            policy,
            cookie,
            twin,
            session_header: state.session_header.clone(),
            targets,
            by_id,
            by_address,
            healthy,
            draining_endpoints,
            keys,
            unreachable_until: state.targets.iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The target for a request no cookie pins: the `sequence`-th healthy target, round robin
    /// (None when no target is healthy). Choosing here, from the state, rather than leaving it
    /// to Envoy's endpoints means a deregistered target gets no new request from the moment
    /// the filter has the new state, whatever Envoy's EDS still lists.
    ///
    /// A target Envoy could not reach a moment ago is skipped while others are left; when
    /// every healthy target is unreachable, the round robin goes on over all of them.
    pub fn pick(&self, sequence: u64, now: u64) -> Option<TargetIndex> {
        let count = u64::try_from(self.healthy.len()).ok().filter(|c| *c > 0)?;
        let slot = usize::try_from(sequence % count).ok()?;
        let (head, from_slot) = self.healthy.split_at(slot);
        from_slot
            .iter()
            .chain(head)
            .copied()
            .find(|&target| !self.is_unreachable(target, now))
            .or_else(|| self.healthy.get(slot).copied())
    }

    /// Whether Envoy could not reach `target` within the last [`UNREACHABLE_HOLD_SECONDS`].
    pub fn is_unreachable(&self, target: TargetIndex, now: u64) -> bool {
        self.unreachable_until
            .get(target)
            .is_some_and(|until| until.load(Ordering::Relaxed) > now)
    }

    /// Passive detection, from a response: the filter named the target at `routed` (`ip:port`)
    /// in the routing header, and the route reported the last upstream Envoy tried (`report`).
    /// `confirm` says whether the evidence holds: Envoy retried the request or gave up on it,
    /// after waiting on the target long enough to mean it is gone (asked only when there is
    /// evidence; see `PluginConfig::unreachable_after_ms`).
    ///
    /// - Envoy gave up on the reported target (connect failure, connection terminated or
    ///   reset: its own 503): that target is unreachable.
    /// - Another registered target answered: `override_host` tries the named host first, so
    ///   Envoy could not reach `routed`. (Unconfirmed: Envoy did not know `routed` yet, its
    ///   endpoints lagging the filter's state, or retried at once after a refused connection.)
    /// - A target that answered is reachable: its own mark, if any, is cleared.
    ///
    /// An unreachable target gets no request for [`UNREACHABLE_HOLD_SECONDS`] and cookies
    /// naming it are rewritten. Returns the target marked, and why. Addresses rather than
    /// indices, so the shell can tell the listener in force when the response comes, which may
    /// be newer than the one that routed the request.
    pub fn observe_answer(
        &self,
        routed: Option<&[u8]>,
        report: Option<UpstreamReport<'_>>,
        confirm: impl FnOnce() -> bool,
        now: u64,
    ) -> Option<(TargetIndex, Unreachable)> {
        let (reported, failed) = report.and_then(|r| Some((self.by_address.get(r.address)?, r.failed)))?;
        if failed {
            return (confirm() && self.mark_unreachable(reported, now)).then_some((reported, Unreachable::EnvoyGaveUp));
        }
        if let Some(mark) = self.unreachable_until.get(reported)
            && mark.load(Ordering::Relaxed) != 0
        {
            mark.store(0, Ordering::Relaxed);
        }
        match routed.and_then(|a| self.by_address.get(a)) {
            Some(routed) if routed != reported && confirm() => self
                .mark_unreachable(routed, now)
                .then_some((routed, Unreachable::RetriedElsewhere)),
            _ => None,
        }
    }

    fn mark_unreachable(&self, target: TargetIndex, now: u64) -> bool {
        match self.unreachable_until.get(target) {
            Some(until) => {
                until.store(now.saturating_add(UNREACHABLE_HOLD_SECONDS), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Keeps what `previous` (the state this one replaces) learnt of unreachable targets, for
    /// the targets both list, healthy, with the same id and address. (A target the health
    /// check had marked unhealthy and now finds healthy again starts afresh.)
    pub fn carry_unreachable_from(&self, previous: &CompiledListener) {
        for (target, until) in previous.targets.iter().zip(&previous.unreachable_until) {
            let until = until.load(Ordering::Relaxed);
            if until == 0 || !target.healthy {
                continue;
            }
            let same = self
                .by_id
                .get(target.id.as_bytes())
                .filter(|&i| self.targets.get(i).is_some_and(|t| t.address == target.address));
            if let Some(mark) = same.and_then(|i| self.unreachable_until.get(i)) {
                mark.store(until, Ordering::Relaxed);
            }
        }
    }

    /// Whether some healthy target is not marked unreachable.
    fn any_reachable(&self, now: u64) -> bool {
        self.healthy.iter().any(|&t| !self.is_unreachable(t, now))
    }

    pub fn has_policy(&self) -> bool {
        self.policy.is_some()
    }

    /// True when the response's `Set-Cookie` headers matter (app-cookie policy).
    pub fn reads_response_cookies(&self) -> bool {
        matches!(self.policy, Some((Policy::AppCookie { .. }, _)))
    }

    pub fn target(&self, index: TargetIndex) -> Option<&Target> {
        self.targets.get(index)
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Whether connections to `address` (as [`canonical_address`] writes it) may stay open: it
    /// is a target, or an endpoint still draining. A WebSocket to any other address is closed:
    /// its target was deregistered and its connection draining, if any, is over.
    pub fn keeps_connections_to(&self, address: &str) -> bool {
        self.by_address.get(address.as_bytes()).is_some() || self.draining_endpoints.get(address.as_bytes()).is_some()
    }

    pub fn cookie_settings(&self) -> &CookieSettings {
        &self.cookie
    }

    /// The header carrying sessions of clients without cookies, if the listener has one.
    pub fn session_header(&self) -> Option<&str> {
        self.session_header.as_deref()
    }

    /// Decides a request from its `Cookie` header.
    pub fn on_request(&self, cookie_header: Option<&[u8]>, now: u64) -> RequestDecision {
        let carriers = SessionCarriers {
            cookie: cookie_header,
            session_header: None,
        };
        self.decide_request(carriers, now, None)
    }

    /// Decides a request from every carrier of its session: the session header first, then the
    /// CORS twin, then the cookie, the first valid one pinning.
    pub fn on_request_carried(
        &self,
        carriers: SessionCarriers<'_>,
        now: u64,
        cache: &mut CookieCache,
    ) -> RequestDecision {
        self.decide_request(carriers, now, Some(cache))
    }

    /// [`CompiledListener::on_request`], remembering the cookies it authenticates in `cache` and
    /// not opening again those it already holds: the same decisions, cheaper sticky hits.
    pub fn on_request_cached(
        &self,
        cookie_header: Option<&[u8]>,
        now: u64,
        cache: &mut CookieCache,
    ) -> RequestDecision {
        let carriers = SessionCarriers {
            cookie: cookie_header,
            session_header: None,
        };
        self.decide_request(carriers, now, Some(cache))
    }

    fn decide_request(
        &self,
        carriers: SessionCarriers<'_>,
        now: u64,
        mut cache: Option<&mut CookieCache>,
    ) -> RequestDecision {
        let Some((policy, binding)) = &self.policy else {
            return RequestDecision::UNPINNED;
        };
        let header = carriers.cookie.unwrap_or_default();
        let from_header = carriers.session_header.filter(|_| self.session_header.is_some());
        if carriers.cookie.is_none() && from_header.is_none() {
            return RequestDecision::UNPINNED;
        }
        let app_cookie_present = match policy {
            Policy::LbCookie { .. } => false,
            Policy::AppCookie { app_cookie_name, .. } => {
                let present =
                    cookies::request_cookies(header).any(|(n, v)| n == app_cookie_name.as_bytes() && !v.is_empty());
                if !present {
                    // Without the app cookie nothing is sticky: no need to open anything.
                    return RequestDecision::UNPINNED;
                }
                present
            }
        };
        let mut status = CookieStatus::Absent;
        // The Cookie header is scanned for the twin only when the listener issues one.
        let twins = self
            .twin
            .as_ref()
            .into_iter()
            .flat_map(|twin| cookies::request_cookies(header).filter(move |(n, _)| *n == twin.name.as_bytes()));
        let ours = cookies::request_cookies(header).filter(|(n, _)| *n == self.cookie.name.as_bytes());
        let candidates = from_header
            .map(|value| (&b""[..], value))
            .into_iter()
            .chain(twins)
            .chain(ours);
        for (_, value) in candidates.take(MAX_COOKIE_ATTEMPTS) {
            let candidate = self.check_cookie(policy, binding, value, now, cache.as_deref_mut());
            if let CookieStatus::Valid { target, .. } = candidate {
                return RequestDecision {
                    pinned: Some(target),
                    cookie: candidate,
                    app_cookie_present,
                };
            }
            status = match (status, candidate) {
                // Keep the most telling rejection: an authentic cookie whose target is gone.
                (
                    CookieStatus::Rejected {
                        expires_at: Some(_), ..
                    },
                    _,
                ) => status,
                _ => candidate,
            };
        }
        RequestDecision {
            pinned: None,
            cookie: status,
            app_cookie_present,
        }
    }

    /// What one cookie value says under this listener, for an operator: what it seals, if it
    /// opens, and the filter's verdict on it at `now` (no key material). `None` without a policy.
    pub fn inspect(&self, value: &[u8], now: u64) -> Option<CookieInspection> {
        let (policy, binding) = self.policy.as_ref()?;
        let mut buf = open_buffer();
        let sealed = self
            .keys
            .open(binding, value, &mut buf)
            .ok()
            .map(|opened| SealedSession {
                key_id: opened.key_id,
                issued_at: opened.issued_at,
                expires_at: opened.expires_at,
                session_start: opened.session_start,
                target_id: String::from_utf8_lossy(opened.target_id).into_owned(),
            });
        Some(CookieInspection {
            sealed,
            status: self.check_cookie(policy, binding, value, now, None),
        })
    }

    fn check_cookie(
        &self,
        policy: &Policy,
        binding: &Binding,
        value: &[u8],
        now: u64,
        mut cache: Option<&mut CookieCache>,
    ) -> CookieStatus {
        let cached = cache.as_deref_mut().and_then(|c| c.get(self.version, value, now));
        let opened = match cached {
            Some(opened) => opened,
            None => {
                let mut buf = open_buffer();
                let opened = match self.keys.open(binding, value, &mut buf) {
                    Ok(opened) => OpenedSession {
                        issued_at: opened.issued_at,
                        expires_at: opened.expires_at,
                        session_start: opened.session_start,
                        target: self.by_id.get(opened.target_id),
                    },
                    Err(reason) => {
                        return CookieStatus::Rejected {
                            reason,
                            expires_at: None,
                            session_start: None,
                        };
                    }
                };
                if let Some(cache) = cache {
                    cache.put(self.version, value, opened);
                }
                opened
            }
        };
        let expired_by_seal = opened.expires_at != 0 && now >= opened.expires_at;
        let expired_by_policy = policy
            .max_age()
            .is_some_and(|age| now >= opened.issued_at.saturating_add(age));
        let lifetime_over = matches!(policy, Policy::LbCookie { max_lifetime, .. }
            if *max_lifetime > 0 && now >= opened.session_start.saturating_add(*max_lifetime));
        if expired_by_seal || expired_by_policy || lifetime_over {
            return CookieStatus::Rejected {
                reason: Rejection::Expired,
                expires_at: None,
                session_start: None,
            };
        }
        let gone = |reason| CookieStatus::Rejected {
            reason,
            expires_at: Some(opened.expires_at),
            session_start: Some(opened.session_start),
        };
        match opened.target {
            None => gone(Rejection::UnknownTarget),
            Some(index) if !self.targets.get(index).is_some_and(|t| t.healthy) => gone(Rejection::UnhealthyTarget),
            // Moved elsewhere only while there is somewhere else to go: with every healthy
            // target unreachable, sessions stay where they are rather than flap between them.
            Some(index) if self.is_unreachable(index, now) && self.any_reachable(now) => {
                gone(Rejection::UnreachableTarget)
            }
            Some(index) => CookieStatus::Valid {
                target: index,
                issued_at: opened.issued_at,
                expires_at: opened.expires_at,
                session_start: opened.session_start,
            },
        }
    }

    /// Decides what the response sets, knowing which upstream answered (`ip:port`, as Envoy's
    /// `upstream.address`) and the response's `Set-Cookie` values (read only for app cookies).
    pub fn on_response<'h>(
        &self,
        request: &RequestDecision,
        upstream: Option<&[u8]>,
        set_cookies: impl IntoIterator<Item = &'h [u8]>,
        now: u64,
        nonce: impl FnOnce() -> Option<[u8; 12]>,
    ) -> ResponseDecision {
        let Some((policy, binding)) = &self.policy else {
            return ResponseDecision::nothing(ResponseOutcome::Unchanged);
        };
        let answered = upstream.and_then(|a| self.by_address.get(a));
        match policy {
            Policy::LbCookie { period, max_lifetime } => {
                let expiry = |start: u64| {
                    let idle = (*period > 0).then(|| now.saturating_add(*period));
                    let absolute = (*max_lifetime > 0).then(|| start.saturating_add(*max_lifetime));
                    match (idle, absolute) {
                        (Some(idle), Some(absolute)) => Some(idle.min(absolute)),
                        (idle, absolute) => idle.or(absolute),
                    }
                };
                let (reason, start) = match request.cookie {
                    CookieStatus::Valid {
                        target,
                        issued_at,
                        expires_at,
                        session_start,
                    } if Some(target) == answered => {
                        // Refreshed once a quarter of the period has passed, unless the absolute
                        // lifetime already caps the expiry it would give.
                        let due = *period > 0
                            && now.saturating_sub(issued_at) >= period / 4
                            && expiry(session_start).unwrap_or(0) > expires_at;
                        if !due {
                            return ResponseDecision::nothing(ResponseOutcome::Unchanged);
                        }
                        (ResponseOutcome::Refreshed, session_start)
                    }
                    // The pinned target did not answer (Envoy could not route to it): move the session.
                    CookieStatus::Valid { session_start, .. } => (ResponseOutcome::Repinned, session_start),
                    CookieStatus::Rejected {
                        reason, session_start, ..
                    } if reason.is_target_gone() => (ResponseOutcome::Repinned, session_start.unwrap_or(now)),
                    CookieStatus::Rejected { .. } | CookieStatus::Absent => (ResponseOutcome::Assigned, now),
                };
                self.issue(binding, answered, (now, start), expiry(start), reason, nonce)
            }
            Policy::AppCookie {
                app_cookie_name,
                duration,
            } => {
                let change = set_cookies
                    .into_iter()
                    .filter_map(|h| cookies::app_cookie_change(h, app_cookie_name, now))
                    .last();
                let pinned_here =
                    matches!(request.cookie, CookieStatus::Valid { target, .. } if Some(target) == answered);
                let carried_start = match request.cookie {
                    CookieStatus::Valid { session_start, .. }
                    | CookieStatus::Rejected {
                        session_start: Some(session_start),
                        ..
                    } => Some(session_start),
                    _ => None,
                };
                let gone_expiry = match request.cookie {
                    CookieStatus::Rejected {
                        expires_at: Some(at), ..
                    } => Some(at),
                    CookieStatus::Valid { expires_at, .. } if !pinned_here => Some(expires_at),
                    _ => None,
                };
                let explicit = duration.filter(|d| *d > 0).map(|d| now.saturating_add(d));
                match change {
                    Some(AppCookieChange::Deleted) => ResponseDecision {
                        outcome: ResponseOutcome::Deleted,
                        set_cookie: Some(cookies::delete_cookie(&self.cookie)),
                        set_twin: self.twin.as_ref().map(cookies::delete_cookie),
                        session_value: None,
                    },
                    Some(AppCookieChange::Set(lifetime)) => {
                        let until = explicit.or(match lifetime {
                            Lifetime::Session => None,
                            Lifetime::Until(at) => Some(at),
                        });
                        let reason = if pinned_here {
                            ResponseOutcome::Refreshed
                        } else if request.app_cookie_present && gone_expiry.is_some() {
                            ResponseOutcome::Repinned
                        } else {
                            ResponseOutcome::Assigned
                        };
                        let start = match reason {
                            ResponseOutcome::Assigned => now,
                            _ => carried_start.unwrap_or(now),
                        };
                        self.issue(binding, answered, (now, start), until, reason, nonce)
                    }
                    // Failover: the session moves to the target that answered, even though the
                    // app did not set its cookie again. The sealed expiry is kept.
                    None => match gone_expiry {
                        Some(expires_at) if request.app_cookie_present => {
                            let until = (expires_at != 0).then_some(expires_at);
                            let start = carried_start.unwrap_or(now);
                            self.issue(binding, answered, (now, start), until, ResponseOutcome::Repinned, nonce)
                        }
                        _ => ResponseDecision::nothing(ResponseOutcome::Unchanged),
                    },
                }
            }
        }
    }

    fn issue(
        &self,
        binding: &Binding,
        answered: Option<TargetIndex>,
        (now, session_start): (u64, u64),
        until: Option<u64>,
        outcome: ResponseOutcome,
        nonce: impl FnOnce() -> Option<[u8; 12]>,
    ) -> ResponseDecision {
        let Some(target) = answered.and_then(|i| self.targets.get(i)) else {
            return ResponseDecision::nothing(ResponseOutcome::UnknownUpstream);
        };
        if !target.healthy {
            return ResponseDecision::nothing(ResponseOutcome::UnhealthyUpstream);
        }
        // A draining target keeps the sessions it has (refreshed) and gets no new one.
        if target.draining && outcome != ResponseOutcome::Refreshed {
            return ResponseDecision::nothing(ResponseOutcome::DrainingUpstream);
        }
        let Some(nonce) = nonce() else {
            return ResponseDecision::nothing(ResponseOutcome::NoNonce);
        };
        // Expiries are sealed as u32 seconds (year 2106); an app cookie may claim any Max-Age.
        let until = until.map(|at| at.min(MAX_EXPIRY));
        let content = CookieContent {
            target_id: &target.id,
            issued_at: now,
            expires_at: until.unwrap_or(0),
            session_start,
        };
        match self.keys.seal(binding, &content, nonce) {
            Ok(value) => ResponseDecision {
                outcome,
                set_cookie: Some(cookies::set_cookie(&self.cookie, &value, now, until)),
                set_twin: self
                    .twin
                    .as_ref()
                    .map(|twin| cookies::set_cookie(twin, &value, now, until)),
                session_value: self.session_header.is_some().then_some(value),
            },
            // Unreachable for validated target ids; never a reason to fail the response.
            Err(_) => ResponseDecision::nothing(ResponseOutcome::UnknownUpstream),
        }
    }
}
