//! Properties: the values the test sets by path (e.g. `upstream.address`).

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_get_property",
        |mut caller: Caller<'_, Host>, path_ptr: i32, path_len: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let path = match read(&mut caller, path_ptr, path_len) {
                Ok(path) => path,
                Err(status) => return status as i32,
            };
            let key: Vec<String> = path
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            let value = caller.data().properties.get(&key.join(".")).cloned();
            hand_over_found(&mut caller, value, ret_ptr, ret_size)
        },
    )?;
    Ok(())
}
