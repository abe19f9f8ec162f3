//! SQLite group commit (`storage_workers::sqlite::SqliteStore::append`): one `append` call is
//! one job on the writer thread, i.e. one transaction. `store/sqlite_append`: batches of 1, 64
//! and 512 direct messages from one user to another (100-character bodies, a fresh
//! `clientMsgId` each, so the dedupe check runs and misses), all in one conversation.
//! `store/sqlite_append_spread`: batches of 512 such messages, each in a different direct
//! conversation (512 sender/receiver pairs), the case where nothing is shared between the
//! messages of a batch. `durability = "normal"`, one fresh database in a temporary directory
//! that grows as the bench runs (the spread group runs second). The time includes the async
//! round trip to the writer thread.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use storage_workers::sqlite::SqliteStore;
use switchboard_core::config::{Durability, StorageConfig};
use switchboard_core::ids::{DeviceId, UserId};
use switchboard_core::protocol::Target;
use switchboard_core::store::{MessageStore, NewMessage, NewUser};

fn new_user(n: u32) -> NewUser {
    NewUser {
        user_name: format!("bench{n}"),
        email: format!("bench{n}@example.test"),
        phone_number: format!("+1555000{n:04}"),
        // Never verified here; any string is stored as is.
        password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
    }
}

fn bench_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StorageConfig { durability: Durability::Normal, ..StorageConfig::default() };
    let store = SqliteStore::open(dir.path(), &cfg).expect("open store");
    let (alice, bob) = rt.block_on(async {
        let a = store.create_user(new_user(1)).await.expect("user 1").user_id;
        let b = store.create_user(new_user(2)).await.expect("user 2").user_id;
        (a, b)
    });
    let text: String = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. Sphinx of qu"
        .chars()
        .cycle()
        .take(100)
        .collect();
    let device = DeviceId("bench-device".into());
    let next_id = AtomicU64::new(0);
    let batch = |n: usize| -> Vec<NewMessage> {
        (0..n)
            .map(|_| NewMessage {
                sender: alice,
                sender_device: device.clone(),
                client_msg_id: Some(format!("c-{}", next_id.fetch_add(1, Ordering::Relaxed))),
                target: Target::User(bob),
                text: text.clone(),
                media_id: None,
            })
            .collect()
    };
    // Sanity: a batch commits, every message is new and goes to bob.
    let results = rt.block_on(store.append(batch(4)));
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|a| !a.duplicate && a.recipients == [bob])));

    const PAIRS: u32 = 512;
    let pairs: Vec<(UserId, UserId)> = rt.block_on(async {
        let mut pairs = Vec::with_capacity(PAIRS as usize);
        for p in 0..PAIRS {
            let a = store.create_user(new_user(10 + 2 * p)).await.expect("spread user").user_id;
            let b = store.create_user(new_user(11 + 2 * p)).await.expect("spread user").user_id;
            pairs.push((a, b));
        }
        pairs
    });
    let spread_batch = |n: usize| -> Vec<NewMessage> {
        (0..n)
            .map(|i| {
                let (from, to) = pairs[i % pairs.len()];
                NewMessage {
                    sender: from,
                    sender_device: device.clone(),
                    client_msg_id: Some(format!("c-{}", next_id.fetch_add(1, Ordering::Relaxed))),
                    target: Target::User(to),
                    text: text.clone(),
                    media_id: None,
                }
            })
            .collect()
    };

    let mut g = c.benchmark_group("store/sqlite_append");
    g.sample_size(20);
    for n in [1usize, 64, 512] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.to_async(&rt).iter_batched(
                || batch(n),
                |msgs| async {
                    let out = store.append(msgs).await;
                    assert!(out.iter().all(Result::is_ok));
                    out
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("store/sqlite_append_spread");
    g.sample_size(20);
    let n = PAIRS as usize;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
        b.to_async(&rt).iter_batched(
            || spread_batch(n),
            |msgs| async {
                let out = store.append(msgs).await;
                assert!(out.iter().all(Result::is_ok));
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(store);
    drop(dir);
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
