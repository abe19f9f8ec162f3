//! `frame::parse` on arbitrary bytes, as a client could send them. The first byte picks the
//! size limit and whether a mask is required; the rest is the wire. Beyond "never panics",
//! every frame it accepts must obey RFC 6455 and the limit, and parsing must not depend on
//! bytes past the frame or accept a strict prefix of it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::frame::{encode, parse, FrameError};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, wire)) = data.split_first() else { return };
    let max = [0usize, 1, 125, 126, 65_535, 65_536, 1 << 20][usize::from(knobs & 7) % 7];
    let require_mask = knobs & 0x80 != 0;
    let Ok((frame, used)) = parse(wire, max, require_mask) else {
        return;
    };
    assert!(used >= 2 && used <= wire.len(), "consumed {used} of {}", wire.len());
    assert!(frame.payload.len() <= max, "payload {} over the limit {max}", frame.payload.len());
    if frame.opcode.is_control() {
        assert!(frame.fin && frame.payload.len() <= 125, "control frame fragmented or over 125 bytes");
    }
    let masked = wire[1] & 0x80 != 0;
    assert!(masked || !require_mask, "unmasked frame accepted where a mask is required");
    assert_eq!(wire[0] & 0x70, 0, "reserved bits accepted");

    // The frame alone parses to the same frame; any strict prefix of it is only incomplete.
    assert_eq!(parse(&wire[..used], max, require_mask), Ok((frame.clone(), used)));
    for cut in [0, 1, used / 2, used - 1] {
        assert_eq!(parse(&wire[..cut], max, require_mask), Err(FrameError::Incomplete), "prefix of {cut} bytes");
    }

    // Encoding it again (same mask) gives a frame that parses back to it; with the shortest
    // length form, as the RFC requires of senders, byte for byte what came in.
    let mask = masked.then(|| {
        let at = used - frame.payload.len() - 4;
        [wire[at], wire[at + 1], wire[at + 2], wire[at + 3]]
    });
    let mut again = Vec::new();
    encode(&mut again, frame.opcode, frame.fin, &frame.payload, mask);
    assert_eq!(parse(&again, max, require_mask), Ok((frame.clone(), again.len())));
    let shortest = match wire[1] & 0x7f {
        126 => frame.payload.len() >= 126,
        127 => frame.payload.len() > usize::from(u16::MAX),
        _ => true,
    };
    if shortest {
        assert_eq!(&again[..], &wire[..used], "re-encoded bytes differ");
    }
});
