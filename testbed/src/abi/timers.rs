//! Time and timers: the clock the test sets, and the tick period the filter asks for.

use std::time::UNIX_EPOCH;

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, Host>, ret: i32| -> i32 {
            let now = caller
                .data()
                .now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            caller.data_mut().host_calls += 1;
            status(write(&mut caller, ret, &now.to_le_bytes()))
        },
    )?;
    env.define(
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, Host>, period: i32| -> i32 {
            caller.data_mut().tick_period_ms = u32::try_from(period).ok();
            Status::Ok as i32
        },
    )?;
    Ok(())
}
