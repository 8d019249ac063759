//! ABI conformance of the host itself, with a small hand-written guest: shared data with CAS,
//! foreign functions, local responses, and unknown imports answering `Unimplemented`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sticky_testbed::{Status, Testbed};

const GUEST: &str = r#"
(module
  (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_no_such_call" (func $nope (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "key")
  (data (i32.const 16) "value")
  (data (i32.const 32) "clear_route_cache")
  (data (i32.const 64) "other_function")
  (data (i32.const 80) "denied")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "set_fresh") (result i32) (call $set (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 0)))
  (func (export "set_stale") (result i32) (call $set (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 99)))
  (func (export "get") (result i32) (call $get (i32.const 0) (i32.const 3) (i32.const 200) (i32.const 204) (i32.const 208)))
  (func (export "get_missing") (result i32) (call $get (i32.const 16) (i32.const 5) (i32.const 200) (i32.const 204) (i32.const 208)))
  (func (export "got_size") (result i32) (i32.load (i32.const 204)))
  (func (export "got_cas") (result i32) (i32.load (i32.const 208)))
  (func (export "clear_route_cache") (result i32)
    (call $foreign (i32.const 32) (i32.const 17) (i32.const 0) (i32.const 0) (i32.const 220) (i32.const 224)))
  (func (export "other_foreign") (result i32)
    (call $foreign (i32.const 64) (i32.const 14) (i32.const 0) (i32.const 0) (i32.const 220) (i32.const 224)))
  (func (export "reply") (result i32)
    (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 80) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const -1)))
  (func (export "nope") (result i32) (call $nope (i32.const 1)))
)
"#;

#[test]
fn shared_data_foreign_functions_local_responses_and_unknown_imports() {
    let testbed = Testbed::from_bytes(GUEST.as_bytes()).unwrap();
    let mut guest = testbed.plugin("", &[]).unwrap();
    assert_eq!(guest.call_export("get").unwrap(), Status::NotFound as i32);
    assert_eq!(guest.call_export("set_fresh").unwrap(), Status::Ok as i32);
    assert_eq!(guest.call_export("get").unwrap(), Status::Ok as i32);
    assert_eq!(guest.call_export("got_size").unwrap(), 5);
    let cas = guest.call_export("got_cas").unwrap();
    assert_eq!(cas, 1);
    assert_eq!(
        guest.call_export("set_stale").unwrap(),
        Status::CasMismatch as i32,
        "a stale CAS is refused"
    );
    assert_eq!(guest.call_export("get_missing").unwrap(), Status::NotFound as i32);
    assert_eq!(guest.host().shared_data["key"].0, b"value");

    assert_eq!(guest.call_export("clear_route_cache").unwrap(), Status::Ok as i32);
    assert_eq!(guest.call_export("other_foreign").unwrap(), Status::NotFound as i32);
    assert_eq!(guest.host().foreign_calls, ["clear_route_cache", "other_function"]);

    assert_eq!(guest.call_export("reply").unwrap(), Status::Ok as i32);
    let (code, _, body) = guest.host().local_response.clone().unwrap();
    assert_eq!((code, body.as_slice()), (403, &b"denied"[..]));

    // An import the host does not implement answers Unimplemented and is reported.
    assert_eq!(guest.call_export("nope").unwrap(), Status::Unimplemented as i32);
    assert_eq!(guest.unsupported_calls(), ["proxy_no_such_call"]);
}
