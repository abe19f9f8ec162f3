//! The real `gatewayd` binary: flags, config checking, and SIGTERM handling.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

fn gatewayd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatewayd"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn help_lists_the_flags() {
    let out = gatewayd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--check-config", "--listen", "--data-dir", "--set"] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn check_config_exits_78_on_bad_config_and_0_on_good() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[ws]\nping_interval = \"10s\"\nidle_timeout = \"5s\"\n[server]\nlisten = \"nope\"\n").unwrap();
    let out = gatewayd().args(["--check-config", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap();
    let out = gatewayd().args(["--check-config", "--config"]).arg(&unknown).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));

    let out = gatewayd().args(["--check-config", "--set", "ws.ping_interval=\"0s\""]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "node_id = \"gw-7\"\n[ws]\nping_interval = \"10s\"\n").unwrap();
    let out = gatewayd()
        .args(["--check-config", "--config"])
        .arg(&good)
        .env("SWITCHBOARD_SERVER_LISTEN", "127.0.0.1:18181")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(effective.contains("gw-7") && effective.contains("127.0.0.1:18181") && effective.contains("10s"), "{effective}");
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_cleanly() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut child = gatewayd()
        .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SWITCHBOARD_AUTH_ARGON2_MEMORY_KIB", "1024")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + testkit::DEADLINE;
    while http.get(format!("http://127.0.0.1:{admin}/readyz")).send().await.ok().map(|r| r.status().as_u16()) != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "gatewayd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With no secret configured it created a development key, private to its owner.
    let key_path = dir.path().join("jwt.key");
    let key = std::fs::read_to_string(&key_path).expect("development key created");
    assert_eq!(key.trim().len(), 64);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let token = testkit::sign_claims_with(key.trim().as_bytes(), &serde_json::json!({
        "sub": 1, "dev": "d", "typ": "access", "jti": "j", "iat": 0, "exp": switchboard_core::time::now_secs() + 600
    }));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://127.0.0.1:{port}/ws")).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let synced = ws.next().await.unwrap().unwrap();
    assert!(synced.to_text().unwrap().contains("synced"));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let code = loop {
        match tokio::time::timeout(testkit::DEADLINE, ws.next()).await.expect("close before the deadline") {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(1001));
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}
