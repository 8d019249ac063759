//! The stickiness cookie codec and the key ring.
//!
//! Wire form (then base64url without padding):
//!
//! ```text
//! version (1) | key id (2, BE) | nonce (12) | AES-256-GCM( issued_at (4, BE) | expires_at (4, BE) | session_start (4, BE) | target id ) | tag (16)
//! ```
//!
//! Version 2 (sealed today) added `session_start`, the time the session began, carried across
//! refreshes and re-pins so an absolute lifetime is never extended. Version 1 cookies (without
//! it) are still opened, their session taken to start at their issue time.
//!
//! The additional authenticated data is the 3-byte header followed by the cookie's binding
//! (policy kind, listener port, load balancer name), so a cookie cannot be replayed on another
//! load balancer or listener, or as the other policy kind, and its header cannot be altered.
//! Times are wall-clock Unix seconds (u32: good until 2106); `expires_at == 0` means the cookie
//! carries no expiry (a browser-session cookie).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Rejection, StateError};
use crate::state::KeyRingState;

/// Current wire format version.
pub const COOKIE_VERSION: u8 = 2;
/// The version before `session_start`; still opened.
const COOKIE_VERSION_1: u8 = 1;
/// Longest target id a cookie can carry (keeps the cookie under 200 bytes).
pub const MAX_TARGET_ID_LEN: usize = 64;
/// Longest load balancer name that can be bound into a cookie.
pub const MAX_LOAD_BALANCER_NAME_LEN: usize = 64;

const HEADER_LEN: usize = 3;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const TIMES_LEN: usize = 12;
const TIMES_LEN_V1: usize = 8;
const MIN_SEALED_LEN: usize = HEADER_LEN + NONCE_LEN + TIMES_LEN_V1 + 1 + TAG_LEN;
const MAX_SEALED_LEN: usize = HEADER_LEN + NONCE_LEN + TIMES_LEN + MAX_TARGET_ID_LEN + TAG_LEN;
/// Longest cookie value this codec ever produces; anything longer is rejected unread.
pub const MAX_COOKIE_VALUE_LEN: usize = MAX_SEALED_LEN.div_ceil(3) * 4;
const BINDING_MAX: usize = 1 + 2 + MAX_LOAD_BALANCER_NAME_LEN;

/// The kind of policy a cookie was issued under; part of the binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    LbCookie = 1,
    AppCookie = 2,
}

/// What a cookie is bound to: authenticated but not encrypted (it is never sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    bytes: Vec<u8>,
}

impl Binding {
    pub fn new(kind: PolicyKind, listener_port: u16, load_balancer: &str) -> Result<Self, StateError> {
        if load_balancer.is_empty() || load_balancer.len() > MAX_LOAD_BALANCER_NAME_LEN {
            return Err(StateError::LoadBalancerName);
        }
        let mut bytes = Vec::with_capacity(BINDING_MAX);
        bytes.push(kind as u8);
        bytes.extend_from_slice(&listener_port.to_be_bytes());
        bytes.extend_from_slice(load_balancer.as_bytes());
        Ok(Self { bytes })
    }

    /// Header followed by the binding, in the caller's stack buffer (no allocation per cookie).
    fn aad<'a>(&self, header: &[u8; HEADER_LEN], buf: &'a mut AadBuffer) -> &'a [u8] {
        let len = fill(buf, header.iter().chain(&self.bytes));
        buf.get(..len).unwrap_or_default()
    }
}

/// What a cookie says once opened. `target_id` borrows the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedCookie<'a> {
    pub key_id: u16,
    pub issued_at: u64,
    pub expires_at: u64,
    /// When the session began (its first cookie's issue time).
    pub session_start: u64,
    pub target_id: &'a [u8],
}

/// What to seal into a new cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieContent<'a> {
    pub target_id: &'a str,
    pub issued_at: u64,
    pub expires_at: u64,
    pub session_start: u64,
}

type AadBuffer = [u8; HEADER_LEN + BINDING_MAX];

/// Copies `bytes` to the start of `slots`, as many as fit; returns how many it copied.
fn fill<'a>(slots: &mut [u8], bytes: impl Iterator<Item = &'a u8>) -> usize {
    slots.iter_mut().zip(bytes).map(|(slot, byte)| *slot = *byte).count()
}

