//! One task pings every connection each `ws.ping_interval` and closes those silent for
//! `ws.idle_timeout`: no timer per connection.

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
        loop {
            tokio::select! {
                _ = tick.tick() => sweep(&state),
                _ = stop.cancelled() => break,
            }
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
