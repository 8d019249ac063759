//! Shared data: a key-value store with compare-and-swap, as Envoy's.

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_get_shared_data",
        |mut caller: Caller<'_, Host>, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let key = match read_str(&mut caller, key_ptr, key_len) {
                Ok(key) => key,
                Err(status) => return status as i32,
            };
            let Some((value, cas)) = caller.data().shared_data.get(&key).cloned() else {
                return Status::NotFound as i32;
            };
            status(
                hand_over(&mut caller, &value, ret_ptr, ret_size)
                    .and_then(|()| write(&mut caller, ret_cas, &cas.to_le_bytes())),
            )
        },
    )?;
    env.define(
        "proxy_set_shared_data",
        |mut caller: Caller<'_, Host>, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32, cas: i32| -> i32 {
            let (key, value) = match (
                read_str(&mut caller, key_ptr, key_len),
                read(&mut caller, value_ptr, value_len),
            ) {
                (Ok(k), Ok(v)) => (k, v),
                _ => return Status::InvalidMemoryAccess as i32,
            };
            let cas = u32::from_ne_bytes(cas.to_ne_bytes());
            let data = &mut caller.data_mut().shared_data;
            let current = data.get(&key).map_or(0, |(_, c)| *c);
            if cas != 0 && cas != current {
                return Status::CasMismatch as i32;
            }
            data.insert(key, (value, current.wrapping_add(1).max(1)));
            Status::Ok as i32
        },
    )?;
    Ok(())
}
