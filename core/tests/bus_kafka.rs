//! `KafkaBus` and `KafkaLog` against a real Kafka-protocol broker (tansu, see
//! scripts/kafka.sh).
//!
//! The broker is the one named by `KAFKA_BROKERS` (`host:port[,...]`) when that is set;
//! otherwise each test starts its own tansu with `scripts/kafka.sh start <free port>` and stops
//! it when done, so `cargo test -p switchboard-core --features kafka` needs nothing else
//! (python3 with pip installs tansu on first use). Each test names its topics and groups
//! under a fresh `test.<uuid>.` prefix and deletes them at the end.
//!
//! Client settings follow the broker's quirks: short fetch waits and no linger (a waiting
//! fetch is not answered early), `session.timeout.ms=6000` with 500 ms heartbeats (joins wait
//! about half the session timeout), and `auto.offset.reset=earliest` (the bus's setting).
//! Tests wait for events against deadlines and never sleep.
#![cfg(feature = "kafka")]

use bytes::Bytes;
use std::time::Duration;
use switchboard_core::bus::test_broker::Broker;
use switchboard_core::bus::contract::{bus_contract, marker, recv_n, sample_deliveries};
use switchboard_core::bus::{Bus, Delivery, KafkaBus, KafkaConfig, KafkaLog, LogConsumer, LogRecord, SubscriberStats};
use switchboard_core::ids::{MessageId, NodeId};
use tokio::time::{timeout, Instant};

/// How long a test waits for any one event (a group join takes ~3 s here).
const DEADLINE: Duration = Duration::from_secs(60);

/// Settings for one test: its own namespace, and the broker quirks from the module docs.
fn config(broker: &Broker) -> KafkaConfig {
    KafkaConfig {
        brokers: broker.brokers.clone(),
        topic_prefix: format!("test.{}.", uuid::Uuid::new_v4().simple()),
        linger: Duration::ZERO,
        fetch_wait: Duration::from_millis(20),
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(500),
        commit_interval: Duration::from_millis(100),
        ..KafkaConfig::default()
    }
}

fn node(name: &str) -> NodeId {
    NodeId(name.into())
}