/// Scratch space for opening one cookie without allocating.
pub type OpenBuffer = [u8; MAX_SEALED_LEN];

/// Creates an empty scratch buffer for [`KeyRing::open`].
pub fn open_buffer() -> OpenBuffer {
    [0u8; MAX_SEALED_LEN]
}

struct RingKey {
    id: u16,
    cipher: Aes256Gcm,
}

/// The active key (seals) and every other key accepted for opening. Ciphers are keyed once,
/// here.
pub struct KeyRing {
    active: RingKey,
    others: Vec<RingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u16> = self.keys().map(|k| k.id).collect();
        f.debug_struct("KeyRing")
            .field("active", &self.active_id())
            .field("keys", &ids)
            .finish()
    }
}

impl KeyRing {
    pub fn from_state(state: &KeyRingState) -> Result<Self, StateError> {
        let mut keys: Vec<RingKey> = Vec::with_capacity(state.keys.len());
        for key in &state.keys {
            if keys.iter().any(|k| k.id == key.id) {
                return Err(StateError::DuplicateKeyId(key.id));
            }
            let secret = URL_SAFE_NO_PAD
                .decode(key.secret.as_bytes())
                .map_err(|_| StateError::KeySecret(key.id))?;
            let cipher = Aes256Gcm::new_from_slice(&secret).map_err(|_| StateError::KeySecret(key.id))?;
            keys.push(RingKey { id: key.id, cipher });
        }
        let position = keys
            .iter()
            .position(|k| k.id == state.active)
            .ok_or(StateError::ActiveKeyMissing(state.active))?;
        let active = keys.swap_remove(position);
        Ok(Self { active, others: keys })
    }

    pub fn active_id(&self) -> u16 {
        self.active.id
    }

    /// Every key, the active one first.
    fn keys(&self) -> impl Iterator<Item = &RingKey> {
        std::iter::once(&self.active).chain(&self.others)
    }

    /// Seals `content` under the active key with the caller's fresh 96-bit nonce.
    pub fn seal(
        &self,
        binding: &Binding,
        content: &CookieContent<'_>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<String, Rejection> {
        let target = content.target_id.as_bytes();
        if target.is_empty() || target.len() > MAX_TARGET_ID_LEN {
            return Err(Rejection::Malformed);
        }
        let key = &self.active;
        let header = header(key.id);
        // header | nonce | body (times, target id; encrypted in place) | tag
        let mut sealed = [0u8; MAX_SEALED_LEN];
        let (prefix, rest) = sealed
            .split_at_mut_checked(HEADER_LEN + NONCE_LEN)
            .ok_or(Rejection::Malformed)?;
        fill(prefix, header.iter().chain(&nonce));
        let (body, rest) = rest
            .split_at_mut_checked(TIMES_LEN + target.len())
            .ok_or(Rejection::Malformed)?;
        let issued_at = to_wire_time(content.issued_at);
        let expires_at = to_wire_time(content.expires_at);
        let session_start = to_wire_time(content.session_start);
        fill(
            body,
            issued_at.iter().chain(&expires_at).chain(&session_start).chain(target),
        );
        let mut aad = [0u8; HEADER_LEN + BINDING_MAX];
        let tag = key
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), binding.aad(&header, &mut aad), body)
            .map_err(|_| Rejection::Malformed)?;
        let copied = fill(rest, tag.iter());
        let len = HEADER_LEN + NONCE_LEN + TIMES_LEN + target.len() + copied;
        Ok(URL_SAFE_NO_PAD.encode(sealed.get(..len).ok_or(Rejection::Malformed)?))
    }

    /// Opens a cookie value. Never panics, whatever the bytes.
    pub fn open<'b>(
        &self,
        binding: &Binding,
        value: &[u8],
        buf: &'b mut OpenBuffer,
    ) -> Result<OpenedCookie<'b>, Rejection> {
        if value.len() > MAX_COOKIE_VALUE_LEN {
            return Err(Rejection::Malformed);
        }
        let len = URL_SAFE_NO_PAD
            .decode_slice(value, buf.as_mut_slice())
            .map_err(|_| Rejection::Malformed)?;
        if len < MIN_SEALED_LEN {
            return Err(Rejection::Malformed);
        }
        let sealed = buf.get_mut(..len).ok_or(Rejection::Malformed)?;
        let (head, rest) = sealed
            .split_at_mut_checked(HEADER_LEN + NONCE_LEN)
            .ok_or(Rejection::Malformed)?;
        let (body, tag) = rest
            .split_at_mut_checked(rest.len().saturating_sub(TAG_LEN))
            .ok_or(Rejection::Malformed)?;
        let [version, id_high, id_low, nonce @ ..] = &*head else {
            return Err(Rejection::Malformed);
        };
        let times_len = match *version {
            COOKIE_VERSION => TIMES_LEN,
            COOKIE_VERSION_1 => TIMES_LEN_V1,
            _ => return Err(Rejection::UnsupportedVersion),
        };
        let key_id = u16::from_be_bytes([*id_high, *id_low]);
        let key = self.keys().find(|k| k.id == key_id).ok_or(Rejection::UnknownKey)?;
        let mut aad = [0u8; HEADER_LEN + BINDING_MAX];
        let aad = binding.aad(&[*version, *id_high, *id_low], &mut aad);
        key.cipher
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, body, Tag::from_slice(tag))
            .map_err(|_| Rejection::Forged)?;
        let body: &'b [u8] = body;
        let (times, target_id) = body.split_at_checked(times_len).ok_or(Rejection::Malformed)?;
        if target_id.is_empty() {
            return Err(Rejection::Malformed);
        }
        let issued_at = from_wire_time(times.get(..4).unwrap_or_default());
        let expires_at = from_wire_time(times.get(4..8).unwrap_or_default());
        let session_start = match times.get(8..12) {
            Some(start) => from_wire_time(start),
            None => issued_at,
        };
        Ok(OpenedCookie {
            key_id,
            issued_at,
            expires_at,
            session_start,
            target_id,
        })
    }
}

