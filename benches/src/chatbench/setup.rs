//! Before the load: the users, groups and tokens a scenario needs, and which worker, gateway
//! and source address each session uses.
//!
//! Messaging scenarios register their users over REST (bounded concurrency) because the server
//! refuses sends to unknown receivers; idle scenarios mint tokens for user ids that need not exist.
//! With several gateways, every pair, group and mixed-scenario cohort stays on one gateway, so
//! independent standalone gateways (each with its own store) work too.

use crate::http::Http;
use crate::proto::{SendSpec, SessionSpec, StreamKey};
use crate::scenario::{Kind, Rate, Scenario};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_core::auth::JwtKeys;
use switchboard_core::ids::{DeviceId, UserId};

/// Password of every benchmark user.
const PASSWORD: &str = "benchpass1";

/// The sessions of a run and what setting them up took.
pub struct Plan {
    /// Every session, in global order.
    pub sessions: Vec<SessionSpec>,
    /// Users registered over REST.
    pub registered: usize,
    /// Groups created.
    pub groups: usize,
    /// Group memberships added.
    pub members_added: usize,
}

/// A REST setup call.
#[derive(Clone)]
enum Job {
    Register { gw: usize, i: usize },
    Login { gw: usize, i: usize },
    CreateGroup { gw: usize, creator: i64, token: String, name: String },
    Add { gw: usize, group: i64, user: i64, token: String },
}

/// Ids and names of the run's users (unique per run, so runs against a long-lived gateway work).
struct Names {
    tag: u32,
}

impl Names {
    fn email(&self, i: usize) -> String {
        format!("cb{}.{i}@bench.example.com", self.tag)
    }
}

async fn do_job(job: &Job, names: &Names, https: &mut [Http]) -> Result<serde_json::Value> {
    let (gw, method, path, token, body, want) = match job {
        Job::Register { gw, i } => (
            *gw,
            "POST",
            "/user/register".to_owned(),
            None,
            json!({"userName": format!("cb{}u{i}", names.tag), "email": names.email(*i),
                   "phoneNumber": format!("+{}{i:08}", names.tag), "password": PASSWORD}),
            201,
        ),
        Job::Login { gw, i } => {
            (*gw, "POST", "/user/login".to_owned(), None, json!({"email": names.email(*i), "password": PASSWORD}), 200)
        }
        Job::CreateGroup { gw, creator, token, name } => {
            (*gw, "POST", "/groups/create".to_owned(), Some(token.as_str()), json!({"groupName": name, "createdBy": creator}), 201)
        }
        Job::Add { gw, group, user, token } => {
            (*gw, "POST", format!("/groups/{group}/add"), Some(token.as_str()), json!({"userId": user}), 200)
        }
    };
    let (status, resp) = https[gw].call(method, &path, token, &body).await?;
    if status != want {
        bail!("{method} {path}: HTTP {status} {resp}");
    }
    Ok(resp)
}

/// Runs `jobs` with `concurrency` tasks (one keep-alive connection per gateway each).
async fn pool(jobs: Vec<Job>, concurrency: usize, gws: &[SocketAddr], names: Arc<Names>, what: &str) -> Result<Vec<serde_json::Value>> {
    let n = jobs.len();
    let jobs = Arc::new(jobs);
    let out = Arc::new(Mutex::new(vec![serde_json::Value::Null; n]));
    let next = Arc::new(AtomicUsize::new(0));
    let bar = crate::run::bar(n as u64, what);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(n.max(1)) {
        let (jobs, out, next, names, bar) = (jobs.clone(), out.clone(), next.clone(), names.clone(), bar.clone());
        let mut https: Vec<Http> = gws.iter().map(|a| Http::new(*a)).collect();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return Ok::<_, anyhow::Error>(()) };
                let r = do_job(job, &names, &mut https).await?;
                out.lock().expect("not poisoned")[i] = r;
                bar.inc(1);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    bar.finish_and_clear();
    let v = std::mem::take(&mut *out.lock().expect("not poisoned"));
    Ok(v)
}

/// A registered (or minted) user.
struct User {
    gw: usize,
    id: i64,
    token: String,
}

