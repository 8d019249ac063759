//! Secrets at rest: what the store keeps of the cookie keys and of the server certificates'
//! private keys is sealed (AES-256-GCM) under the operator's master key, with the record's
//! identity as associated data (a sealed secret moved to another row does not open). A store
//! copied without the master key reveals no key. The master key rotates without a pause: the
//! previous ones still open what they sealed, and the service seals it again under the current
//! one as it starts.

use std::io::Write as _;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// What a sealed text starts with (the scheme, for a later one).
const SCHEME: &str = "aes256gcm:";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot draw randomness: {0}")]
    Random(String),
    #[error("a sealed secret does not open with this master key (another key, or altered)")]
    DoesNotOpen,
    #[error("master key file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Whether `text` is a sealed secret (and not a secret stored in clear before sealing).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SCHEME)
}

/// 32 bytes, from a file of 64 hexadecimal digits; with the previous master keys, which open
/// what they sealed and seal nothing.
#[derive(Clone)]
pub struct MasterKey {
    current: [u8; 32],
    previous: Vec<[u8; 32]>,
}

/// Which master key opened a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedWith {
    Current,
    /// A previous one: the secret is to be sealed again under the current one.
    Previous,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    fn new(current: [u8; 32]) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    pub fn generate() -> Result<Self, SealError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(Self::new(key))
    }

    /// The key in 64 hexadecimal digits (`STICKY_MASTER_KEY`); `name` says where it came from.
    pub fn from_hex(name: &str, text: &str) -> Result<Self, SealError> {
        let fail = |reason: &str| SealError::File {
            path: name.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| fail("must hold 64 hexadecimal digits"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| fail("must hold 64 hexadecimal digits (32 bytes)"))?;
        Ok(Self::new(key))
    }

    /// This key, also opening what `previous` sealed.
    pub fn with_previous(mut self, previous: &MasterKey) -> Self {
        self.previous.push(previous.current);
        self
    }

    /// Reads the key in `path`.
    pub fn read(path: &Path) -> Result<Self, SealError> {
        let fail = |reason: String| SealError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::from_hex(&path.display().to_string(), &text)
    }

    /// Reads the key in `path`, first writing a new one there (readable by its owner only)
    /// if there is none.
    pub fn read_or_create(path: &Path) -> Result<Self, SealError> {
        if path.exists() {
            return Self::read(path);
        }
        let key = Self::generate()?;
        let fail = |e: std::io::Error| SealError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(fail)?;
        writeln!(file, "{}", hex::encode(key.current)).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        Ok(key)
    }

    fn cipher(key: &[u8; 32]) -> Aes256Gcm {
        Aes256Gcm::new(&(*key).into())
    }

    /// `secret` sealed for the record `id`.
    pub fn seal(&self, id: &str, secret: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let sealed = Self::cipher(&self.current)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| SealError::DoesNotOpen)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{SCHEME}{}", STANDARD.encode(bytes)))
    }

    /// The secret [`MasterKey::seal`] sealed for `id`.
    pub fn open(&self, id: &str, sealed: &str) -> Result<String, SealError> {
        self.open_reporting(id, sealed).map(|(secret, _)| secret)
    }

    /// [`MasterKey::open`], saying whether a previous master key sealed it.
    pub fn open_reporting(&self, id: &str, sealed: &str) -> Result<(String, OpenedWith), SealError> {
        let bytes = sealed
            .strip_prefix(SCHEME)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or(SealError::DoesNotOpen)?;
        if bytes.len() < 12 {
            return Err(SealError::DoesNotOpen);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let keys = std::iter::once((&self.current, OpenedWith::Current))
            .chain(self.previous.iter().map(|key| (key, OpenedWith::Previous)));
        for (key, opened_with) in keys {
            let payload = Payload {
                msg: sealed,
                aad: id.as_bytes(),
            };
            if let Ok(plain) = Self::cipher(key).decrypt(Nonce::from_slice(nonce), payload) {
                return String::from_utf8(plain)
                    .map(|secret| (secret, opened_with))
                    .map_err(|_| SealError::DoesNotOpen);
            }
        }
        Err(SealError::DoesNotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_its_key_and_record_only() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal("ASCA1", "-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(key.open("ASCA1", &sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
        assert!(key.open("ASCA2", &sealed).is_err(), "moved to another record");
        assert!(
            MasterKey::generate().unwrap().open("ASCA1", &sealed).is_err(),
            "another key"
        );
        assert!(key.open("ASCA1", "aes256gcm:AAAA").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
    }

    #[test]
    fn a_rotated_master_key_still_opens_what_the_previous_one_sealed_and_says_so() {
        let old = MasterKey::generate().unwrap();
        let sealed_before = old.seal("cookie-key 1", "secret").unwrap();
        let new = MasterKey::generate().unwrap().with_previous(&old);
        assert_eq!(
            new.open_reporting("cookie-key 1", &sealed_before).unwrap(),
            ("secret".to_owned(), OpenedWith::Previous)
        );
        let sealed_after = new.seal("cookie-key 1", "secret").unwrap();
        assert_eq!(
            new.open_reporting("cookie-key 1", &sealed_after).unwrap().1,
            OpenedWith::Current
        );
        assert!(
            old.open("cookie-key 1", &sealed_after).is_err(),
            "sealed under the new one only"
        );
        assert!(MasterKey::from_hex("STICKY_MASTER_KEY", "abcd").is_err());
        assert!(MasterKey::from_hex("STICKY_MASTER_KEY", &"ab".repeat(32)).is_ok());
    }

    #[test]
    fn a_key_file_is_created_once_for_its_owner_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::read_or_create(&path).unwrap();
        let again = MasterKey::read_or_create(&path).unwrap();
        assert_eq!(first.current, again.current);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(
            MasterKey::read(&path)
                .unwrap_err()
                .to_string()
                .contains("64 hexadecimal")
        );
    }
}
