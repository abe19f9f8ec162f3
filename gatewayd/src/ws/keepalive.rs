//! One task pings every connection each `ws.ping_interval` and closes those silent for
//! `ws.idle_timeout`, and asks sessions quiet for `ws.park_after` to park: no timer per
//! connection.

use super::outbox::OutFrame;
use crate::state::AppState;
use std::sync::Arc;
use switchboard_core::frame::close;
use switchboard_core::metrics::names;
use tokio_util::task::TaskTracker;

/// Starts the keepalive task.
pub fn spawn(state: Arc<AppState>, tracker: &TaskTracker) {
    let stop = state.shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(state.cfg.ws.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // Quiet sessions are looked for twice per `park_after`, at most every 10 s and at least
        // every second (each look visits every session: ~20 ns each).
        let park_every = (state.cfg.ws.park_after / 2).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(10));
        let mut park_tick = tokio::time::interval(park_every);
        park_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => sweep(&state),
                _ = park_tick.tick(), if super::park::enabled(&state.cfg) => park_quiet(&state),
                _ = stop.cancelled() => break,
            }
        }
    });
}

/// Asks every session quiet for `ws.park_after` to park.
fn park_quiet(state: &AppState) {
    let after = state.cfg.ws.park_after.as_secs().min(u64::from(u32::MAX)) as u32;
    state.registry.for_each(|c| {
        if c.idle_secs() >= after {
            c.request_park();
        }
    });
}

fn sweep(state: &AppState) {
    let idle_limit = state.cfg.ws.idle_timeout.as_secs() as u32;
    let mut reaped = 0u64;
    state.registry.for_each(|c| {
        if c.idle_secs() >= idle_limit {
            c.close(close::GOING_AWAY, "idle timeout");
            reaped += 1;
        } else {
            c.push(OutFrame::Ping);
        }
    });
    if reaped > 0 {
        metrics::counter!(names::GATEWAY_CLOSED, "reason" => "idle").increment(reaped);
    }
}
