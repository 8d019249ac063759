//! The cookie key ring: one active key sealing new cookies, retired keys kept for opening the
//! cookies they sealed until those can no longer be valid.

use sticky_core::{KeyRingState, KeyState};

#[derive(Clone, PartialEq, Eq)]
pub struct CookieKey {
    pub id: u16,
    pub secret: [u8; 32],
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` for the active key.
    pub retired_at: Option<i64>,
}

/// Key material never reaches logs.
impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKey")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatingKeys {
    /// Oldest first; the last one is active.
    keys: Vec<CookieKey>,
}

fn random_secret() -> Result<[u8; 32], getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    Ok(secret)
}

impl RotatingKeys {
    /// A ring of one fresh key.
    pub fn generate(now: i64) -> Result<Self, getrandom::Error> {
        Ok(Self {
            keys: vec![CookieKey {
                id: 1,
                secret: random_secret()?,
                created_at: now,
                retired_at: None,
            }],
        })
    }

    /// Rebuilds a ring from stored keys (oldest first); exactly one must be active.
    pub fn from_keys(keys: Vec<CookieKey>) -> Result<Self, String> {
        let active = keys.iter().filter(|k| k.retired_at.is_none()).count();
        if active != 1 || keys.last().is_some_and(|k| k.retired_at.is_some()) {
            return Err(format!(
                "key ring must have exactly one active key, the newest; it has {active}"
            ));
        }
        Ok(Self { keys })
    }

    pub fn keys(&self) -> &[CookieKey] {
        &self.keys
    }

    pub fn active(&self) -> Option<&CookieKey> {
        self.keys.last()
    }

    /// Makes a fresh key active and retires the current one.
    pub fn rotate(&mut self, now: i64) -> Result<u16, getrandom::Error> {
        let used: Vec<u16> = self.keys.iter().map(|k| k.id).collect();
        let start = self.active().map_or(0, |k| k.id);
        let id = (1..=u16::MAX)
            .map(|step| start.wrapping_add(step))
            .find(|id| *id != 0 && !used.contains(id))
            .unwrap_or(1);
        let secret = random_secret()?;
        for key in &mut self.keys {
            key.retired_at.get_or_insert(now);
        }
        self.keys.push(CookieKey {
            id,
            secret,
            created_at: now,
            retired_at: None,
        });
        Ok(id)
    }

    /// Drops retired keys retired more than `keep_for` seconds ago. Returns true if any went.
    pub fn prune(&mut self, now: i64, keep_for: i64) -> bool {
        let before = self.keys.len();
        self.keys
            .retain(|k| k.retired_at.is_none_or(|at| now.saturating_sub(at) < keep_for));
        self.keys.len() != before
    }

    /// Whether the active key is due for rotation.
    pub fn rotation_due(&self, now: i64, every: i64) -> bool {
        self.active().is_some_and(|k| now.saturating_sub(k.created_at) >= every)
    }

    /// The ring as the filters receive it.
    pub fn to_state(&self) -> KeyRingState {
        KeyRingState {
            active: self.active().map_or(0, |k| k.id),
            keys: self
                .keys
                .iter()
                .map(|k| KeyState::from_secret(k.id, &k.secret))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_retired_keys_until_pruned() {
        let mut ring = RotatingKeys::generate(1000).unwrap();
        assert!(!ring.rotation_due(1500, 600));
        assert!(ring.rotation_due(1600, 600));
        let new = ring.rotate(1600).unwrap();
        assert_eq!(new, 2);
        let state = ring.to_state();
        assert_eq!(state.active, 2);
        assert_eq!(state.keys.len(), 2);
        assert!(!ring.prune(1600 + 99, 100), "kept while cookies it sealed may be valid");
        assert!(ring.prune(1600 + 100, 100));
        assert_eq!(ring.to_state().keys.len(), 1);
        assert_ne!(ring.keys()[0].secret, [0; 32]);
    }

    #[test]
    fn a_ring_has_exactly_one_active_key() {
        let key = |id, retired_at| CookieKey {
            id,
            secret: [id as u8; 32],
            created_at: 0,
            retired_at,
        };
        assert!(RotatingKeys::from_keys(vec![key(1, Some(5)), key(2, None)]).is_ok());
        assert!(RotatingKeys::from_keys(vec![key(1, None), key(2, None)]).is_err());
        assert!(RotatingKeys::from_keys(vec![key(1, None), key(2, Some(5))]).is_err());
        assert!(RotatingKeys::from_keys(vec![]).is_err());
        assert!(
            !format!("{:?}", key(7, None)).contains("7, 7"),
            "no key material in debug output"
        );
    }
}
