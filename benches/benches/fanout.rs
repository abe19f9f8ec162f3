//! Fan-out of one group message to 1,000 recipients.
//!
//! - `serialize_once_clone`: what the router does: one `message_frame`, then a `Bytes` clone
//!   (a refcount increment) per recipient.
//! - `serialize_per_recipient`: the alternative it avoids, one JSON serialization each.
//! - `ws_encode_copy_per_recipient`: what each connection's writer then does per frame
//!   (gatewayd `ws::conn` flush, private): `frame::encode` of the shared payload into a fresh
//!   buffer, copying header + payload.
//! - `ws_header_per_recipient`: the header-only variant (`frame::encode_header` + a `Bytes`
//!   clone of the payload), i.e. what a vectored write would need.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use switchboard_core::frame::{encode, encode_header, Opcode};
use switchboard_core::ids::{GroupId, MessageId, UserId};
use switchboard_core::protocol::{message_frame, MessageView};

const RECIPIENTS: usize = 1_000;

fn view() -> MessageView {
    MessageView {
        message_id: MessageId(1_234_567),
        sender_id: UserId(101),
        receiver_id: None,
        group_id: Some(GroupId(77)),
        message: "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. Sphinx of qu"
            .chars()
            .cycle()
            .take(100)
            .collect(),
        media: None,
        conversation_seq: 4_321,
        timestamp: 1_767_225_600_000,
        client_msg_id: Some("c-123".into()),
    }
}

fn bench_fanout(c: &mut Criterion) {
    let view = view();
    let mut g = c.benchmark_group("fanout_1000");
    g.throughput(Throughput::Elements(RECIPIENTS as u64));

    g.bench_function("serialize_once_clone", |b| {
        b.iter(|| {
            let payload = message_frame(black_box(&view));
            let mut out: Vec<Bytes> = Vec::with_capacity(RECIPIENTS);
            for _ in 0..RECIPIENTS {
                out.push(payload.clone());
            }
            out
        })
    });
    g.bench_function("serialize_per_recipient", |b| {
        b.iter(|| {
            let mut out: Vec<Bytes> = Vec::with_capacity(RECIPIENTS);
            for _ in 0..RECIPIENTS {
                out.push(message_frame(black_box(&view)));
            }
            out
        })
    });

    let payload = message_frame(&view);
    g.bench_function("ws_encode_copy_per_recipient", |b| {
        b.iter(|| {
            for _ in 0..RECIPIENTS {
                let mut buf = Vec::new();
                encode(&mut buf, Opcode::Text, true, black_box(&payload), None);
                black_box(buf);
            }
        })
    });
    g.bench_function("ws_header_per_recipient", |b| {
        b.iter(|| {
            for _ in 0..RECIPIENTS {
                let mut header = Vec::with_capacity(10);
                encode_header(&mut header, Opcode::Text, true, black_box(&payload).len(), None);
                black_box((header, payload.clone()));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
