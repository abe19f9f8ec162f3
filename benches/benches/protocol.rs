//! JSON frames of the WebSocket contract (`switchboard_core::protocol`): parsing what a client
//! sends, serializing what the server sends. 100-character message bodies, as the load harness
//! uses.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use switchboard_core::ids::{MessageId, UserId};
use switchboard_core::protocol::{ack_frame, message_frame, ClientFrame, MessageView};

/// A 100-character message body.
fn body() -> String {
    "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. Sphinx of qu"
        .chars()
        .cycle()
        .take(100)
        .collect()
}

fn bench_parse(c: &mut Criterion) {
    let text = body();
    let send = serde_json::json!({"type": "send", "clientMsgId": "c-123", "receiverId": 202, "message": text}).to_string();
    let seed = serde_json::json!({"senderId": 101, "receiverId": 202, "message": text}).to_string();
    let mut g = c.benchmark_group("protocol/client_frame_parse");
    for (name, frame) in [("send", &send), ("seed_form", &seed)] {
        assert!(matches!(ClientFrame::parse(frame.as_bytes()), Ok(ClientFrame::Send(_))));
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| b.iter(|| ClientFrame::parse(black_box(frame.as_bytes())).expect("valid send")));
    }
    g.finish();
}

fn bench_serialize(c: &mut Criterion) {
    let view = MessageView {
        message_id: MessageId(1_234_567),
        sender_id: UserId(101),
        receiver_id: Some(UserId(202)),
        group_id: None,
        message: body(),
        media: None,
        conversation_seq: 4_321,
        timestamp: 1_767_225_600_000,
        client_msg_id: Some("c-123".into()),
    };
    let mut g = c.benchmark_group("protocol/serialize");
    let len = message_frame(&view).len();
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("message_frame", |b| b.iter(|| message_frame(black_box(&view))));
    let len = ack_frame(Some("c-123"), &view, false).len();
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("ack_frame", |b| b.iter(|| ack_frame(black_box(Some("c-123")), black_box(&view), false)));
    g.finish();
}

criterion_group!(benches, bench_parse, bench_serialize);
criterion_main!(benches);
