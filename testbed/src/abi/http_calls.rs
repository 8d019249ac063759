//! HTTP calls: recorded for the test to answer, to the clusters the plugin was given.

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_http_call",
        |mut caller: Caller<'_, Host>,
         upstream_ptr: i32,
         upstream_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         body_ptr: i32,
         body_len: i32,
         trailers_ptr: i32,
         trailers_len: i32,
         timeout_ms: i32,
         token_ret: i32|
         -> i32 {
            let _ = (trailers_ptr, trailers_len);
            let upstream = match read_str(&mut caller, upstream_ptr, upstream_len) {
                Ok(u) => u,
                Err(status) => return status as i32,
            };
            let headers = match read(&mut caller, headers_ptr, headers_len)
                .ok()
                .and_then(|b| deserialize_pairs(&b))
            {
                Some(headers) => headers,
                None => return Status::BadArgument as i32,
            };
            let body = read(&mut caller, body_ptr, body_len).unwrap_or_default();
            if !caller.data().clusters.contains(&upstream) {
                return Status::BadArgument as i32;
            }
            let token = caller.data_mut().next_token;
            caller.data_mut().next_token += 1;
            caller.data_mut().http_calls.push(HttpCall {
                token,
                upstream,
                headers,
                body,
                timeout_ms: u32::try_from(timeout_ms).unwrap_or(0),
            });
            status(write(&mut caller, token_ret, &token.to_le_bytes()))
        },
    )?;
    Ok(())
}
