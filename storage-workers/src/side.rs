//! The side topic: writes that may lag behind the client, produced by gateways and persisted
//! by the storage workers (`worker`, features `postgres` + `kafka`).
//!
//! **Topic.** `<cluster.topic_prefix>side` ([`side_topic`]), with `cluster.inbound_partitions`
//! partitions ([`partitions`]). Whoever touches it first creates it.
//!
//! **Key.** The user id as a decimal string ([`SideWrite::key`]): one user's writes stay on
//! one partition, in produce order, and so with one worker at a time.
//!
//! **Value.** One [`SideWrite`] as JSON, tagged by `kind` ([`encode`] / [`decode`]):
//!
//! ```text
//! {"kind":"cursor","user":7,"device":"phone","message":42}
//! {"kind":"last_seen","user":7,"at_ms":1700000000000}
//! ```
//!
//! Every write is idempotent and order-insensitive where it lands (a cursor only moves
//! forward, last seen keeps the newest time), so producers may send at least once and
//! several gateways may write for one user without coordinating. Unknown fields are ignored;
//! an unknown `kind` is undecodable, so a new kind must reach the workers before the
//! producers.
//!
//! ```
//! use storage_workers::side::{decode, encode, SideWrite};
//! use switchboard_core::ids::UserId;
//! let write = SideWrite::LastSeen { user: UserId(7), at_ms: 1_700_000_000_000 };
//! assert_eq!(write.key(), "7");
//! assert_eq!(decode(&encode(&write)).unwrap(), write);
//! ```

use serde::{Deserialize, Serialize};
use switchboard_core::config::Config;
use switchboard_core::error::ErrorCode;
use switchboard_core::ids::{DeviceId, MessageId, UserId};

/// The side topic's name under the topic prefix.
pub const SIDE_TOPIC: &str = "side";

/// One write for the storage workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SideWrite {
    /// A device acknowledged everything up to `message` (a `cursor` frame): its sync cursor
    /// moves there, never back.
    Cursor {
        /// The device's owner.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// The newest message the device has.
        message: MessageId,
    },
    /// The user was last seen at `at_ms` (their last connection closed); the newest time wins.
    LastSeen {
        /// Who.
        user: UserId,
        /// When, Unix milliseconds.
        at_ms: i64,
    },
}

impl SideWrite {
    /// The user the write is for.
    pub fn user(&self) -> UserId {
        match self {
            Self::Cursor { user, .. } | Self::LastSeen { user, .. } => *user,
        }
    }

    /// The record key: the user id in decimal.
    pub fn key(&self) -> String {
        self.user().to_string()
    }
}

/// The side topic of a configuration: `<cluster.topic_prefix>side`.
pub fn side_topic(cfg: &Config) -> String {
    format!("{}{SIDE_TOPIC}", cfg.cluster.topic_prefix)
}

/// Partitions the side topic is created with: `cluster.inbound_partitions`, so the storage
/// group can spread as wide as the router group.
pub fn partitions(cfg: &Config) -> i32 {
    cfg.cluster.inbound_partitions
}

/// The record value of `write`.
///
/// # Panics
/// Never: the type has only integer and string fields, which always serialize.
pub fn encode(write: &SideWrite) -> Vec<u8> {
    serde_json::to_vec(write).expect("a SideWrite always serializes")
}

/// Parses a record value.
///
/// # Errors
/// [`DecodeError`] when the value is not a `SideWrite` (malformed JSON, unknown `kind`, a
/// missing or mistyped field).
pub fn decode(value: &[u8]) -> Result<SideWrite, DecodeError> {
    Ok(serde_json::from_slice(value)?)
}

/// A side record that is not a [`SideWrite`].
#[derive(Debug, thiserror::Error)]
#[error("undecodable side record: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl ErrorCode for DecodeError {
    fn code(&self) -> &'static str {
        "invalid_side_record"
    }
    fn http_status(&self) -> u16 {
        500
    }
}

/// Producing side records: the topic ensured once, then keyed sends.
#[cfg(feature = "kafka")]
mod produce {
    use super::{encode, partitions, side_topic, SideWrite};
    use switchboard_core::bus::{BusError, KafkaLog, Sent};
    use switchboard_core::config::Config;

    /// Sends [`SideWrite`]s to the side topic through a shared [`KafkaLog`] (idempotent
    /// producer, `acks=all`). Cheap to clone.
    #[derive(Clone)]
    pub struct SideProducer {
        log: KafkaLog,
        topic: String,
    }

    impl SideProducer {
        /// A producer for `cfg`'s side topic, creating the topic if it does not exist.
        ///
        /// # Errors
        /// [`BusError`] when the topic cannot be created (broker unreachable, illegal name).
        pub async fn new(log: KafkaLog, cfg: &Config) -> Result<Self, BusError> {
            let topic = side_topic(cfg);
            log.ensure_topic(&topic, partitions(cfg)).await?;
            Ok(Self { log, topic })
        }

        /// The topic written to.
        pub fn topic(&self) -> &str {
            &self.topic
        }

        /// Sends `write` keyed by its user and returns once the broker has it.
        ///
        /// # Errors
        /// [`BusError`] when the broker did not acknowledge it within the delivery timeout
        /// (retryable: resending is harmless) or refused it.
        pub async fn send(&self, write: &SideWrite) -> Result<Sent, BusError> {
            self.log
                .send(&self.topic, write.key().as_bytes(), &encode(write))
                .await
        }
    }
}

#[cfg(feature = "kafka")]
pub use produce::SideProducer;

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> [SideWrite; 2] {
        [
            SideWrite::Cursor {
                user: UserId(7),
                device: DeviceId("phone \"1\" ✓".into()),
                message: MessageId(42),
            },
            SideWrite::LastSeen {
                user: UserId(i64::MAX),
                at_ms: -1,
            },
        ]
    }

    #[test]
    fn writes_round_trip() {
        for w in samples() {
            assert_eq!(decode(&encode(&w)).unwrap(), w);
        }
    }

    #[test]
    fn the_wire_form_is_tagged_by_kind() {
        let cursor = SideWrite::Cursor {
            user: UserId(7),
            device: DeviceId("phone".into()),
            message: MessageId(42),
        };
        let json: serde_json::Value = serde_json::from_slice(&encode(&cursor)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "cursor", "user": 7, "device": "phone", "message": 42})
        );
        let seen =
            decode(br#"{"kind":"last_seen","user":7,"at_ms":1700000000000,"extra":true}"#).unwrap();
        assert_eq!(
            seen,
            SideWrite::LastSeen {
                user: UserId(7),
                at_ms: 1_700_000_000_000
            },
            "unknown fields are ignored"
        );
    }

    #[test]
    fn keys_are_decimal_user_ids() {
        let [cursor, seen] = samples();
        assert_eq!(cursor.key(), "7");
        assert_eq!(seen.key(), i64::MAX.to_string());
        assert_eq!(cursor.user(), UserId(7));
    }

    #[test]
    fn other_values_are_refused() {
        for bad in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"kind":"typing","user":1}"#,
            br#"{"kind":"cursor","user":1}"#,
            br#"{"kind":"last_seen","user":"1","at_ms":2}"#,
        ] {
            let e = decode(bad).unwrap_err();
            assert_eq!(
                e.code(),
                "invalid_side_record",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_topic_follows_the_prefix() {
        let mut cfg = Config::default();
        cfg.cluster.topic_prefix = "test.x.".into();
        cfg.cluster.inbound_partitions = 5;
        assert_eq!(side_topic(&cfg), "test.x.side");
        assert_eq!(partitions(&cfg), 5);
    }
}
