//! `chatbench run` end to end against a real gatewayd it starts itself (`--spawn`, the debug
//! build beside this test), on a short direct scenario: the harness must still speak the
//! gateway's protocol, count every message, and write its JSON, Markdown and plots. Speed is
//! not judged here (benches/RESULTS.md is where figures live); only that the run works and its
//! accounting holds.

use serde_json::Value;
use std::process::Command;

fn figure(result: &Value, name: &str) -> f64 {
    result["figures"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["name"] == name))
        .and_then(|x| x["value"].as_f64())
        .unwrap_or_else(|| panic!("figure {name} missing"))
}

#[test]
fn a_short_direct_run_delivers_every_message_and_writes_its_results() {
    let out = tempfile::tempdir().expect("temp dir");
    let gatewayd = testkit::cluster::bin("gatewayd");
    let run = Command::new(env!("CARGO_BIN_EXE_chatbench"))
        .args(["run", "scenarios/direct.toml"])
        .args(["--set", "pairs=4", "--set", "rate=200", "--set", "duration_secs=2", "--set", "grace_secs=1"])
        .args(["--set", "workers=1", "--set", "sources=2"])
        .arg("--spawn")
        .arg(&gatewayd)
        .arg("--out")
        .arg(out.path())
        .env_remove("SWITCHBOARD_AUTH_JWT_SECRET")
        .output()
        .expect("chatbench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "chatbench failed: {}\n{stdout}", String::from_utf8_lossy(&run.stderr));

    let files: Vec<_> = std::fs::read_dir(out.path()).expect("results dir").flatten().map(|e| e.path()).collect();
    let json = files.iter().find(|p| p.extension().is_some_and(|e| e == "json")).expect("a JSON result");
    assert!(files.iter().any(|p| p.to_string_lossy().ends_with("-latency.svg")), "latency plot in {files:?}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(json).expect("read result")).expect("JSON");

    assert_eq!(figure(&r, "sessions"), 8.0, "4 pairs = 8 sessions");
    let acked = figure(&r, "acked");
    assert!(acked > 0.0, "no send was acked");
    assert_eq!(figure(&r, "delivered"), acked, "every acked message delivered once");
    for bad in ["lost", "duplicates", "out_of_order"] {
        assert_eq!(figure(&r, bad), 0.0, "{bad}");
    }
    assert!(figure(&r, "server_cpu_us_per_delivery") > 0.0, "the spawned gateway's CPU was read");
    assert!(r["machine"].as_str().is_some_and(|m| !m.is_empty()), "machine recorded");
    let threads = r["server_threads"].as_array().expect("server_threads");
    assert!(!threads.is_empty(), "server CPU by thread");
    assert!(stdout.contains("| delivery |"), "Markdown latency table on stdout:\n{stdout}");
}
