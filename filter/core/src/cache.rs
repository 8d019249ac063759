//! Cookies a filter already authenticated, so that a sticky hit skips base64 and AES-GCM: a
//! shell keeps one cache per VM (wasm) or per worker (native) and hands it to
//! [`crate::CompiledListener::on_request_cached`]. Entries are keyed by the exact cookie bytes (a
//! changed byte is another cookie, opened and authenticated afresh), belong to one state version
//! (a new state, e.g. a rotated key ring, empties the cache), and are never used past the
//! cookie's own expiry. Every check that depends on the time or the targets (expiry, policy
//! age, health, reachability) still runs on every request: only the opening is remembered.
//! Bounded: [`COOKIE_CACHE_SLOTS`] slots, direct-mapped by a hash of the bytes, so a client
//! sending many cookies only evicts entries (a miss costs what it costs without the cache).

use crate::listener::TargetIndex;

/// How many opened cookies a cache holds.
pub const COOKIE_CACHE_SLOTS: usize = 256;

/// What opening a cookie told, for one state version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenedSession {
    pub issued_at: u64,
    pub expires_at: u64,
    pub session_start: u64,
    /// The sealed target id, looked up in that state.
    pub target: Option<TargetIndex>,
}

impl OpenedSession {
    fn alive(&self, now: u64) -> bool {
        self.expires_at == 0 || now < self.expires_at
    }
}

#[derive(Debug, Clone)]
pub struct CookieCache {
    version: Option<u64>,
    slots: Vec<Option<(Box<[u8]>, OpenedSession)>>,
}

impl Default for CookieCache {
    fn default() -> Self {
        Self {
            version: None,
            slots: vec![None; COOKIE_CACHE_SLOTS],
        }
    }
}

impl CookieCache {
    /// The opened cookie `value` of state `version`, if cached and not expired at `now`.
    pub(crate) fn get(&mut self, version: u64, value: &[u8], now: u64) -> Option<OpenedSession> {
        if self.version != Some(version) {
            self.slots.iter_mut().for_each(|slot| *slot = None);
            self.version = Some(version);
            return None;
        }
        let (bytes, opened) = self.slots.get(slot_of(value))?.as_ref()?;
        (**bytes == *value && opened.alive(now)).then_some(*opened)
    }

    /// Remembers an authenticated cookie (evicting whatever shared its slot).
    pub(crate) fn put(&mut self, version: u64, value: &[u8], opened: OpenedSession) {
        if self.version == Some(version)
            && let Some(slot) = self.slots.get_mut(slot_of(value))
        {
            *slot = Some((value.into(), opened));
        }
    }

    /// How many cookies the cache holds (for tests).
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// FNV-1a of the bytes, reduced to a slot.
fn slot_of(value: &[u8]) -> usize {
    let hash = value.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % COOKIE_CACHE_SLOTS as u64).unwrap_or(0)
}
