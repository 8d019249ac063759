//! Following the control service from an Envoy process: one follower per filter configuration
//! (not one per worker), polling from Envoy's main thread with the configuration's HTTP call-out.
//! Envoy's configuration scheduler has no timer, so a small thread of the module commits a tick
//! every [`TICK`]; the tick runs on the main thread and sends a poll when the core's schedule
//! says one is due. An answer is taken on the main thread and the next poll sent at once (the
//! control service holds it until a change).

use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use sticky_core::{ControlSource, Counter, Follower, PollAnswer};

use crate::abi::{self, EnvoyBuffer, EnvoyHttpHeader, ModuleBuffer, ModuleHttpHeader};
use crate::{FilterConfig, SendPointer, lent, log, now_millis};

/// How often the ticker wakes the main thread to see whether a poll is due.
pub const TICK: Duration = Duration::from_millis(100);

pub struct Following {
    follower: Mutex<Follower>,
    /// Envoy's configuration scheduler (deleted when the configuration goes).
    scheduler: SendPointer,
    ticker: Option<Ticker>,
}

/// The thread that commits a tick every [`TICK`] until told to stop.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Following {
    pub fn start(config_envoy: *mut c_void, control: ControlSource) -> Following {
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        // SAFETY: Envoy's configuration pointer during `on_http_filter_config_new`.
        let scheduler =
            SendPointer(unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy) });
        let ticker = if scheduler.0.is_null() {
            log(
                abi::LOG_ERROR,
                "sticky: Envoy gave no scheduler: the control service is not followed",
            );
            None
        } else {
            Ticker::start(scheduler)
        };
        Following {
            follower: Mutex::new(Follower::new(control, id)),
            scheduler,
            ticker,
        }
    }
}

impl Following {
    /// The state a configuration following the same control source holds, if any.
    pub fn handed_over(&self) -> Option<Arc<sticky_core::CompiledListener>> {
        self.follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .handed_over()
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
        if !self.scheduler.0.is_null() {
            // SAFETY: created by `scheduler_new`, deleted once, after the ticker stopped using it.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler.0) }
        }
    }
}

impl Ticker {
    fn start(scheduler: SendPointer) -> Option<Ticker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sticky-follow".to_owned())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut stopped = stopped.lock().unwrap_or_else(PoisonError::into_inner);
                while !*stopped {
                    let (guard, timeout) = wake.wait_timeout(stopped, TICK).unwrap_or_else(PoisonError::into_inner);
                    stopped = guard;
                    if !*stopped && timeout.timed_out() {
                        // SAFETY: the scheduler lives until this thread has been joined.
                        unsafe {
                            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler.get(), 0)
                        };
                    }
                }
            });
        match thread {
            Ok(thread) => Some(Ticker { stop, thread }),
            Err(err) => {
                log(
                    abi::LOG_ERROR,
                    &format!("sticky: cannot start the follower's ticker: {err}"),
                );
                None
            }
        }
    }

    fn stop(self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        let _ = self.thread.join();
    }
}

impl FilterConfig {
    /// On the main thread: sends a poll if one is due.
    pub(crate) fn poll_control(&self, config_envoy: *mut c_void) {
        let Some(following) = &self.following else { return };
        let mut follower = following.follower.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_millis();
        let version = self.listener.load().as_ref().map(|l| l.version());
        let Some(poll) = follower.due_poll(version, now, &self.tally) else {
            return;
        };
        let header = |key: &'static str, value: &str| ModuleHttpHeader {
            key_ptr: key.as_ptr(),
            key_length: key.len(),
            value_ptr: value.as_ptr(),
            value_length: value.len(),
        };
        let mut headers = vec![
            header(":method", "GET"),
            header(":path", &poll.path),
            header(":authority", &poll.authority),
        ];
        if let Some(authorization) = &poll.authorization {
            headers.push(header("authorization", authorization));
        }
        let cluster = follower.control().cluster.clone();
        let mut callout = 0u64;
        // SAFETY: Envoy's configuration pointer on the main thread; every buffer outlives the call.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                config_envoy,
                &raw mut callout,
                ModuleBuffer::of(cluster.as_bytes()),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::NULL,
                poll.timeout_ms,
            )
        };
        if result == abi::CALLOUT_INIT_SUCCESS {
            follower.sent();
        } else {
            follower.not_sent(now);
            self.count_from_config(config_envoy, Counter::ControlErrors);
            log(
                abi::LOG_WARN,
                &format!("sticky: cannot call the control service on cluster {cluster} (result {result})"),
            );
        }
    }

    /// On the main thread: takes a poll's answer, then polls again.
    pub(crate) fn take_poll_answer(
        &self,
        config_envoy: *mut c_void,
        result: u32,
        headers: &[EnvoyHttpHeader],
        body_chunks: &[EnvoyBuffer],
    ) {
        let Some(following) = &self.following else { return };
        let status_ok = result == abi::CALLOUT_SUCCESS
            && headers.iter().any(|h| {
                // SAFETY: Envoy lends the answer's headers for the duration of the hook.
                let (key, value) = unsafe { (lent(h.key_ptr, h.key_length), lent(h.value_ptr, h.value_length)) };
                key == b":status" && value == b"200"
            });
        let body: Vec<u8> = body_chunks
            .iter()
            // SAFETY: Envoy lends the answer's body for the duration of the hook.
            .flat_map(|chunk| unsafe { lent(chunk.ptr, chunk.length) }.iter().copied())
            .collect();
        let answer = {
            let mut follower = following.follower.lock().unwrap_or_else(PoisonError::into_inner);
            let current = self.listener.load_full();
            follower.take_answer(now_millis(), status_ok, &body, current.as_deref())
        };
        if let Some(counter) = answer.counter() {
            self.count_from_config(config_envoy, counter);
        }
        match answer {
            PollAnswer::Changed(listener) => {
                let closing = self.upgrades.close_left(&listener);
                if closing > 0 {
                    log(
                        abi::LOG_INFO,
                        &format!("sticky: closing {closing} WebSockets whose target was deregistered"),
                    );
                }
                self.listener.store(Some(listener));
            }
            PollAnswer::Failed(Some(err)) => log(
                abi::LOG_WARN,
                &format!("sticky: refusing state from the control service: {err}"),
            ),
            PollAnswer::Unchanged | PollAnswer::Failed(None) => {}
        }
        self.poll_control(config_envoy);
    }
}
