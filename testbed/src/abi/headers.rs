//! Header maps: the request's, the response's and an HTTP call response's, read and edited as Envoy does.

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let key = match read_str(&mut caller, key_ptr, key_len) {
                Ok(key) => key.to_ascii_lowercase(),
                Err(status) => return status as i32,
            };
            let value = match caller.data().map(map) {
                Some(pairs) => pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()),
                None => return Status::BadArgument as i32,
            };
            hand_over_found(&mut caller, value, ret_ptr, ret_size)
        },
    )?;
    env.define(
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, Host>, map: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            caller.data_mut().host_calls += 1;
            let Some(pairs) = caller.data().map(map).map(|p| serialize_pairs(p)) else {
                return Status::BadArgument as i32;
            };
            status(hand_over(&mut caller, &pairs, ret_ptr, ret_size))
        },
    )?;
    env.define(
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32| -> i32 {
            edit_map(
                &mut caller,
                map,
                (key_ptr, key_len),
                Some((value_ptr, value_len)),
                |pairs, key, value| {
                    // As Envoy: every copy of the header goes, one value stays.
                    pairs.retain(|(k, _)| *k != key);
                    pairs.push((key, value));
                },
            )
        },
    )?;
    env.define(
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32| -> i32 {
            edit_map(&mut caller, map, (key_ptr, key_len), None, |pairs, key, _| {
                pairs.retain(|(k, _)| *k != key)
            })
        },
    )?;
    env.define(
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, Host>, map: i32, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32| -> i32 {
            edit_map(
                &mut caller,
                map,
                (key_ptr, key_len),
                Some((value_ptr, value_len)),
                |pairs, key, value| {
                    pairs.push((key, value));
                },
            )
        },
    )?;
    Ok(())
}

/// Reads a header name (lowercased) and, when given, a value from guest memory, then applies
/// `edit` to header map `map`. Counts as one host call.
fn edit_map(
    caller: &mut Caller<'_, Host>,
    map: i32,
    key: (i32, i32),
    value: Option<(i32, i32)>,
    edit: impl FnOnce(&mut HeaderMap, String, Vec<u8>),
) -> i32 {
    caller.data_mut().host_calls += 1;
    let key = match read_str(caller, key.0, key.1) {
        Ok(key) => key.to_ascii_lowercase(),
        Err(status) => return status as i32,
    };
    let value = match value.map(|(ptr, len)| read(caller, ptr, len)).transpose() {
        Ok(value) => value.unwrap_or_default(),
        Err(status) => return status as i32,
    };
    let Some(pairs) = caller.data_mut().map_mut(map) else {
        return Status::BadArgument as i32;
    };
    edit(pairs, key, value);
    Status::Ok as i32
}
