//! RFC 6455 frame codec, written for the gateway's read path.
//!
//! The gateway reads socket bytes into a per-thread scratch buffer and calls [`parse`] on them;
//! only the tail of a partial frame is kept per connection. [`parse`] never allocates on error
//! and checks the size limit from the header alone, so a peer announcing a 1 GiB frame is
//! refused before any of it is buffered.
//!
//! ```
//! use switchboard_core::frame::{encode, parse, Opcode};
//! let mut wire = Vec::new();
//! encode(&mut wire, Opcode::Text, true, b"hi", Some([1, 2, 3, 4]));
//! let (frame, used) = parse(&wire, 1024, true).unwrap();
//! assert_eq!((frame.opcode, &frame.payload[..], used), (Opcode::Text, &b"hi"[..], wire.len()));
//! ```

use bytes::Bytes;

/// Close codes the gateway sends.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown) or idle reap.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Payload not valid for its type (text frame that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (account deleted).
    pub const POLICY: u16 = 1008;
    /// Frame or message larger than the configured limit.
    pub const TOO_BIG: u16 = 1009;
    /// Internal server error.
    pub const INTERNAL: u16 = 1011;
    /// Server restart: reconnect elsewhere (reserved for node drain).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later: the client did not read fast enough (slow consumer).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close handshake.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Continuation,
            1 => Self::Text,
            2 => Self::Binary,
            8 => Self::Close,
            9 => Self::Ping,
            10 => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0,
            Self::Text => 1,
            Self::Binary => 2,
            Self::Close => 8,
            Self::Ping => 9,
            Self::Pong => 10,
        }
    }

    /// Control frames (close, ping, pong) may not be fragmented or exceed 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }

    /// The label used for the `opcode` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continuation => "continuation",
            Self::Text => "text",
            Self::Binary => "binary",
            Self::Close => "close",
            Self::Ping => "ping",
            Self::Pong => "pong",
        }
    }
}

/// One decoded frame, payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Last fragment of its message.
    pub fin: bool,
    /// Opcode.
    pub opcode: Opcode,
    /// Unmasked payload.
    pub payload: Bytes,
}

/// Why bytes are not (yet) a frame. Only `Incomplete` is recoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed.
    #[error("incomplete frame")]
    Incomplete,
    /// RSV bits set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    #[error("unknown opcode")]
    UnknownOpcode,
    /// A client frame without a mask.
    #[error("client frame not masked")]
    Unmasked,
    /// A control frame over 125 bytes or fragmented.
    #[error("invalid control frame")]
    BadControl,
    /// Payload over the configured limit.
    #[error("frame too large")]
    TooLarge,
}

impl FrameError {
    /// The close code a server sends for this error.
    pub fn close_code(self) -> u16 {
        match self {
            Self::TooLarge => close::TOO_BIG,
            _ => close::PROTOCOL,
        }
    }
}

/// Decodes one frame from the front of `buf`, returning it and the bytes consumed.
///
/// # Errors
/// [`FrameError::Incomplete`] when `buf` holds only part of a frame; any other variant is a
/// protocol violation after which the connection must be closed.
pub fn parse(buf: &[u8], max_payload: usize, require_mask: bool) -> Result<(Frame, usize), FrameError> {
    let [b0, b1, ..] = *buf else { return Err(FrameError::Incomplete) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(FrameError::UnknownOpcode)?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    if require_mask && !masked {
        return Err(FrameError::Unmasked);
    }
    let (len, mut pos) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(take::<2>(buf, 2)?) as u64, 4),
        127 => (u64::from_be_bytes(take::<8>(buf, 2)?), 10),
        n => (n as u64, 2),
    };
    if opcode.is_control() && (len > 125 || !fin) {
        return Err(FrameError::BadControl);
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooLarge);
    }
    let mask = if masked {
        let m = take::<4>(buf, pos)?;
        pos += 4;
        Some(m)
    } else {
        None
    };
    let end = pos + len as usize;
    let raw = buf.get(pos..end).ok_or(FrameError::Incomplete)?;
    let payload = match mask {
        Some(m) => Bytes::from(raw.iter().enumerate().map(|(i, b)| b ^ m[i & 3]).collect::<Vec<u8>>()),
        None => Bytes::copy_from_slice(raw),
    };
    Ok((Frame { fin, opcode, payload }, end))
}

fn take<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], FrameError> {
    buf.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(FrameError::Incomplete)
}

/// Appends the header of a frame with a `len`-byte payload (masked with `mask` if given).
pub fn encode_header(out: &mut Vec<u8>, opcode: Opcode, fin: bool, len: usize, mask: Option<[u8; 4]>) {
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Appends a whole frame. Servers pass `mask: None`; clients must mask.
pub fn encode(out: &mut Vec<u8>, opcode: Opcode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) {
    encode_header(out, opcode, fin, payload.len(), mask);
    match mask {
        Some(m) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i & 3])),
        None => out.extend_from_slice(payload),
    }
}

/// The payload of a close frame: code then UTF-8 reason (truncated to fit 125 bytes).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &[u8]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(client_key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_opcode() -> impl Strategy<Value = Opcode> {
        prop_oneof![
            Just(Opcode::Continuation),
            Just(Opcode::Text),
            Just(Opcode::Binary),
            Just(Opcode::Close),
            Just(Opcode::Ping),
            Just(Opcode::Pong),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(op in any_opcode(), fin in any::<bool>(), mask in any::<Option<[u8; 4]>>(),
                      payload in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            let fin = fin || op.is_control();
            let payload = if op.is_control() { &payload[..payload.len().min(125)] } else { &payload[..] };
            let mut wire = Vec::new();
            encode(&mut wire, op, fin, payload, mask);
            let (f, used) = parse(&wire, 1 << 20, mask.is_some()).unwrap();
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(f.opcode, op);
            prop_assert_eq!(f.fin, fin);
            prop_assert_eq!(&f.payload[..], payload);
            // Every strict prefix is incomplete, never an error or a wrong frame.
            for cut in [0, 1, wire.len() / 2, wire.len() - 1] {
                if cut < wire.len() {
                    prop_assert_eq!(parse(&wire[..cut], 1 << 20, mask.is_some()), Err(FrameError::Incomplete));
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes, 1024, true);
        }
    }

    #[test]
    fn rejects_violations() {
        let mut w = Vec::new();
        encode(&mut w, Opcode::Text, true, b"x", None);
        assert_eq!(parse(&w, 10, true), Err(FrameError::Unmasked));
        w.clear();
        encode_header(&mut w, Opcode::Text, true, 1 << 30, Some([0; 4]));
        assert_eq!(parse(&w, 1 << 16, true), Err(FrameError::TooLarge));
        assert_eq!(parse(&[0x83, 0x80, 0, 0, 0, 0], 10, true), Err(FrameError::UnknownOpcode));
        assert_eq!(parse(&[0xC1, 0x80, 0, 0, 0, 0], 10, true), Err(FrameError::ReservedBits));
        assert_eq!(parse(&[0x09, 0x80, 0, 0, 0, 0], 10, true), Err(FrameError::BadControl));
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn close_reason_is_truncated_on_char_boundary() {
        let p = close_payload(1000, &"é".repeat(100));
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
