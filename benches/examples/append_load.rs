//! A fixed write load for counting the SQLite writer's instructions per message under
//! callgrind (counts repeat run to run; wall-clock benches here vary ±15 %):
//!
//! ```text
//! cargo build --release -p switchboard-benches --example append_load
//! valgrind --tool=callgrind --toggle-collect='storage_workers::sqlite::pool::writer_loop' \
//!     --callgrind-out-file=/tmp/cg.%p target/release/examples/append_load 30
//! ```
//!
//! Argument: how many batches of 1,536 direct messages (100-character bodies, fresh
//! `clientMsgId` each) to append, spread over 50 sender→receiver pairs, as in a saturating
//! `direct` chatbench run. Run it with two batch counts and divide the difference of the
//! totals by the difference in messages: that leaves out opening and setting up the store.

use std::sync::atomic::{AtomicU64, Ordering};
use storage_workers::sqlite::SqliteStore;
use switchboard_core::config::{Durability, StorageConfig};
use switchboard_core::ids::DeviceId;
use switchboard_core::protocol::Target;
use switchboard_core::store::{MessageStore, NewMessage, NewUser};

const PAIRS: usize = 50;
const BATCH: usize = 1536;

fn main() {
    let batches: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StorageConfig { durability: Durability::Normal, ..StorageConfig::default() };
    let store = SqliteStore::open(dir.path(), &cfg).expect("open store");
    let text: String = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. Sphinx of qu"
        .chars()
        .cycle()
        .take(100)
        .collect();
    let device = DeviceId("load-device".into());
    let next_id = AtomicU64::new(0);
    rt.block_on(async {
        let mut pairs = Vec::with_capacity(PAIRS);
        for p in 0..PAIRS * 2 {
            let user = NewUser {
                user_name: format!("load{p}"),
                email: format!("load{p}@example.test"),
                phone_number: format!("+1555100{p:04}"),
                password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            };
            pairs.push(store.create_user(user).await.expect("user").user_id);
        }
        for _ in 0..batches {
            let msgs: Vec<NewMessage> = (0..BATCH)
                .map(|i| {
                    let p = i % PAIRS;
                    NewMessage {
                        sender: pairs[2 * p],
                        sender_device: device.clone(),
                        client_msg_id: Some(format!("c-{}", next_id.fetch_add(1, Ordering::Relaxed))),
                        target: Target::User(pairs[2 * p + 1]),
                        text: text.clone(),
                        media_id: None,
                    }
                })
                .collect();
            let out = store.append(msgs).await;
            assert!(out.iter().all(Result::is_ok), "an append failed");
        }
    });
    println!("{} messages appended", batches * BATCH);
}
