//! Streams and the rest: contexts, local responses, resuming a stream and foreign functions.

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_set_effective_context",
        |_caller: Caller<'_, Host>, _context: i32| -> i32 { Status::Ok as i32 },
    )?;
    env.define("proxy_done", |_caller: Caller<'_, Host>| -> i32 { Status::Ok as i32 })?;
    env.define(
        "proxy_continue_stream",
        |_caller: Caller<'_, Host>, _stream: i32| -> i32 { Status::Ok as i32 },
    )?;
    env.define(
        "proxy_send_local_response",
        |mut caller: Caller<'_, Host>,
         code: i32,
         _details_ptr: i32,
         _details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> i32 {
            let body = read(&mut caller, body_ptr, body_len).unwrap_or_default();
            let headers = read(&mut caller, headers_ptr, headers_len)
                .ok()
                .and_then(|b| deserialize_pairs(&b))
                .unwrap_or_default();
            caller.data_mut().local_response = Some((u16::try_from(code).unwrap_or(0), headers, body));
            Status::Ok as i32
        },
    )?;
    env.define(
        "proxy_call_foreign_function",
        |mut caller: Caller<'_, Host>,
         name_ptr: i32,
         name_len: i32,
         _args_ptr: i32,
         _args_len: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> i32 {
            let name = match read_str(&mut caller, name_ptr, name_len) {
                Ok(name) => name,
                Err(status) => return status as i32,
            };
            caller.data_mut().foreign_calls.push(name.clone());
            match name.as_str() {
                // Envoy's: the route is picked again. Nothing to return.
                "clear_route_cache" => status(hand_over(&mut caller, &[], ret_ptr, ret_size)),
                _ => Status::NotFound as i32,
            }
        },
    )?;
    Ok(())
}
