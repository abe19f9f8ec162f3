//! The binary record a [`Delivery`] travels as on a cluster transport (Kafka).
//!
//! Compact and self-describing enough to evolve: a version byte, a flags byte, LEB128 varints
//! for the route and message id, then the payload as the rest of the record (the transport
//! frames records, so the payload needs no length). Ids are zigzag-encoded where they are
//! signed, so any `i64` round-trips while real (positive, small) ids stay short: a delivery to
//! one user of a 100-byte frame takes 105 bytes.
//!
//! ```text
//! version  u8       = 1
//! flags    u8       bit 0: route is Conn (else Users)
//!                   bit 1: Users has a `skip` connection
//!                   bit 2: a message id follows the route
//! route    Conn:    varint conn
//!          Users:   varint count, count x zigzag varint user, [varint skip]
//! [id]     zigzag varint message id
//! payload  every remaining byte
//! ```
//!
//! Decoding never panics and never allocates more than the record's own length (a user count
//! larger than the bytes left is rejected before anything is reserved).
//!
//! ```
//! use bytes::Bytes;
//! use switchboard_core::bus::{codec, Delivery, Route};
//! use switchboard_core::ids::{ConnId, MessageId};
//! let d = Delivery { route: Route::Conn(ConnId(7)), payload: Bytes::from_static(b"{}"), message_id: Some(MessageId(42)) };
//! let record = codec::encode(&d);
//! assert_eq!(record, [1, 0b101, 7, 84, b'{', b'}']);
//! assert_eq!(codec::decode(&record).unwrap(), d);
//! ```

use super::{Delivery, Route};
use crate::ids::{ConnId, MessageId, UserId};
use bytes::Bytes;

/// The record format written by [`encode`]; [`decode`] rejects any other.
pub const VERSION: u8 = 1;

const ROUTE_CONN: u8 = 1 << 0;
const HAS_SKIP: u8 = 1 << 1;
const HAS_MESSAGE_ID: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = ROUTE_CONN | HAS_SKIP | HAS_MESSAGE_ID;

/// Why a record is not a delivery. Fieldless where it can be: decoding sits on the consume path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The record ends inside the header.
    #[error("delivery record is truncated")]
    Truncated,
    /// Written by a newer (or foreign) producer.
    #[error("unknown delivery record version {0}")]
    UnknownVersion(u8),
    /// Unknown flag bits, or `skip` on a `Conn` route.
    #[error("invalid delivery record flags {0:#04x}")]
    BadFlags(u8),
    /// A varint longer than 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A user count larger than the record could hold.
    #[error("user count exceeds the record length")]
    BadCount,
}

/// Encodes a delivery into a new record.
pub fn encode(delivery: &Delivery) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len_hint(delivery));
    encode_into(delivery, &mut out);
    out
}

/// Appends the record of a delivery to `out`.
pub fn encode_into(delivery: &Delivery, out: &mut Vec<u8>) {
    let mut flags = 0;
    if delivery.message_id.is_some() {
        flags |= HAS_MESSAGE_ID;
    }
    match &delivery.route {
        Route::Conn(_) => flags |= ROUTE_CONN,
        Route::Users { skip: Some(_), .. } => flags |= HAS_SKIP,
        Route::Users { skip: None, .. } => {}
    }
    out.extend_from_slice(&[VERSION, flags]);
    match &delivery.route {
        Route::Conn(conn) => put_varint(out, conn.0),
        Route::Users { users, skip } => {
            put_varint(out, users.len() as u64);
            for user in users {
                put_varint(out, zigzag(user.0));
            }
            if let Some(skip) = skip {
                put_varint(out, skip.0);
            }
        }
    }
    if let Some(id) = delivery.message_id {
        put_varint(out, zigzag(id.0));
    }
    out.extend_from_slice(&delivery.payload);
}

/// Decodes a record written by [`encode`]; the payload is copied out of `record`.
///
/// # Errors
/// A [`CodecError`] saying what is wrong with the record.
pub fn decode(record: &[u8]) -> Result<Delivery, CodecError> {
    let mut r = Reader(record);
    let version = r.byte()?;
    if version != VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let flags = r.byte()?;
    if flags & !KNOWN_FLAGS != 0 || flags & (ROUTE_CONN | HAS_SKIP) == ROUTE_CONN | HAS_SKIP {
        return Err(CodecError::BadFlags(flags));
    }
    let route = if flags & ROUTE_CONN != 0 {
        Route::Conn(ConnId(r.varint()?))
    } else {
        let users = r.users()?;
        let skip = if flags & HAS_SKIP != 0 { Some(ConnId(r.varint()?)) } else { None };
        Route::Users { users, skip }
    };
    let message_id = if flags & HAS_MESSAGE_ID != 0 { Some(MessageId(unzigzag(r.varint()?))) } else { None };
    Ok(Delivery { route, payload: Bytes::copy_from_slice(r.0), message_id })
}

