//! Logging: the filter's log lines, kept for the tests to read.

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_log",
        |mut caller: Caller<'_, Host>, level: i32, ptr: i32, len: i32| -> i32 {
            status(read_str(&mut caller, ptr, len).map(|message| caller.data_mut().logs.push((level, message))))
        },
    )?;
    env.define("proxy_get_log_level", |mut caller: Caller<'_, Host>, ret: i32| -> i32 {
        // Trace: the filter decides for itself what to log.
        status(write(&mut caller, ret, &0i32.to_le_bytes()))
    })?;
    Ok(())
}
