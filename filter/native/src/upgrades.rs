//! WebSockets whose target leaves. Envoy keeps a connection to an endpoint removed from its
//! cluster until the stream on it ends, which an upgraded stream never does by itself. So each
//! upgraded stream is watched here (its target's address, and a scheduler for its stream); when
//! a new state no longer keeps connections to that address (deregistered, and drained if its load
//! balancer drains connections), the main thread commits the stream's scheduler and the stream's
//! worker resets it (`envoy_dynamic_module_on_http_filter_scheduled`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use sticky_core::CompiledListener;

use crate::{SendPointer, abi};

/// The upgraded streams of one filter configuration, by watch id.
#[derive(Default)]
pub struct Upgrades {
    next_id: AtomicU64,
    watched: Mutex<HashMap<u64, Watched>>,
}

struct Watched {
    /// The target's address, canonical ([`sticky_core::canonical_address`]).
    address: Box<str>,
    scheduler: SendPointer,
    /// Already asked to close: committed once.
    closing: bool,
}

impl Upgrades {
    /// On the stream's worker: watches stream `filter_envoy`, upgraded to `address`. The id
    /// names the stream's events and unwatches it; `None` if Envoy gave no scheduler.
    pub fn watch(&self, filter_envoy: *mut c_void, address: &str) -> Option<u64> {
        // SAFETY: Envoy's stream pointer, during one of the stream's hooks.
        let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter_envoy) };
        if scheduler.is_null() {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let watched = Watched {
            address: address.into(),
            scheduler: SendPointer(scheduler),
            closing: false,
        };
        self.lock().insert(id, watched);
        Some(id)
    }

    /// The stream ended: no event may be committed for it any more; its scheduler goes.
    pub fn unwatch(&self, id: u64) {
        let removed = self.lock().remove(&id);
        if let Some(watched) = removed {
            // SAFETY: made by `scheduler_new` and deleted once, after it left the registry, so
            // no commit (made under the registry's lock) can use it any more.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(watched.scheduler.get()) }
        }
    }

    /// With a new state (on the main thread): asks every stream whose target `listener` no
    /// longer keeps connections to to close. Returns how many were asked.
    pub fn close_left(&self, listener: &CompiledListener) -> usize {
        let mut watched = self.lock();
        let mut asked = 0;
        for (id, stream) in watched.iter_mut() {
            if !stream.closing && !listener.keeps_connections_to(&stream.address) {
                stream.closing = true;
                asked += 1;
                // SAFETY: the scheduler lives while it is in the registry, whose lock is held;
                // Envoy drops the event if the stream has ended meanwhile.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(stream.scheduler.get(), *id) }
            }
        }
        asked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