fn header(key_id: u16) -> [u8; HEADER_LEN] {
    let id = key_id.to_be_bytes();
    [COOKIE_VERSION, id[0], id[1]]
}

fn to_wire_time(secs: u64) -> [u8; 4] {
    u32::try_from(secs).unwrap_or(u32::MAX).to_be_bytes()
}

fn from_wire_time(bytes: &[u8]) -> u64 {
    <[u8; 4]>::try_from(bytes).map_or(0, |word| u64::from(u32::from_be_bytes(word)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{key_ring, ring_state};
    use proptest::prelude::*;

    fn binding() -> Binding {
        Binding::new(PolicyKind::LbCookie, 80, "terraform-balancer").unwrap()
    }

    fn sealed(ring: &KeyRing, target: &str) -> String {
        let content = CookieContent {
            target_id: target,
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_600,
            session_start: 1_699_999_000,
        };
        ring.seal(&binding(), &content, [7; 12]).unwrap()
    }

    #[test]
    fn the_session_start_is_sealed_and_version_1_cookies_still_open() {
        let ring = key_ring(&[(1, 11)], 1);
        let mut buf = open_buffer();
        let value = sealed(&ring, "i-1");
        let opened = ring.open(&binding(), value.as_bytes(), &mut buf).unwrap();
        assert_eq!(opened.session_start, 1_699_999_000);
        // A version 1 cookie, sealed as the previous release did: no session start.
        let header = [COOKIE_VERSION_1, 0, 1];
        let nonce = [3u8; 12];
        let mut body = Vec::new();
        body.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        body.extend_from_slice(&1_700_000_600u32.to_be_bytes());
        body.extend_from_slice(b"i-1");
        let mut aad = [0u8; HEADER_LEN + BINDING_MAX];
        let aad = binding().aad(&header, &mut aad).to_vec();
        let tag = ring
            .active
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut body)
            .unwrap();
        let raw: Vec<u8> = header
            .iter()
            .chain(&nonce)
            .chain(&body)
            .chain(tag.iter())
            .copied()
            .collect();
        let value = URL_SAFE_NO_PAD.encode(raw);
        let mut buf = open_buffer();
        let opened = ring.open(&binding(), value.as_bytes(), &mut buf).unwrap();
        assert_eq!(
            (
                opened.issued_at,
                opened.expires_at,
                opened.session_start,
                opened.target_id
            ),
            (1_700_000_000, 1_700_000_600, 1_700_000_000, &b"i-1"[..])
        );
    }

    fn open_with(ring: &KeyRing, binding: &Binding, value: &[u8]) -> Result<(u16, u64, u64, Vec<u8>), Rejection> {
        let mut buf = open_buffer();
        ring.open(binding, value, &mut buf)
            .map(|c| (c.key_id, c.issued_at, c.expires_at, c.target_id.to_vec()))
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let ring = key_ring(&[(1, 11)], 1);
        let value = sealed(&ring, "i-0123456789abcdef0");
        let opened = open_with(&ring, &binding(), value.as_bytes()).unwrap();
        assert_eq!(
            opened,
            (1, 1_700_000_000, 1_700_000_600, b"i-0123456789abcdef0".to_vec())
        );
    }

    #[test]
    fn cookie_stays_under_200_bytes_with_the_longest_target_id() {
        let ring = key_ring(&[(1, 11)], 1);
        let value = sealed(&ring, &"x".repeat(MAX_TARGET_ID_LEN));
        assert!(value.len() < 200, "{} bytes", value.len());
        assert!(value.len() <= MAX_COOKIE_VALUE_LEN);
    }

    #[test]
    fn value_is_base64url_without_padding() {
        let ring = key_ring(&[(1, 11)], 1);
        let value = sealed(&ring, "t1");
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{value}"
        );
    }

    #[test]
    fn plaintext_never_shows_the_target_id() {
        let ring = key_ring(&[(1, 11)], 1);
        let value = sealed(&ring, "i-visible");
        let raw = URL_SAFE_NO_PAD.decode(value).unwrap();
        assert!(!raw.windows(9).any(|w| w == b"i-visible"));
    }

    #[test]
    fn tampering_any_byte_is_rejected() {
        let ring = key_ring(&[(1, 11), (2, 22)], 1);
        let raw = URL_SAFE_NO_PAD.decode(sealed(&ring, "i-1")).unwrap();
        for index in 0..raw.len() {
            let mut tampered = raw.clone();
            tampered[index] ^= 0x01;
            let value = URL_SAFE_NO_PAD.encode(&tampered);
            let expected = match index {
                0 => Rejection::UnsupportedVersion,
                // A flipped key id names key 257 or 0, which the ring does not hold.
                1 | 2 => Rejection::UnknownKey,
                _ => Rejection::Forged,
            };
            assert_eq!(
                open_with(&ring, &binding(), value.as_bytes()).unwrap_err(),
                expected,
                "byte {index}"
            );
        }
    }

    #[test]
    fn a_key_id_changed_to_another_ring_key_fails_authentication() {
        let ring = key_ring(&[(1, 11), (3, 33)], 1);
        let mut raw = URL_SAFE_NO_PAD.decode(sealed(&ring, "i-1")).unwrap();
        raw[2] = 3;
        let value = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            open_with(&ring, &binding(), value.as_bytes()).unwrap_err(),
            Rejection::Forged
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let ring = key_ring(&[(1, 11)], 1);
        let value = sealed(&ring, "i-1");
        for len in 0..value.len() {
            let err = open_with(&ring, &binding(), &value.as_bytes()[..len]).unwrap_err();
            assert!(
                matches!(err, Rejection::Malformed | Rejection::Forged),
                "len {len}: {err:?}"
            );
        }
    }

    #[test]
    fn bindings_separate_load_balancers_listeners_and_kinds() {
        let ring = key_ring(&[(1, 11)], 1);
        let value = sealed(&ring, "i-1");
        for other in [
            Binding::new(PolicyKind::LbCookie, 80, "other-balancer").unwrap(),
            Binding::new(PolicyKind::LbCookie, 8080, "terraform-balancer").unwrap(),
            Binding::new(PolicyKind::AppCookie, 80, "terraform-balancer").unwrap(),
        ] {
            assert_eq!(
                open_with(&ring, &other, value.as_bytes()).unwrap_err(),
                Rejection::Forged
            );
        }
    }

    #[test]
    fn keys_open_only_what_they_sealed() {
        let old = key_ring(&[(1, 11)], 1);
        let rotated = key_ring(&[(1, 11), (2, 22)], 2);
        let other_secret = key_ring(&[(1, 99)], 1);
        let dropped = key_ring(&[(2, 22)], 2);
        let value = sealed(&old, "i-1");
        assert!(
            open_with(&rotated, &binding(), value.as_bytes()).is_ok(),
            "retired key still opens"
        );
        assert_eq!(
            open_with(&other_secret, &binding(), value.as_bytes()).unwrap_err(),
            Rejection::Forged
        );
        assert_eq!(
            open_with(&dropped, &binding(), value.as_bytes()).unwrap_err(),
            Rejection::UnknownKey
        );
        let new_value = sealed(&rotated, "i-1");
        assert_eq!(
            open_with(&rotated, &binding(), new_value.as_bytes()).unwrap().0,
            2,
            "active key seals"
        );
    }

    #[test]
    fn oversized_and_non_base64_values_are_malformed() {
        let ring = key_ring(&[(1, 11)], 1);
        for value in [
            "A".repeat(MAX_COOKIE_VALUE_LEN + 1),
            "not base64!".to_owned(),
            "é".repeat(40),
            String::new(),
        ] {
            assert_eq!(
                open_with(&ring, &binding(), value.as_bytes()).unwrap_err(),
                Rejection::Malformed
            );
        }
    }

    #[test]
    fn key_ring_state_is_validated() {
        use crate::state::{KeyRingState, KeyState};
        let good = ring_state(&[(1, 11)], 1);
        assert!(KeyRing::from_state(&good).is_ok());
        let missing_active = ring_state(&[(1, 11)], 2);
        assert_eq!(
            KeyRing::from_state(&missing_active).unwrap_err(),
            StateError::ActiveKeyMissing(2)
        );
        let duplicate = ring_state(&[(1, 11), (1, 12)], 1);
        assert_eq!(
            KeyRing::from_state(&duplicate).unwrap_err(),
            StateError::DuplicateKeyId(1)
        );
        let short = KeyRingState {
            active: 1,
            keys: vec![KeyState {
                id: 1,
                secret: URL_SAFE_NO_PAD.encode([0u8; 16]),
            }],
        };
        assert_eq!(KeyRing::from_state(&short).unwrap_err(), StateError::KeySecret(1));
        let garbage = KeyRingState {
            active: 1,
            keys: vec![KeyState {
                id: 1,
                secret: "***".into(),
            }],
        };
        assert_eq!(KeyRing::from_state(&garbage).unwrap_err(), StateError::KeySecret(1));
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let state = ring_state(&[(1, 11)], 1);
        let secret = state.keys[0].secret.clone();
        assert!(!format!("{state:?}").contains(&secret));
        assert!(!format!("{:?}", KeyRing::from_state(&state).unwrap()).contains(&secret));
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(target in "[!-~]{1,64}", issued in 0u64..u64::from(u32::MAX), ttl in 0u64..1_000_000, nonce in any::<[u8; 12]>(), key in 0u16..4) {
            let ring = key_ring(&[(0, 1), (1, 2), (2, 3), (3, 4)], key);
            let expires = (issued + ttl).min(u64::from(u32::MAX));
            let content = CookieContent { target_id: &target, issued_at: issued, expires_at: expires, session_start: issued };
            let value = ring.seal(&binding(), &content, nonce).unwrap();
            let opened = open_with(&ring, &binding(), value.as_bytes()).unwrap();
            prop_assert_eq!(opened, (key, issued, expires, target.into_bytes()));
        }

        #[test]
        fn opening_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let ring = key_ring(&[(1, 11)], 1);
            let _ = open_with(&ring, &binding(), &bytes);
        }

        #[test]
        fn opening_random_base64_never_panics_nor_authenticates(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let ring = key_ring(&[(1, 11)], 1);
            let value = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(open_with(&ring, &binding(), value.as_bytes()).is_err());
        }
    }
}
