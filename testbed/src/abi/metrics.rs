//! Metrics: counters, gauges and histograms the filter defines, readable by the tests.

use wasmtime::Caller;

use super::*;

/// Defines this family's imports.
pub(super) fn register(env: &mut Env<'_>) -> wasmtime::Result<()> {
    env.define(
        "proxy_define_metric",
        |mut caller: Caller<'_, Host>, kind: i32, name_ptr: i32, name_len: i32, ret: i32| -> i32 {
            let name = match read_str(&mut caller, name_ptr, name_len) {
                Ok(name) => name,
                Err(status) => return status as i32,
            };
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Status::BadArgument as i32,
            };
            let id = caller.data_mut().define_metric(name, kind);
            status(write(&mut caller, ret, &id.to_le_bytes()))
        },
    )?;
    env.define(
        "proxy_increment_metric",
        |mut caller: Caller<'_, Host>, id: i32, offset: i64| -> i32 {
            caller.data_mut().host_calls += 1;
            let Some(metric) = usize::try_from(id)
                .ok()
                .and_then(|i| caller.data_mut().metrics.get_mut(i))
            else {
                return Status::NotFound as i32;
            };
            metric.2 = metric.2.saturating_add(offset);
            Status::Ok as i32
        },
    )?;
    env.define(
        "proxy_get_metric",
        |mut caller: Caller<'_, Host>, id: i32, ret: i32| -> i32 {
            let Some(value) = usize::try_from(id)
                .ok()
                .and_then(|i| caller.data().metrics.get(i))
                .map(|m| m.2)
            else {
                return Status::NotFound as i32;
            };
            status(write(
                &mut caller,
                ret,
                &u64::try_from(value).unwrap_or(0).to_le_bytes(),
            ))
        },
    )?;
    env.define(
        "proxy_record_metric",
        |mut caller: Caller<'_, Host>, id: i32, value: i64| -> i32 {
            let Some(metric) = usize::try_from(id)
                .ok()
                .and_then(|i| caller.data_mut().metrics.get_mut(i))
            else {
                return Status::NotFound as i32;
            };
            metric.2 = value;
            Status::Ok as i32
        },
    )?;
    Ok(())
}
