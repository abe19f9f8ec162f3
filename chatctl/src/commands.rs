//! Each command: ask the admin API, print the result as text or one JSON document.

use crate::cli::{
    Cli, ClusterVerb, Command, ConfigVerb, Confirm, ConnVerb, GroupVerb, MsgVerb, NodeVerb, Output, Shell, TopicVerb,
    UserVerb,
};
use crate::client::Api;
use crate::exit::{Exit, Failure};
use crate::table::Table;
use reqwest::Method;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// Runs the parsed command.
///
/// # Errors
/// The command's [`Failure`], whose exit code `main` returns.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    let out = g.output;
    let api = || Api::new(&g.endpoint, g.token.clone(), g.timeout);
    match cli.command {
        Command::Cluster { verb: ClusterVerb::Status } => cluster_status(&api()?, out).await,
        Command::Node { verb } => node(&api()?, out, verb).await,
        Command::Conn { verb } => conn(&api()?, out, verb).await,
        Command::User { verb } => user(&api()?, out, verb).await,
        Command::Group { verb: GroupVerb::Show { id } } => group_show(&api()?, out, id).await,
        Command::Msg { verb: MsgVerb::Send { from, to, group, text } } => msg_send(&api()?, out, from, to, group, text).await,
        Command::Msg { verb: MsgVerb::Tail { user, group, types, bodies, count, duration } } => {
            let opts = crate::tail::Opts { user, group, types, bodies, count, duration };
            crate::tail::run(&api()?, out, opts).await
        }
        Command::Topic { verb: TopicVerb::Lag } => topic_lag(&api()?, out).await,
        Command::Config { verb } => config(out, verb),
        Command::Version => version(&api()?, out).await,
        Command::Completions { shell } => {
            completions(shell);
            Ok(())
        }
    }
}

/// Prints `json` (JSON mode) or what `text` renders.
fn emit(out: Output, json: &Value, text: impl FnOnce() -> String) {
    match out {
        Output::Json => write_stdout(&format!("{}\n", serde_json::to_string_pretty(json).expect("a Value serializes"))),
        Output::Text => write_stdout(&text()),
    }
}

/// Writes to stdout; a closed pipe (`chatctl ... | head`) is not an error.
fn write_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("chatctl: cannot write to stdout: {e}");
        }
    }
}

/// Destructive verbs need `--yes` (or `--dry-run`).
fn confirmed(c: &Confirm, what: &str) -> Result<(), Failure> {
    if c.yes || c.dry_run {
        Ok(())
    } else {
        Err(Failure::usage(format!("refusing to {what} without --yes (use --dry-run to preview)")))
    }
}

/// A path segment with everything but unreserved characters and `@+` percent-encoded.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' | b'+' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Time formatting (no date library): UTC ISO 8601 and short ages.
// ---------------------------------------------------------------------------------------------

/// `2025-01-02T03:04:05Z` for Unix ms.
fn iso(ms: i64) -> String {
    switchboard_core::time::iso_utc(ms.div_euclid(1000))
}