/// Registers `gw_of.len()` users (user i on gateway `gw_of[i]`) and gets their tokens.
async fn users(gw_of: &[usize], sc: &Scenario, gws: &[SocketAddr], keys: Option<&JwtKeys>, names: &Arc<Names>) -> Result<Vec<User>> {
    let jobs = gw_of.iter().enumerate().map(|(i, &gw)| Job::Register { gw, i }).collect();
    let reg = pool(jobs, sc.setup_concurrency, gws, names.clone(), "register").await?;
    let ids: Vec<i64> = reg
        .iter()
        .map(|v| v["userId"].as_i64().context("register: no userId"))
        .collect::<Result<_>>()?;
    let tokens: Vec<String> = match keys {
        Some(k) => ids.iter().enumerate().map(|(i, id)| mint(k, *id, i)).collect(),
        None => {
            let jobs = gw_of.iter().enumerate().map(|(i, &gw)| Job::Login { gw, i }).collect();
            pool(jobs, sc.setup_concurrency, gws, names.clone(), "login")
                .await?
                .iter()
                .map(|v| v["token"].as_str().map(str::to_owned).context("login: no token"))
                .collect::<Result<_>>()?
        }
    };
    Ok(gw_of.iter().zip(ids).zip(tokens).map(|((&gw, id), token)| User { gw, id, token }).collect())
}

fn mint(keys: &JwtKeys, user: i64, i: usize) -> String {
    keys.issue(UserId(user), &DeviceId(format!("cb{i}"))).access
}

/// Groups: (gateway, creator index, member indices) → group ids, members added.
async fn groups(specs: &[(usize, Vec<usize>)], users: &[User], sc: &Scenario, gws: &[SocketAddr], names: &Arc<Names>) -> Result<(Vec<i64>, usize)> {
    let jobs = specs
        .iter()
        .enumerate()
        .map(|(g, (gw, members))| {
            let c = &users[members[0]];
            Job::CreateGroup { gw: *gw, creator: c.id, token: c.token.clone(), name: format!("cb{}g{g}", names.tag) }
        })
        .collect();
    let created = pool(jobs, sc.setup_concurrency, gws, names.clone(), "groups").await?;
    let ids: Vec<i64> = created.iter().map(|v| v["groupId"].as_i64().context("no groupId")).collect::<Result<_>>()?;
    let mut adds = Vec::new();
    for ((gw, members), gid) in specs.iter().zip(&ids) {
        let token = users[members[0]].token.clone();
        for &m in &members[1..] {
            adds.push(Job::Add { gw: *gw, group: *gid, user: users[m].id, token: token.clone() });
        }
    }
    let added = adds.len();
    pool(adds, sc.setup_concurrency, gws, names.clone(), "members").await?;
    Ok((ids, added))
}

fn session(id: usize, u: &User, gws: &[SocketAddr], send: Option<SendSpec>, expect: Vec<StreamKey>) -> SessionSpec {
    SessionSpec { id: id as u32, user: u.id, token: u.token.clone(), target: gws[u.gw], gw: u.gw as u16, source: Ipv4Addr::LOCALHOST, send, expect }
}

/// Builds the sessions of `sc`, registering users and groups where needed.
pub async fn plan(sc: &Scenario, gws: &[SocketAddr], secret: Option<&str>) -> Result<Plan> {
    let keys = secret.map(|s| JwtKeys::new(s.as_bytes(), Duration::from_secs(6 * 3600), Duration::from_secs(7 * 3600)));
    let names = Arc::new(Names { tag: 1000 + rand::random::<u32>() % 9000 });
    let n = gws.len();
    let per_sender = |senders: usize| match sc.rate {
        Rate::Max => 0.0,
        Rate::PerSecond(r) => r / senders as f64,
    };
    match sc.kind {
        Kind::Idle | Kind::ConnectStorm | Kind::ReconnectStorm => {
            let keys = keys.context("idle and storm scenarios mint tokens: pass --secret (or --spawn)")?;
            let sessions = (0..sc.connections)
                .map(|i| {
                    let u = User { gw: i % n, id: sc.first_user + i as i64, token: mint(&keys, sc.first_user + i as i64, i) };
                    session(i, &u, gws, None, Vec::new())
                })
                .collect();
            Ok(Plan { sessions, registered: 0, groups: 0, members_added: 0 })
        }
        Kind::Direct => {
            let gw_of: Vec<usize> = (0..2 * sc.pairs).map(|i| (i / 2) % n).collect();
            let us = users(&gw_of, sc, gws, keys.as_ref(), &names).await?;
            let rate = per_sender(sc.pairs);
            let mut sessions = Vec::with_capacity(us.len());
            for p in 0..sc.pairs {
                let (s, r) = (&us[2 * p], &us[2 * p + 1]);
                sessions.push(session(2 * p, s, gws, Some(SendSpec::Steady { to: r.id, group: false, rate }), Vec::new()));
                sessions.push(session(2 * p + 1, r, gws, None, vec![StreamKey { gw: r.gw as u16, from: s.id, to: r.id, group: false }]));
            }
            Ok(Plan { sessions, registered: us.len(), groups: 0, members_added: 0 })
        }
        Kind::Group => {
            let (g, size, spg) = (sc.groups, sc.group_size, sc.senders_per_group);
            let gw_of: Vec<usize> = (0..g * size).map(|i| (i / size) % n).collect();
            let us = users(&gw_of, sc, gws, keys.as_ref(), &names).await?;
            let specs: Vec<(usize, Vec<usize>)> = (0..g).map(|k| (k % n, (k * size..(k + 1) * size).collect())).collect();
            let (gids, added) = groups(&specs, &us, sc, gws, &names).await?;
            let rate = per_sender(g * spg);
            let mut sessions = Vec::with_capacity(us.len());
            for (k, gid) in gids.iter().enumerate() {
                let senders: Vec<i64> = (0..spg).map(|j| us[k * size + j].id).collect();
                for j in 0..size {
                    let u = &us[k * size + j];
                    let send = (j < spg).then_some(SendSpec::Steady { to: *gid, group: true, rate });
                    let expect = senders.iter().filter(|s| **s != u.id).map(|s| StreamKey { gw: u.gw as u16, from: *s, to: *gid, group: true }).collect();
                    sessions.push(session(k * size + j, u, gws, send, expect));
                }
            }
            Ok(Plan { sessions, registered: us.len(), groups: gids.len(), members_added: added })
        }
        Kind::Mixed => mixed(sc, gws, keys.as_ref(), &names).await,
    }
}