fn encoded_len_hint(d: &Delivery) -> usize {
    let route = match &d.route {
        Route::Conn(_) => 10,
        Route::Users { users, .. } => 20 + 3 * users.len(),
    };
    2 + route + 10 + d.payload.len()
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The unread rest of a record.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.0.split_first().ok_or(CodecError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            // The tenth byte may only carry the 64th bit.
            if shift == 63 && b > 1 {
                return Err(CodecError::VarintOverflow);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::VarintOverflow)
    }

    fn users(&mut self) -> Result<Vec<UserId>, CodecError> {
        let count = self.varint()?;
        // Each user takes at least one byte: a larger count is a lie, and believing it
        // would reserve memory the record never backs.
        if count > self.0.len() as u64 {
            return Err(CodecError::BadCount);
        }
        (0..count).map(|_| Ok(UserId(unzigzag(self.varint()?)))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delivery(route: Route, message_id: Option<i64>, payload: &'static [u8]) -> Delivery {
        Delivery { route, payload: Bytes::from_static(payload), message_id: message_id.map(MessageId) }
    }

    /// Pins the wire format: a change here breaks mixed-version clusters.
    #[test]
    fn golden_records() {
        let users = Route::Users { users: vec![UserId(1), UserId(300)], skip: Some(ConnId(5)) };
        assert_eq!(encode(&delivery(users, None, b"hi")), [1, 0b010, 2, 2, 0xd8, 0x04, 5, b'h', b'i']);
        let none = Route::Users { users: vec![], skip: None };
        assert_eq!(encode(&delivery(none, Some(-1), b"")), [1, 0b100, 0, 1]);
        assert_eq!(
            encode(&delivery(Route::Conn(ConnId(u64::MAX)), None, b"")),
            [1, 1, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1]
        );
    }

    #[test]
    fn rejects_malformed_records() {
        assert_eq!(decode(&[]), Err(CodecError::Truncated));
        assert_eq!(decode(&[1]), Err(CodecError::Truncated));
        assert_eq!(decode(&[2, 0]), Err(CodecError::UnknownVersion(2)));
        assert_eq!(decode(&[1, 0b1000]), Err(CodecError::BadFlags(0b1000)));
        assert_eq!(decode(&[1, ROUTE_CONN | HAS_SKIP, 1]), Err(CodecError::BadFlags(3)));
        assert_eq!(decode(&[1, ROUTE_CONN, 0x80]), Err(CodecError::Truncated));
        assert_eq!(
            decode(&[1, ROUTE_CONN, 255, 255, 255, 255, 255, 255, 255, 255, 255, 2]),
            Err(CodecError::VarintOverflow)
        );
        assert_eq!(decode(&[1, 0, 3, 1, 2]), Err(CodecError::BadCount));
        assert_eq!(decode(&[1, HAS_MESSAGE_ID, 0]), Err(CodecError::Truncated));
    }

    fn route() -> impl Strategy<Value = Route> {
        prop_oneof![
            any::<u64>().prop_map(|c| Route::Conn(ConnId(c))),
            (proptest::collection::vec(any::<i64>(), 0..40), proptest::option::of(any::<u64>())).prop_map(|(u, s)| {
                Route::Users { users: u.into_iter().map(UserId).collect(), skip: s.map(ConnId) }
            }),
        ]
    }

    fn any_delivery() -> impl Strategy<Value = Delivery> {
        (route(), proptest::option::of(any::<i64>()), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(route, id, payload)| Delivery { route, payload: payload.into(), message_id: id.map(MessageId) })
    }

    proptest! {
        #[test]
        fn round_trips(d in any_delivery()) {
            let record = encode(&d);
            prop_assert_eq!(decode(&record), Ok(d));
        }

        #[test]
        fn appends_after_existing_bytes(d in any_delivery(), prefix in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut out = prefix.clone();
            encode_into(&d, &mut out);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(decode(&out[prefix.len()..]), Ok(d));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn header_truncation_is_an_error(d in any_delivery()) {
            let record = encode(&d);
            let header = record.len() - d.payload.len();
            for cut in 0..header {
                prop_assert!(decode(&record[..cut]).is_err(), "cut at {}", cut);
            }
        }

        #[test]
        fn zigzag_round_trips(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
