//! Login throttling: after `MAX_FAILURES` wrong passwords for one email within `WINDOW`, that
//! email is refused with 429 until the window ends, whatever the password. Per process; a
//! cluster shares nothing here (each node throttles what it sees).

use dashmap::DashMap;
use switchboard_core::time::now_secs;

/// Failures allowed per email and window.
pub const MAX_FAILURES: u32 = 10;
/// Window, seconds.
pub const WINDOW_SECS: i64 = 15 * 60;
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 100_000;

/// Failure counts by lower-cased email.
#[derive(Default)]
pub struct LoginThrottle {
    failures: DashMap<String, (u32, i64)>,
}

impl LoginThrottle {
    /// Whether `email` may try now.
    pub fn allowed(&self, email: &str) -> bool {
        match self.failures.get(&email.to_lowercase()) {
            Some(e) => e.0 < MAX_FAILURES || now_secs() - e.1 >= WINDOW_SECS,
            None => true,
        }
    }

    /// Records a wrong password.
    pub fn failed(&self, email: &str) {
        let now = now_secs();
        if self.failures.len() >= SWEEP_AT {
            self.failures.retain(|_, v| now - v.1 < WINDOW_SECS);
        }
        let mut e = self.failures.entry(email.to_lowercase()).or_insert((0, now));
        if now - e.1 >= WINDOW_SECS {
            *e = (0, now);
        }
        e.0 += 1;
    }

    /// Forgets failures after a successful login.
    pub fn succeeded(&self, email: &str) {
        self.failures.remove(&email.to_lowercase());
    }
}
