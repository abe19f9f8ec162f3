//! A token bucket per connection for the frames that cost the server work (sends, typing,
//! receipts, syncs): `rate` tokens per second, up to `burst`. Eight bytes of state.

use std::time::Instant;

/// Token bucket; time is read only when a frame arrives.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    /// Milliseconds since the process epoch at the last refill.
    at_ms: u32,
}

fn now_ms() -> u32 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32) -> Self {
        Self { tokens: burst as f32, at_ms: now_ms() }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: u32, burst: u32) -> bool {
        let now = now_ms();
        let elapsed = now.wrapping_sub(self.at_ms) as f32 / 1000.0;
        self.at_ms = now;
        self.tokens = (self.tokens + elapsed * rate as f32).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse() {
        let mut b = TokenBucket::full(3);
        assert!((0..3).all(|_| b.take(0, 3)));
        assert!(!b.take(0, 3));
    }
}