/// Mixed: users split over the gateways; within a gateway's cohort a ring of contacts and
/// consecutive blocks as groups.
async fn mixed(sc: &Scenario, gws: &[SocketAddr], keys: Option<&JwtKeys>, names: &Arc<Names>) -> Result<Plan> {
    let n = gws.len();
    let gw_of: Vec<usize> = (0..sc.users).map(|i| i % n).collect();
    let us = users(&gw_of, sc, gws, keys, names).await?;
    let cohorts: Vec<Vec<usize>> = (0..n).map(|g| (0..sc.users).filter(|i| i % n == g).collect()).collect();
    // Groups: consecutive blocks of each cohort.
    let mut specs = Vec::new();
    let mut group_of = vec![None; sc.users];
    if sc.mixed_group_size >= 2 {
        for (g, cohort) in cohorts.iter().enumerate() {
            for block in cohort.chunks(sc.mixed_group_size).filter(|b| b.len() >= 2) {
                for &m in block {
                    group_of[m] = Some(specs.len());
                }
                specs.push((g, block.to_vec()));
            }
        }
    }
    let (gids, added) = groups(&specs, &us, sc, gws, names).await?;
    let mut sessions = Vec::with_capacity(us.len());
    let mut peers_of = vec![Vec::new(); sc.users];
    for cohort in &cohorts {
        let m = cohort.len();
        for (q, &u) in cohort.iter().enumerate() {
            let mut peers = Vec::new();
            for d in 1..=sc.contacts.div_ceil(2) {
                for p in [(q + d) % m, (q + m - d % m) % m] {
                    let id = us[cohort[p]].id;
                    if p != q && peers.len() < sc.contacts && !peers.contains(&id) {
                        peers.push(id);
                    }
                }
            }
            peers_of[u] = peers;
        }
    }
    for (i, u) in us.iter().enumerate() {
        let group = group_of[i].map(|g| gids[g]);
        let mut expect: Vec<StreamKey> = peers_of[i].iter().map(|p| StreamKey { gw: u.gw as u16, from: *p, to: u.id, group: false }).collect();
        if let Some(g) = group_of[i] {
            expect.extend(specs[g].1.iter().filter(|m| **m != i).map(|m| StreamKey { gw: u.gw as u16, from: us[*m].id, to: gids[g], group: true }));
        }
        sessions.push(session(i, u, gws, Some(SendSpec::Mixed { peers: peers_of[i].clone(), group }), expect));
    }
    Ok(Plan { sessions, registered: us.len(), groups: gids.len(), members_added: added })
}

/// Deals sessions to `workers` round-robin; worker w binds the source addresses
/// 127.0.0.(1+j) with j ≡ w (mod workers) (all of them if there are fewer than workers).
pub fn distribute(sessions: Vec<SessionSpec>, workers: usize, sources: u8) -> Vec<Vec<SessionSpec>> {
    let all: Vec<Ipv4Addr> = (0..sources).map(|j| Ipv4Addr::new(127, 0, 0, 1 + j)).collect();
    let mine: Vec<Vec<Ipv4Addr>> = (0..workers)
        .map(|w| {
            let v: Vec<Ipv4Addr> = all.iter().enumerate().filter(|(j, _)| j % workers == w).map(|(_, a)| *a).collect();
            if v.is_empty() {
                all.clone()
            } else {
                v
            }
        })
        .collect();
    let mut out = vec![Vec::new(); workers];
    for (i, mut s) in sessions.into_iter().enumerate() {
        let w = i % workers;
        let src = &mine[w];
        s.source = src[(i / workers) % src.len()];
        out[w].push(s);
    }
    out
}