/// `3d4h`, `2h05m`, `4m10s`, `12s`.
fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn ago(ms: &Value) -> String {
    match ms.as_i64() {
        Some(ms) => {
            let now = switchboard_core::time::now_ms();
            format!("{} ({} ago)", iso(ms), age(((now - ms).max(0) / 1000) as u64))
        }
        None => "-".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// cluster, node
// ---------------------------------------------------------------------------------------------

fn nodes_table(nodes: &[Value]) -> String {
    let mut t = Table::new(&["NODE", "STATE", "ADDRESS", "VERSION", "UPTIME", "CONNS", "IN/S", "OUT/S", "HEARTBEAT"]);
    for n in nodes {
        let heartbeat = n["lastHeartbeat"].as_i64().map_or("-".into(), |ms| {
            format!("{} ago", age(((switchboard_core::time::now_ms() - ms).max(0) / 1000) as u64))
        });
        t.row(vec![
            s(&n["nodeId"]),
            s(&n["state"]),
            s(&n["address"]),
            s(&n["version"]),
            n["uptimeSecs"].as_u64().map_or("-".into(), age),
            s(&n["connections"]),
            s(&n["msgsInPerSec"]),
            s(&n["msgsOutPerSec"]),
            heartbeat,
        ]);
    }
    t.render()
}

fn lag_table(groups: &[Value]) -> String {
    let mut t = Table::new(&["GROUP", "TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"]);
    for g in groups {
        for p in g["partitions"].as_array().into_iter().flatten() {
            t.row(vec![s(&g["group"]), s(&g["topic"]), s(&p["partition"]), s(&p["committed"]), s(&p["high"]), s(&p["lag"])]);
        }
    }
    t.render()
}

async fn cluster_status(api: &Api, out: Output) -> Result<(), Failure> {
    let doc = api.get("/cluster").await?;
    emit(out, &doc, || {
        let mut text = format!("mode: {}\n\n", s(&doc["mode"]));
        text.push_str(&nodes_table(doc["nodes"].as_array().map_or(&[], Vec::as_slice)));
        let mut t = Table::new(&["SERVICE", "OK", "DETAIL"]);
        for sv in doc["services"].as_array().into_iter().flatten() {
            t.row(vec![s(&sv["name"]), if sv["ok"] == true { "yes".into() } else { "NO".into() }, s(&sv["detail"])]);
        }
        text.push('\n');
        text.push_str(&t.render());
        let lag = doc["lag"].as_array().cloned().unwrap_or_default();
        if !lag.is_empty() {
            text.push('\n');
            text.push_str(&lag_table(&lag));
        } else if doc["mode"] == "cluster" {
            text.push_str("\nconsumer lag: unavailable (Kafka did not answer)\n");
        }
        text
    });
    Ok(())
}

/// Node `id` as the cluster lists it.
async fn find_node(api: &Api, id: &str) -> Result<Value, Failure> {
    let doc = api.get("/nodes").await?;
    doc["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["nodeId"] == id)
        .cloned()
        .ok_or_else(|| Failure::new(Exit::NotFound, "not_found", format!("node {id:?} not found")))
}

async fn node(api: &Api, out: Output, verb: NodeVerb) -> Result<(), Failure> {
    match verb {
        NodeVerb::List => {
            let doc = api.get("/nodes").await?;
            let nodes = doc["nodes"].as_array().cloned().unwrap_or_default();
            emit(out, &doc, || nodes_table(&nodes));
            Ok(())
        }
        NodeVerb::Drain { id, rate, retry_min, retry_max, wait, confirm } => {
            if retry_min > retry_max {
                return Err(Failure::usage("--retry-min must not exceed --retry-max"));
            }
            confirmed(&confirm, &format!("drain node {id}"))?;
            if confirm.dry_run {
                let n = find_node(api, &id).await?;
                let conns = n["connections"].as_u64().unwrap_or(0);
                let eta = conns.div_ceil(u64::from(rate));
                let plan = json!({"dryRun": true, "nodeId": id, "state": n["state"], "connections": conns, "rate": rate,
                    "retryMinSecs": retry_min, "retryMaxSecs": retry_max, "etaSecs": eta});
                emit(out, &plan, || {
                    format!(
                        "would drain node {id}: refuse new connections, then close {conns} connection(s)\n\
                         with 1012 at {rate}/s (about {eta}s), retry hints {retry_min}-{retry_max}s\n"
                    )
                });
                return Ok(());
            }
            let body = json!({"rate": rate, "retryMinSecs": retry_min, "retryMaxSecs": retry_max});
            let mut view = api.post(&format!("/nodes/{}/drain", seg(&id)), body).await?;
            if wait {
                view = wait_drained(api, &id, &view, rate).await?;
            }
            emit(out, &view, || {
                let d = &view["drain"];
                format!(
                    "node {} is draining: {} of {} connection(s) closed, {} open, {}/s\n",
                    s(&view["nodeId"]),
                    s(&d["closed"]),
                    s(&d["connectionsAtStart"]),
                    s(&d["remaining"]),
                    rate
                )
            });
            Ok(())
        }
        NodeVerb::Undrain { id } => {
            let view = api.call(Method::POST, &format!("/nodes/{}/undrain", seg(&id)), None).await?;
            emit(out, &view, || format!("node {} is {}\n", s(&view["nodeId"]), s(&view["state"])));
            Ok(())
        }
    }
}

/// Polls the node until its drain has no connection left; progress on stderr.
async fn wait_drained(api: &Api, id: &str, first: &Value, rate: u32) -> Result<Value, Failure> {
    let at_start = first["drain"]["connectionsAtStart"].as_u64().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(at_start.div_ceil(u64::from(rate)) * 2 + 60);
    loop {
        let v = find_node(api, id).await?;
        let left = v["drain"]["remaining"].as_u64().unwrap_or(0);
        eprintln!("chatctl: {}: closed {} of {at_start}, {left} open", s(&v["nodeId"]), s(&v["drain"]["closed"]));
        if left == 0 || v["state"] != "draining" {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::new(Exit::Unavailable, "timeout", format!("drain still has {left} connection(s) open")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// conn
// ---------------------------------------------------------------------------------------------

fn conns_table(conns: &[Value]) -> String {
    let mut t = Table::new(&["CONN", "NODE", "USER", "DEVICE", "IDLE", "QUEUED"]);
    for c in conns {
        t.row(vec![
            s(&c["connId"]),
            s(&c["nodeId"]),
            s(&c["userId"]),
            s(&c["deviceId"]),
            c["idleSecs"].as_u64().map_or("-".into(), age),
            s(&c["queuedBytes"]),
        ]);
    }
    t.render()
}

async fn conn(api: &Api, out: Output, verb: ConnVerb) -> Result<(), Failure> {
    match verb {
        ConnVerb::List { node, user, limit } => {
            let mut q = format!("/conns?limit={limit}");
            if let Some(u) = user {
                let _ = write!(q, "&user={u}");
            }
            if let Some(n) = &node {
                let _ = write!(q, "&node={}", seg(n));
            }
            let doc = api.get(&q).await?;
            let conns = doc["conns"].as_array().cloned().unwrap_or_default();
            emit(out, &doc, || {
                let mut text = conns_table(&conns);
                if doc["truncated"] == true {
                    let _ = writeln!(text, "({} of {} shown; raise --limit)", conns.len(), s(&doc["total"]));
                }
                unreachable_note(&mut text, &doc);
                text
            });
            Ok(())
        }
        ConnVerb::Kick { conn, node, user, confirm } => {
            let what = match (&conn, &user) {
                (Some(c), _) => format!("kick connection {c}"),
                (None, Some(u)) => format!("kick every connection of user {u}"),
                (None, None) => return Err(Failure::usage("give a connection id or --user")),
            };
            confirmed(&confirm, &what)?;
            let on_node = node.as_ref().map(|n| format!("node={}", seg(n)));
            if confirm.dry_run {
                let mut q = String::from("/conns?limit=100000");
                match (&conn, &user) {
                    (Some(c), _) => {
                        let _ = write!(q, "&conn={c}");
                    }
                    (None, Some(u)) => {
                        let _ = write!(q, "&user={}", api.get(&format!("/users/{}", seg(u))).await?["userId"]);
                    }
                    (None, None) => {}
                }
                if let Some(n) = &on_node {
                    let _ = write!(q, "&{n}");
                }
                let targets = api.get(&q).await?["conns"].as_array().cloned().unwrap_or_default();
                if conn.is_some() && targets.is_empty() {
                    return Err(Failure::new(Exit::NotFound, "not_found", "connection not found"));
                }
                if conn.is_some() && targets.len() > 1 {
                    return Err(Failure::new(Exit::Failed, "ambiguous", "that connection id is open on several nodes: give --node"));
                }
                let doc = json!({"dryRun": true, "code": 4000, "wouldKick": targets});
                emit(out, &doc, || format!("would close {} connection(s) with 4000:\n{}", targets.len(), conns_table(&targets)));
                return Ok(());
            }
            let path = match (&conn, &user) {
                (Some(c), _) => format!("/conns/{c}/kick{}", on_node.map(|n| format!("?{n}")).unwrap_or_default()),
                (_, Some(u)) => format!("/users/{}/kick", seg(u)),
                _ => unreachable!("checked above"),
            };
            let doc = api.call(Method::POST, &path, None).await?;
            let kicked = doc["kicked"].as_array().cloned().unwrap_or_default();
            emit(out, &doc, || {
                let mut text = format!("closed {} connection(s) with 4000\n{}", kicked.len(), conns_table(&kicked));
                unreachable_note(&mut text, &doc);
                text
            });
            Ok(())
        }
    }
}

/// Names the nodes a cluster-wide answer is missing (their part is not in it).
fn unreachable_note(text: &mut String, doc: &Value) {
    for m in doc["unreachable"].as_array().into_iter().flatten() {
        let _ = writeln!(text, "warning: node {} did not answer: {}", s(&m["nodeId"]), s(&m["error"]));
    }
}

// ---------------------------------------------------------------------------------------------
// user, group, msg
// ---------------------------------------------------------------------------------------------

fn user_text(u: &Value) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "user {}: {}", s(&u["userId"]), s(&u["userName"]));
    let _ = writeln!(t, "  email        {}", s(&u["email"]));
    let _ = writeln!(t, "  phone        {}", s(&u["phoneNumber"]));
    let _ = writeln!(t, "  state        {}", if u["disabled"] == true { "DISABLED" } else { "enabled" });
    let _ = writeln!(t, "  created      {}", ago(&u["createdAt"]));
    let _ = writeln!(t, "  last seen    {}", ago(&u["lastSeen"]));
    let p = &u["presence"];
    let nodes: Vec<String> = p["nodes"].as_array().into_iter().flatten().map(s).collect();
    let n_conns = p["connections"].as_array().map_or(0, Vec::len);
    if p["online"] == true {
        let _ = writeln!(t, "  online       yes: {} connection(s) on {}", n_conns, nodes.join(", "));
    } else {
        let _ = writeln!(t, "  online       no");
    }
    let capped = if u["undeliveredCapped"] == true { "+" } else { "" };
    let _ = writeln!(t, "  undelivered  {}{capped}", s(&u["undelivered"]));
    let devices = u["devices"].as_array().cloned().unwrap_or_default();
    if !devices.is_empty() {
        let mut d = Table::new(&["DEVICE", "CURSOR"]);
        for x in &devices {
            d.row(vec![s(&x["deviceId"]), s(&x["cursor"])]);
        }
        t.push('\n');
        t.push_str(&d.render());
    }
    let conns = p["connections"].as_array().cloned().unwrap_or_default();
    if !conns.is_empty() {
        let mut c = Table::new(&["NODE", "CONN", "DEVICE"]);
        for x in &conns {
            c.row(vec![s(&x["nodeId"]), s(&x["connId"]), s(&x["deviceId"])]);
        }
        t.push('\n');
        t.push_str(&c.render());
    }
    t
}

async fn user(api: &Api, out: Output, verb: UserVerb) -> Result<(), Failure> {
    match verb {
        UserVerb::Show { user } => {
            let u = api.get(&format!("/users/{}", seg(&user))).await?;
            emit(out, &u, || user_text(&u));
        }
        UserVerb::Create { name, email, phone, password, password_stdin } => {
            let password = match (password, password_stdin) {
                (_, true) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
                (Some(p), false) => p,
                (None, false) => return Err(Failure::usage("give --password or --password-stdin")),
            };
            let body = json!({"userName": name, "email": email, "phoneNumber": phone, "password": password});
            let u = api.post("/users", body).await?;
            emit(out, &u, || format!("created user {} ({})\n", s(&u["userId"]), s(&u["email"])));
        }
        UserVerb::Disable { user, confirm } if confirm.dry_run => user_dry_run(api, out, &user, "disable").await?,
        UserVerb::Delete { user, confirm } if confirm.dry_run => user_dry_run(api, out, &user, "delete").await?,
        UserVerb::Disable { user, confirm } => {
            confirmed(&confirm, &format!("disable user {user}"))?;
            let r = api.post(&format!("/users/{}/disable", seg(&user)), Value::Null).await?;
            emit(out, &r, || format!("disabled user {}; closed {} connection(s)\n", s(&r["userId"]), s(&r["closedConnections"])));
        }
        UserVerb::Enable { user } => {
            let r = api.post(&format!("/users/{}/enable", seg(&user)), Value::Null).await?;
            emit(out, &r, || format!("enabled user {}\n", s(&r["userId"])));
        }
        UserVerb::Delete { user, confirm } => {
            confirmed(&confirm, &format!("delete user {user}"))?;
            let r = api.call(Method::DELETE, &format!("/users/{}", seg(&user)), None).await?;
            emit(out, &r, || format!("deleted user {}; closed {} connection(s)\n", s(&r["userId"]), s(&r["closedConnections"])));
        }
    }
    Ok(())
}

/// `user disable|delete --dry-run`: who, and how many sockets would close.
async fn user_dry_run(api: &Api, out: Output, user: &str, verb: &str) -> Result<(), Failure> {
    let u = api.get(&format!("/users/{}", seg(user))).await?;
    let n = u["presence"]["connections"].as_array().map_or(0, Vec::len);
    let doc = json!({"dryRun": true, "action": verb, "userId": u["userId"], "email": u["email"], "disabled": u["disabled"], "connections": n});
    emit(out, &doc, || {
        format!("would {verb} user {} ({}): tokens refused, {n} connection(s) closed with 1008\n", s(&u["userId"]), s(&u["email"]))
    });
    Ok(())
}

async fn group_show(api: &Api, out: Output, id: i64) -> Result<(), Failure> {
    let g = api.get(&format!("/groups/{id}")).await?;
    emit(out, &g, || {
        let members: Vec<String> = g["members"].as_array().into_iter().flatten().map(s).collect();
        let mut t = String::new();
        let _ = writeln!(t, "group {}: {}", s(&g["groupId"]), s(&g["groupName"]));
        let _ = writeln!(t, "  created by    {}", s(&g["createdBy"]));
        let _ = writeln!(t, "  messages      {}", s(&g["messageCount"]));
        let _ = writeln!(t, "  last message  {}", ago(&g["lastMessageAt"]));
        let _ = writeln!(t, "  members ({})  {}", members.len(), crate::table::fit(&members.join(", "), 80));
        t
    });
    Ok(())
}

async fn msg_send(api: &Api, out: Output, from: i64, to: Option<i64>, group: Option<i64>, text: String) -> Result<(), Failure> {
    let mut body = json!({"from": from, "text": text});
    match (to, group) {
        (Some(u), None) => body["to"] = json!(u),
        (None, Some(g)) => body["group"] = json!(g),
        _ => return Err(Failure::usage("give exactly one of --to and --group")),
    }
    let r = api.post("/messages", body).await?;
    emit(out, &r, || {
        format!("sent message {} (conversation seq {}) in {} ms\n", s(&r["messageId"]), s(&r["conversationSeq"]), s(&r["latencyMs"]))
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// topic, config, version, completions
// ---------------------------------------------------------------------------------------------

async fn topic_lag(api: &Api, out: Output) -> Result<(), Failure> {
    let doc = api.get("/lag").await?;
    emit(out, &doc, || {
        let groups = doc["groups"].as_array().cloned().unwrap_or_default();
        if groups.is_empty() && doc["mode"] == "standalone" {
            "standalone mode: no Kafka, no consumer lag\n".into()
        } else {
            lag_table(&groups)
        }
    });
    Ok(())
}

fn config(out: Output, verb: ConfigVerb) -> Result<(), Failure> {
    use switchboard_core::config::{Config, Mode, OsEnv};
    match verb {
        ConfigVerb::Check { file, ignore_env } => {
            let empty = std::collections::HashMap::<String, String>::new();
            let env: &dyn switchboard_core::config::Env = if ignore_env { &empty } else { &OsEnv };
            let cfg = Config::load(Some(&file), env, &[]).map_err(|e| Failure::new(Exit::Config, "bad_config", e.to_string()))?;
            let mode = match cfg.mode {
                Mode::Standalone => "standalone",
                Mode::Cluster => "cluster",
            };
            let admin = cfg.server.admin_token.is_some();
            let doc = json!({"ok": true, "file": file.display().to_string(), "mode": mode, "nodeId": cfg.node_id,
                "listen": cfg.server.listen.to_string(), "adminListen": cfg.server.admin_listen.to_string(), "adminApi": admin});
            emit(out, &doc, || {
                format!(
                    "ok: {} (mode {mode}, node {}, admin API {})\n",
                    file.display(),
                    cfg.node_id,
                    if admin { "enabled" } else { "disabled: no server.admin_token" }
                )
            });
        }
        ConfigVerb::Defaults => {
            let mut keys = Config::keys();
            keys.sort_by(|a, b| a.key.cmp(&b.key));
            let doc = json!({ "keys": keys });
            emit(out, &doc, || {
                let mut t = Table::new(&["KEY", "ENV", "DEFAULT"]);
                for k in &keys {
                    t.row(vec![k.key.clone(), k.env.clone(), k.default.clone()]);
                }
                t.render()
            });
        }
    }
    Ok(())
}

async fn version(api: &Api, out: Output) -> Result<(), Failure> {
    let server = match api.get("/node").await {
        Ok(n) => json!({"nodeId": n["nodeId"], "version": n["version"], "mode": n["mode"]}),
        Err(f) => {
            eprintln!("chatctl: server version unknown: {}", f.message);
            Value::Null
        }
    };
    let doc = json!({"chatctl": env!("CARGO_PKG_VERSION"), "server": server});
    emit(out, &doc, || {
        let mut t = format!("chatctl {}\n", env!("CARGO_PKG_VERSION"));
        if !server.is_null() {
            let _ = writeln!(t, "gatewayd {} (node {}, {})", s(&server["version"]), s(&server["nodeId"]), s(&server["mode"]));
        }
        t
    });
    Ok(())
}

fn completions(shell: Shell) {
    use clap::CommandFactory;
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "chatctl", &mut buf);
    write_stdout(&String::from_utf8_lossy(&buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ages() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(65), "1m05s");
        assert_eq!(age(3700), "1h01m");
        assert_eq!(age(90_000), "1d1h");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("ann+x@example.com"), "ann+x@example.com");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
