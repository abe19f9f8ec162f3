//! A Kafka-protocol broker for tests: the one named by `KAFKA_BROKERS`, or a tansu started
//! through `scripts/kafka.sh` on a free port and stopped on drop (an interrupted run's broker
//! is stopped by the script too: it is told the owning PID).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// A broker for one test: shared (from `KAFKA_BROKERS`) or started here and stopped on drop.
pub struct Broker {
    /// Bootstrap address.
    pub brokers: String,
    /// Set when this test started the broker.
    port: Option<u16>,
}

impl Broker {
    /// The shared broker from `KAFKA_BROKERS`, or a new one.
    ///
    /// # Panics
    /// When no broker can be started.
    pub fn get() -> Self {
        match std::env::var("KAFKA_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => Self { brokers, port: None },
            _ => Self::start(),
        }
    }

    fn start() -> Self {
        let mut last_error = String::new();
        // A free port can be taken between the probe and the start: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("probe a free port").port();
            let out = kafka_sh(&["start", &port.to_string()]);
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let brokers = stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("KAFKA_BROKERS="))
                    .expect("kafka.sh prints KAFKA_BROKERS");
                return Self { brokers: brokers.to_owned(), port: Some(port) };
            }
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("scripts/kafka.sh start failed: {last_error}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(port) = self.port {
            let out = kafka_sh(&["stop", &port.to_string()]);
            if !out.status.success() {
                eprintln!("kafka.sh stop {port}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn kafka_sh(args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
    Command::new("bash")
        .arg(script)
        .args(args)
        // An interrupted test run must not leave its brokers behind.
        .env("KAFKA_OWNER_PID", std::process::id().to_string())
        .output()
        .expect("run scripts/kafka.sh")
}

