//! Latency histograms (µs, 1 µs .. 60 s, 3 significant digits), their V2 + base64 wire form,
//! and the percentiles reported.

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Highest trackable latency, µs.
const MAX_US: u64 = 60_000_000;

/// An empty latency histogram.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Records a latency in µs (clamped to 1 .. 60 s).
pub fn record(h: &mut Histogram<u64>, us: i64) {
    h.saturating_record(us.clamp(1, MAX_US as i64) as u64);
}

/// V2-serialized, base64.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut v = Vec::new();
    V2Serializer::new().serialize(h, &mut v).expect("serializing to a Vec");
    B64.encode(v)
}

/// The inverse of [`encode`].
pub fn decode(s: &str) -> Result<Histogram<u64>> {
    let bytes = B64.decode(s).context("histogram base64")?;
    Deserializer::new().deserialize(&mut &bytes[..]).context("histogram V2")
}

/// Adds an encoded histogram into `into`.
pub fn merge(into: &mut Histogram<u64>, encoded: &str) -> Result<()> {
    let h = decode(encoded)?;
    into.add(&h).context("merging histograms")
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean, ms.
    pub mean: f64,
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// 99.9th percentile, ms.
    pub p999: f64,
    /// Largest, ms.
    pub max: f64,
}

impl Percentiles {
    /// From a µs histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Wall-clock time, Unix ns (CLOCK_REALTIME: the same in every process on this machine).
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// `tokio` instant that corresponds to the Unix time `ns`.
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    let now_i = tokio::time::Instant::now();
    let now_ns = unix_ns();
    if ns >= now_ns {
        now_i + std::time::Duration::from_nanos(ns - now_ns)
    } else {
        now_i.checked_sub(std::time::Duration::from_nanos(now_ns - ns)).unwrap_or(now_i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_merge() {
        let mut a = hist();
        for v in [5, 50, 500, 5000] {
            record(&mut a, v);
        }
        let mut b = hist();
        record(&mut b, 1_000_000);
        merge(&mut b, &encode(&a)).unwrap();
        assert_eq!(b.len(), 5);
        let p = Percentiles::of(&b);
        assert!(p.max >= 999.0 && p.max <= 1001.0, "{p:?}");
        assert!(p.p50 >= 0.49 && p.p50 <= 0.51, "{p:?}");
    }
}
