//! Helpers shared by the unit tests.

use crate::codec::KeyRing;
use crate::state::{KeyRingState, KeyState};

/// A key ring state of `(id, fill byte)` keys; the fill byte makes each secret distinct.
pub fn ring_state(keys: &[(u16, u8)], active: u16) -> KeyRingState {
    KeyRingState {
        active,
        keys: keys
            .iter()
            .map(|&(id, fill)| KeyState::from_secret(id, &[fill; 32]))
            .collect(),
    }
}

pub fn key_ring(keys: &[(u16, u8)], active: u16) -> KeyRing {
    KeyRing::from_state(&ring_state(keys, active)).unwrap()
}