/// Polls `stats` until `done` holds, failing at the deadline.
async fn wait_for_stats(bus: &KafkaBus, node: &NodeId, done: impl Fn(&SubscriberStats) -> bool) -> SubscriberStats {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let stats = bus.stats(node).await.expect("node is subscribed");
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never got there: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closes the bus and deletes the topics and groups of `nodes`.
async fn clean_up(bus: &KafkaBus, nodes: &[&NodeId]) {
    bus.close().await;
    for n in nodes {
        bus.remove_node(n).await.expect("remove the node's topic and group");
    }
}

/// Deliveries of every route shape, each with its sequence number as message id.
fn numbered(n: usize) -> Vec<Delivery> {
    let shapes = sample_deliveries(3);
    (0..n).map(|i| Delivery { message_id: Some(MessageId(i as i64)), ..shapes[i % shapes.len()].clone() }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_passes_the_bus_contract() {
    let broker = Broker::get();
    let bus = KafkaBus::new(config(&broker)).unwrap();
    let (a, b) = (node("a"), node("b"));
    bus_contract(&bus, &a, &b).await;
    clean_up(&bus, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_deliveries_of_every_route_keep_order_and_content() {
    let broker = Broker::get();
    let bus = KafkaBus::new(config(&broker)).unwrap();
    let n = node("gw-1");
    let mut rx = bus.subscribe(&n).await.unwrap();
    let sent = numbered(300);
    for d in &sent {
        bus.publish(&n, d.clone()).await.unwrap();
    }
    assert_eq!(recv_n(&mut rx, sent.len()).await, sent);
    drop(rx);
    clean_up(&bus, &[&n]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_in_separate_processes_see_only_their_own_deliveries() {
    let broker = Broker::get();
    let cfg = config(&broker);
    // A router and two gateways, each with its own clients, as in a cluster.
    let router = KafkaBus::new(cfg.clone()).unwrap();
    let (gw_a, gw_b) = (KafkaBus::new(cfg.clone()).unwrap(), KafkaBus::new(cfg).unwrap());
    let (a, b) = (node("gw-a"), node("gw-b"));
    let (mut rx_a, mut rx_b) = (gw_a.subscribe(&a).await.unwrap(), gw_b.subscribe(&b).await.unwrap());
    let (for_a, for_b) = (sample_deliveries(10), sample_deliveries(20));
    for (da, db) in for_a.iter().zip(&for_b) {
        router.publish(&b, db.clone()).await.unwrap();
        router.publish(&a, da.clone()).await.unwrap();
    }
    router.publish(&a, marker(1)).await.unwrap();
    router.publish(&b, marker(2)).await.unwrap();
    let mut want_a = for_a.clone();
    want_a.push(marker(1));
    let mut want_b = for_b.clone();
    want_b.push(marker(2));
    assert_eq!(recv_n(&mut rx_a, want_a.len()).await, want_a);
    assert_eq!(recv_n(&mut rx_b, want_b.len()).await, want_b);
    drop((rx_a, rx_b));
    gw_a.close().await;
    gw_b.close().await;
    clean_up(&router, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_a_node_nobody_subscribed_to_wait_for_it() {
    let broker = Broker::get();
    let bus = KafkaBus::new(config(&broker)).unwrap();
    let n = node("late");
    let early = numbered(7);
    for d in &early {
        bus.publish(&n, d.clone()).await.unwrap();
    }
    let mut rx = bus.subscribe(&n).await.unwrap();
    assert_eq!(recv_n(&mut rx, early.len()).await, early, "a new group starts at the earliest record");
    drop(rx);
    clean_up(&bus, &[&n]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_subscriber_resumes_after_what_was_handed_over() {
    let broker = Broker::get();
    let cfg = config(&broker);
    let router = KafkaBus::new(cfg.clone()).unwrap();
    let n = node("gw-restart");
    let all = numbered(10);

    let first_run = KafkaBus::new(cfg.clone()).unwrap();
    let mut rx = first_run.subscribe(&n).await.unwrap();
    for d in &all[..5] {
        router.publish(&n, d.clone()).await.unwrap();
    }
    assert_eq!(recv_n(&mut rx, 5).await, all[..5]);
    assert_eq!(first_run.stats(&n).await.unwrap().handed_over, 5);
    drop(rx);
    first_run.close().await; // the node process stops: commits and leaves its group

    for d in &all[5..] {
        router.publish(&n, d.clone()).await.unwrap();
    }
    let second_run = KafkaBus::new(cfg).unwrap();
    let mut rx = second_run.subscribe(&n).await.unwrap();
    let mut want = all[5..].to_vec();
    want.push(marker(99));
    router.publish(&n, marker(99)).await.unwrap();
    assert_eq!(recv_n(&mut rx, want.len()).await, want, "no replay of 0..5, nothing of 5..10 lost");
    drop(rx);
    second_run.close().await;
    clean_up(&router, &[&n]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_pauses_consuming_and_loses_nothing() {
    let broker = Broker::get();
    let bus = KafkaBus::new(KafkaConfig { subscriber_queue: 4, ..config(&broker) }).unwrap();
    let n = node("slow");
    let mut rx = bus.subscribe(&n).await.unwrap();
    let sent = numbered(60);
    for d in &sent {
        bus.publish(&n, d.clone()).await.unwrap();
    }
    // Nobody reads: the subscriber fills the channel, then pauses instead of taking more.
    let stats = wait_for_stats(&bus, &n, |s| s.paused).await;
    assert_eq!(stats.handed_over, 4, "nothing is taken from Kafka beyond the channel: {stats:?}");
    assert_eq!(rx.len(), 4);

    assert_eq!(recv_n(&mut rx, sent.len()).await, sent, "pause and resume lose and repeat nothing");
    bus.publish(&n, marker(-1)).await.unwrap();
    assert_eq!(recv_n(&mut rx, 1).await, [marker(-1)]);
    let stats = wait_for_stats(&bus, &n, |s| s.handed_over == 61).await;
    assert!(stats.pauses >= 1 && stats.skipped == 0, "{stats:?}");
    drop(rx);
    clean_up(&bus, &[&n]).await;
}

/// `KafkaLog` tests: the helper the router will use for its inbound topic.
async fn next(consumer: &mut LogConsumer) -> LogRecord {
    timeout(DEADLINE, consumer.next()).await.expect("a record within the deadline").expect("consumer error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_keeps_per_key_order_across_partitions() {
    let broker = Broker::get();
    let log = KafkaLog::new(config(&broker)).unwrap();
    let (topic, group) = (log.config().topic("inbound"), log.config().topic("router"));
    log.ensure_topic(&topic, 3).await.unwrap();
    let keys = ["d:1:2", "d:3:4", "g:7", "g:8", "d:5:9"];
    let mut partition_of = std::collections::HashMap::new();
    for seq in 0..20 {
        for key in keys {
            let sent = log.send(&topic, key.as_bytes(), format!("{key}#{seq}").as_bytes()).await.unwrap();
            assert_eq!(*partition_of.entry(key).or_insert(sent.partition), sent.partition, "one key, one partition");
        }
    }
    let partitions: std::collections::HashSet<_> = partition_of.values().collect();
    assert!(partitions.len() > 1, "the topic was created with 3 partitions: {partition_of:?}");
    let mut consumer = log.consumer(&[&topic], &group, 8).unwrap();
    let mut seen = std::collections::HashMap::<Bytes, Vec<String>>::new();
    for _ in 0..keys.len() * 20 {
        let record = next(&mut consumer).await;
        seen.entry(record.key.clone()).or_default().push(String::from_utf8(record.payload.to_vec()).unwrap());
        record.ack();
    }
    for key in keys {
        let want: Vec<String> = (0..20).map(|seq| format!("{key}#{seq}")).collect();
        assert_eq!(seen[key.as_bytes()], want, "records of {key} in send order");
    }
    consumer.close().await;
    log.delete_topics(&[&topic]).await.unwrap();
    log.delete_group(&group).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_commits_only_up_to_the_oldest_unacknowledged_record() {
    let broker = Broker::get();
    let log = KafkaLog::new(config(&broker)).unwrap();
    let (topic, group) = (log.config().topic("inbound"), log.config().topic("router"));
    log.ensure_topic(&topic, 1).await.unwrap();
    for i in 0..6 {
        log.send(&topic, b"k", &[i]).await.unwrap();
    }
    let offset_of = |r: &LogRecord| r.payload[0];

    let mut consumer = log.consumer(&[&topic], &group, 3).unwrap();
    next(&mut consumer).await.ack(); // 0
    let (r1, r2, r3) = (next(&mut consumer).await, next(&mut consumer).await, next(&mut consumer).await);
    assert_eq!((offset_of(&r1), offset_of(&r2), offset_of(&r3)), (1, 2, 3));
    assert_eq!(consumer.in_flight(), 3);
    // The in-flight bound holds: no fourth record while three are out. (The one bounded wait
    // for something that must not happen.)
    assert!(timeout(Duration::from_millis(300), consumer.next()).await.is_err(), "max_in_flight exceeded");
    r3.ack();
    r2.ack();
    drop(r1); // processing of 1 failed: it must be read again
    assert_eq!(consumer.in_flight(), 0);
    consumer.close().await;

    let mut consumer = log.consumer(&[&topic], &group, 3).unwrap();
    let again = next(&mut consumer).await;
    assert_eq!(offset_of(&again), 1, "resumes at the oldest unacknowledged record, not before or after");
    again.ack();
    for want in 2..6 {
        let r = next(&mut consumer).await;
        assert_eq!(offset_of(&r), want);
        r.ack();
    }
    consumer.commit().await.unwrap();
    consumer.close().await;

    log.send(&topic, b"k", &[6]).await.unwrap();
    let mut consumer = log.consumer(&[&topic], &group, 3).unwrap();
    assert_eq!(offset_of(&next(&mut consumer).await), 6, "everything acknowledged was committed");
    consumer.close().await;
    log.delete_topics(&[&topic]).await.unwrap();
    log.delete_group(&group).await.unwrap();
}
