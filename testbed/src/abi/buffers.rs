//! Buffers: the plugin configuration and an HTTP call's response body.

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, Host>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> i32 {
            let buffer = match kind {
                PLUGIN_CONFIGURATION => caller.data().plugin_configuration.clone(),
                VM_CONFIGURATION => Vec::new(),
                HTTP_CALL_RESPONSE_BODY => caller
                    .data()
                    .http_call_response
                    .as_ref()
                    .map(|r| r.1.clone())
                    .unwrap_or_default(),
                _ => return Status::NotFound as i32,
            };
            let start = usize::try_from(start).unwrap_or(usize::MAX).min(buffer.len());
            let end = start
                .saturating_add(usize::try_from(max).unwrap_or(usize::MAX))
                .min(buffer.len());
            status(hand_over(&mut caller, &buffer[start..end], ret_ptr, ret_size))
        },
    )?;
    Ok(())
}
