//! RFC 6455 codec of the gateway's read and write paths (`switchboard_core::frame`).
//!
//! - `parse`: one masked client text frame (as every browser/client sends), 100 B and 4 KiB
//!   payloads; `parse` also unmasks into a fresh `Bytes`, so that cost is included.
//! - `parse_16_back_to_back`: one read buffer holding 16 x 100 B frames, parsed in a loop
//!   exactly as the gateway's read loop does (`parse(&buf[pos..], ..)`, `pos += used`).
//! - `encode` / `encode_header`: one unmasked server text frame into a reused buffer.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use switchboard_core::frame::{encode, encode_header, parse, Opcode};

/// The gateway's default `ws.max_frame_bytes`.
const MAX_FRAME: usize = 128 << 10;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// `n` bytes of JSON-looking ASCII text.
fn text(n: usize) -> Vec<u8> {
    let seed = br#"{"type":"send","clientMsgId":"c-123","receiverId":202,"message":"lorem ipsum dolor sit amet "}"#;
    seed.iter().copied().cycle().take(n).collect()
}

fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    encode(&mut wire, Opcode::Text, true, payload, Some(MASK));
    wire
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/parse_masked_text");
    for size in [100usize, 4096] {
        let wire = client_frame(&text(size));
        // Sanity: parse unmasks and consumes the whole frame.
        let (f, used) = parse(&wire, MAX_FRAME, true).expect("valid frame");
        assert_eq!((&f.payload[..], used), (&text(size)[..], wire.len()));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{size}B")), &wire, |b, wire| {
            b.iter(|| parse(black_box(wire), MAX_FRAME, true).expect("valid frame"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("frame/parse_16_back_to_back");
    let one = client_frame(&text(100));
    let buf: Vec<u8> = one.iter().copied().cycle().take(one.len() * 16).collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("100B", |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let (mut pos, mut frames) = (0, 0);
            while pos < buf.len() {
                let (f, used) = parse(&buf[pos..], MAX_FRAME, true).expect("valid frame");
                black_box(f);
                pos += used;
                frames += 1;
            }
            assert_eq!(frames, 16);
        })
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/encode_server_text");
    for size in [100usize, 4096] {
        let payload = text(size);
        let mut out = Vec::with_capacity(size + 16);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{size}B")), &payload, |b, payload| {
            b.iter(|| {
                out.clear();
                encode(&mut out, Opcode::Text, true, black_box(payload), None);
                black_box(out.len())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("frame/encode_header");
    let mut out = Vec::with_capacity(16);
    for len in [100usize, 4096] {
        g.bench_with_input(BenchmarkId::from_parameter(format!("{len}B")), &len, |b, &len| {
            b.iter(|| {
                out.clear();
                encode_header(&mut out, Opcode::Text, true, black_box(len), None);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// One flush of a busy receiver: 64 message frames of ~250 bytes encoded into one buffer,
/// grown frame by frame (as `gatewayd`'s flush did) or sized once from the frames' lengths.
fn bench_flush(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..64).map(|_| text(250)).collect();
    let mut g = c.benchmark_group("frame/flush_64x250B");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("grown", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            for f in black_box(&frames) {
                encode(&mut out, Opcode::Text, true, f, None);
            }
            black_box(out.len())
        })
    });
    g.bench_function("sized_once", |b| {
        b.iter(|| {
            let frames = black_box(&frames);
            let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 10).sum());
            for f in frames {
                encode(&mut out, Opcode::Text, true, f, None);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_encode, bench_flush);
criterion_main!(benches);
