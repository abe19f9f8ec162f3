//! Process readiness: a worker marks itself ready once connected and consuming; its admin
//! listener's `/readyz` reports it (see `service`, feature `service`).

use std::sync::atomic::{AtomicBool, Ordering};

static READY: AtomicBool = AtomicBool::new(false);

/// Marks this process ready (connected and consuming) or not.
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::Relaxed);
}

/// Whether this process said it is ready.
pub fn is_ready() -> bool {
    READY.load(Ordering::Relaxed)
}
