//! Signed-in operators: a random token (the session cookie) stands for the access key id an
//! operator signed in with, for a bounded time. In memory: a restart signs everyone out.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a sign-in lasts.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at most; the oldest goes first.
const MAX_SESSIONS: usize = 1024;

#[derive(Default)]
pub struct OperatorSessions {
    /// Token → (access key id, when the session ends).
    sessions: Mutex<HashMap<String, (String, Instant)>>,
}

impl OperatorSessions {
    /// A new session for `key_id`; returns its token (256 random bits, hex).
    pub fn open(&self, key_id: &str) -> String {
        let mut bytes = [0u8; 32];
        // Without randomness, no session: an empty token is never accepted.
        if getrandom::fill(&mut bytes).is_err() {
            return String::new();
        }
        let token = hex::encode(bytes);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, (_, ends)| *ends > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, (_, ends))| *ends)
                .map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(token.clone(), (key_id.to_owned(), now + LIFETIME));
        token
    }

    /// The access key id of a live session.
    pub fn holder(&self, token: &str) -> Option<String> {
        if token.len() != 64 {
            return None;
        }
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .get(token)
            .filter(|(_, ends)| *ends > Instant::now())
            .map(|(key_id, _)| key_id.clone())
    }

    pub fn close(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stands_for_its_key_until_closed() {
        let sessions = OperatorSessions::default();
        let token = sessions.open("AKID");
        assert_eq!(token.len(), 64);
        assert_eq!(sessions.holder(&token).as_deref(), Some("AKID"));
        assert_eq!(sessions.holder(&"0".repeat(64)), None);
        assert_eq!(sessions.holder(""), None);
        sessions.close(&token);
        assert_eq!(sessions.holder(&token), None);
    }
}
