//! Secrets at rest: the cookie keys are stored sealed under the master key, so a copy of the
//! store without it reveals none; the master key rotates (the previous one opens, the service
//! seals again under the new one as it starts); keys a version without sealing stored in clear
//! are sealed at the next start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sticky_control::BootstrapFile;
use sticky_testing::control_process::{ControlProcess, ProcessError};
use sticky_testing::eventually;

const ACCESS_KEY: (&str, &str) = ("AKIDTEST", "test-secret");

/// The raw secrets of the keys the feed serves, by key id.
fn served_keys(control: &ControlProcess) -> Vec<(u64, Vec<u8>)> {
    let (_, state) = control
        .client(ACCESS_KEY)
        .state("terraform-balancer", 80, None, 0)
        .unwrap();
    state["keys"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            (
                key["id"].as_u64().unwrap(),
                URL_SAFE_NO_PAD.decode(key["secret"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// The store's files as bytes (the database and its write-ahead log).
fn store_bytes(store: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(store).unwrap();
    let mut wal = store.as_os_str().to_owned();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn stored_secrets(store: &Path) -> Vec<(u16, Vec<u8>)> {
    let db = rusqlite::Connection::open(store).unwrap();
    let mut statement = db.prepare("SELECT id, secret FROM cookie_keys ORDER BY id").unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_store_copied_without_the_master_key_reveals_no_cookie_key_and_the_master_key_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_sticky-control"));
    let store = dir.path().join("control.db");
    let (old_key, new_key) = (dir.path().join("old.key"), dir.path().join("new.key"));
    std::fs::write(&old_key, "11".repeat(32)).unwrap();
    std::fs::write(&new_key, "22".repeat(32)).unwrap();
    let bootstrap = BootstrapFile::one_listener("terraform-balancer", &[]);
    let start = |key: &Path, more: &[&str]| -> Result<ControlProcess, ProcessError> {
        let (store, key) = (store.display().to_string(), key.display().to_string());
        let mut args = vec!["--store", &store, "--master-key-file", &key, "--sync-timeout-ms", "0"];
        args.extend(more);
        ControlProcess::start(
            binary,
            &dir.path().join("run"),
            sticky_testing::free_port().unwrap(),
            &bootstrap,
            ACCESS_KEY,
            &args,
        )
    };

    // Keys rotating every second: several in the ring.
    let mut control = start(&old_key, &["--key-rotation", "1"]).unwrap();
    eventually(Duration::from_secs(15), "three cookie keys", || {
        served_keys(&control).len() >= 3
    });
    control.terminate(Duration::from_secs(10)).expect("stopped");
    let served = served_keys(&start(&old_key, &[]).unwrap());

    // The store holds them sealed: none of them, in any form, is in its bytes.
    let bytes = store_bytes(&store);
    for (id, secret) in &served {
        for form in [
            secret.clone(),
            hex::encode(secret).into_bytes(),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
            STANDARD.encode(secret).into_bytes(),
        ] {
            assert!(!contains(&bytes, &form), "key {id} in the store's bytes");
        }
    }
    let stored = stored_secrets(&store);
    assert!(stored.len() >= 3);
    assert!(stored.iter().all(|(_, s)| s.starts_with(b"aes256gcm:")), "sealed");

    // Another master key does not open it: the service says which flag to give.
    match start(&new_key, &[]) {
        Err(ProcessError::Exited { log, .. }) => assert!(log.contains("--master-key-file"), "{log}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started with a master key that does not open the store"),
    }

    // Rotation: the new key, the old one as previous: the same keys, sealed again under the new.
    let old = old_key.display().to_string();
    let rotated = start(&new_key, &["--previous-master-key-file", &old]).unwrap();
    assert_eq!(served_keys(&rotated), served);
    drop(rotated);
    assert!(start(&old_key, &[]).is_err(), "sealed under the new key only");
    assert_eq!(served_keys(&start(&new_key, &[]).unwrap()), served);

    // A ring stored in clear by a version that did not seal: served, and sealed at start.
    let (id, secret) = served.last().unwrap().clone();
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute(
            "UPDATE cookie_keys SET secret = ?1 WHERE id = ?2",
            rusqlite::params![secret, id],
        )
        .unwrap();
    assert_eq!(served_keys(&start(&new_key, &[]).unwrap()), served);
    let resealed = stored_secrets(&store);
    assert!(
        resealed.iter().all(|(_, s)| s.starts_with(b"aes256gcm:")),
        "sealed again"
    );
}
