//! Accounts: show (profile, devices, presence, undelivered count), create, disable, enable,
//! delete. A user is named by id or by email.
//!
//! Cluster mode: a disable, enable or delete changes the shared store and Redis once, on the
//! node asked, which then tells every other node ([`super::peers`]) so each closes the user's
//! sockets and updates its own revocation set at once, rather than at its next 5 s poll.

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_core::frame::close;
use switchboard_core::ids::{ConnId, DeviceId, MessageId, UserId};
use switchboard_core::store::{Account, NewUser, SyncFrom, UserLookup};

/// Undelivered messages are counted up to this many (one bounded backlog read).
pub const UNDELIVERED_CAP: usize = 1000;
/// Close reason for the sockets of a disabled account (code 1008).
pub const DISABLED_REASON: &str = "account disabled";

/// A user as named in a path: a numeric id, or an email.
#[derive(Debug, Clone)]
pub enum Who {
    /// By id.
    Id(UserId),
    /// By email (case-insensitive).
    Email(String),
}

impl Who {
    /// `42` or `ann@example.com`.
    ///
    /// # Errors
    /// 400 when it is neither.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let s = s.trim();
        if let Ok(id) = s.parse::<i64>() {
            Ok(Self::Id(UserId(id)))
        } else if s.contains('@') {
            Ok(Self::Email(s.to_owned()))
        } else {
            Err(ApiError::invalid("a user is named by numeric id or by email"))
        }
    }
}

/// The live account (disabled included) or 404.
///
/// # Errors
/// 404 `not_found`, or the store's error.
pub async fn lookup(s: &AppState, who: Who) -> Result<Account, ApiError> {
    let key = match who {
        Who::Id(id) => UserLookup::Id(id),
        Who::Email(e) => UserLookup::Email(e),
    };
    s.store.account(key).await?.ok_or_else(|| ApiError::not_found("user"))
}

/// One live connection of a user, anywhere in the cluster.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceConn {
    node_id: String,
    conn_id: ConnId,
    device_id: DeviceId,
}

/// Where a user is connected.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceView {
    online: bool,
    /// Nodes holding their connections.
    nodes: Vec<String>,
    connections: Vec<PresenceConn>,
}

/// `GET /admin/v1/users/{user}` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    #[serde(flatten)]
    account: Account,
    presence: PresenceView,
    /// Messages from others past the user's delivered mark, counted up to [`UNDELIVERED_CAP`].
    undelivered: usize,
    /// The count stopped at the cap.
    undelivered_capped: bool,
}

async fn user_view(s: &AppState, account: Account) -> Result<UserView, ApiError> {
    let user = account.user.user_id;
    let entries = s.presence.connections(user).await;
    let mut nodes: Vec<String> = entries.iter().map(|e| e.node.0.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let connections =
        entries.into_iter().map(|e| PresenceConn { node_id: e.node.0, conn_id: e.conn, device_id: e.device }).collect();
    // A device id no client has: the store answers "not yet delivered to any device".
    let probe = DeviceId("chatctl-undelivered-probe".into());
    let page = s.store.backlog(user, &probe, SyncFrom::Undelivered(MessageId(0)), UNDELIVERED_CAP).await?;
    Ok(UserView {
        account,
        presence: PresenceView { online: !nodes.is_empty(), nodes, connections },
        undelivered: page.messages.len(),
        undelivered_capped: page.next.is_some(),
    })
}

/// `GET /admin/v1/users/{user}`: profile, disabled flag, devices, presence, undelivered count.
pub async fn show(State(s): State<Arc<AppState>>, ApiPath(who): ApiPath<String>) -> Result<Json<UserView>, ApiError> {
    let account = lookup(&s, Who::parse(&who)?).await?;
    Ok(Json(user_view(&s, account).await?))
}

/// `POST /admin/v1/users` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    user_name: String,
    email: String,
    phone_number: String,
    password: String,
}

/// `POST /admin/v1/users`: 201 with the new user (as `show` answers).
pub async fn create(State(s): State<Arc<AppState>>, ApiJson(b): ApiJson<CreateBody>) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let user_name = b.user_name.trim().to_owned();
    if user_name.is_empty() || user_name.chars().count() > crate::http::users::MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!("userName must be 1-{} characters", crate::http::users::MAX_NAME_CHARS)));
    }
    let email = b.email.trim().to_owned();
    let email_ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.contains('@') && d.split('.').count() >= 2 && d.split('.').all(|p| !p.is_empty()));
    if !email_ok {
        return Err(ApiError::invalid("email is not a valid address"));
    }
    let phone_number: String = b.phone_number.trim().chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = phone_number.strip_prefix('+').unwrap_or(&phone_number);
    if !(6..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::invalid("phoneNumber must be 6-15 digits, optionally with a leading +"));
    }
    let n = b.password.chars().count();
    let min = s.cfg.auth.password_min_len;
    if n < min || n > crate::http::users::MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!("password must be {min}-{} characters", crate::http::users::MAX_PASSWORD_CHARS)));
    }
    let hasher = s.hasher.clone();
    let password = b.password;
    let password_hash = tokio::task::spawn_blocking(move || hasher.hash(&password))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "hashing failed"))?;
    let user = s.store.create_user(NewUser { user_name, email, phone_number, password_hash }).await?;
    tracing::info!(user_id = %user.user_id, "user created through the admin API");
    let account = lookup(&s, Who::Id(user.user_id)).await?;
    Ok((StatusCode::CREATED, Json(user_view(&s, account).await?)))
}

/// What disable, enable and delete did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    user_id: UserId,
    disabled: bool,
    deleted: bool,
    /// Sockets closed (cluster: on every node that answered).
    closed_connections: usize,
}

fn close_sockets(s: &AppState, user: UserId, reason: &'static str) -> usize {
    let mut n = 0;
    s.registry.for_user(user, |c| {
        c.close(close::POLICY, reason);
        n += 1;
    });
    n
}

/// The user a request forwarded by another node names (by id: that node made the change and
/// asks this one for its local effects only), or `None` for a request to act on.
fn forwarded_user(s: &AppState, headers: &HeaderMap, who: &str) -> Result<Option<UserId>, ApiError> {
    #[cfg(feature = "cluster")]
    if s.cfg.mode == switchboard_core::config::Mode::Cluster && !super::peers::fans_out(s, headers) {
        return who.parse().map(|id| Some(UserId(id))).map_err(|_| ApiError::invalid("a forwarded request names the user by id"));
    }
    let _ = (s, headers, who);
    Ok(None)
}

/// Cluster: has every other node apply the change's local effects; the sockets they closed.
async fn on_other_nodes(s: &AppState, headers: &HeaderMap, method: axum::http::Method, path: &str) -> usize {
    #[cfg(feature = "cluster")]
    if super::peers::fans_out(s, headers) {
        let answers = match super::peers::gather(s, method, path).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e.message, "other nodes not told; they follow at their next revocation poll");
                return 0;
            }
        };
        let mut closed = 0;
        for (peer, answer) in answers {
            match answer {
                Ok(v) => closed += v["closedConnections"].as_u64().unwrap_or(0) as usize,
                Err(error) => tracing::warn!(node = %peer.node, %error, "node not told; it follows at its next revocation poll"),
            }
        }
        return closed;
    }
    let _ = (s, headers, method, path);
    0
}

/// `POST /admin/v1/users/{user}/disable`: login refused, every token refused at once (here and,
/// through the shared revocation set, on every node), sockets closed with 1008.
pub async fn disable(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiPath(who): ApiPath<String>) -> Result<Json<Changed>, ApiError> {
    let user = match forwarded_user(&s, &headers, &who)? {
        Some(user) => user,
        None => {
            let user = lookup(&s, Who::parse(&who)?).await?.user.user_id;
            s.store.set_disabled(user, true).await?;
            user
        }
    };
    s.revoked.revoke(user).await;
    let mut closed = close_sockets(&s, user, DISABLED_REASON);
    closed += on_other_nodes(&s, &headers, axum::http::Method::POST, &format!("/users/{}/disable", user.0)).await;
    tracing::warn!(user_id = %user, closed, "user disabled by an operator");
    Ok(Json(Changed { user_id: user, disabled: true, deleted: false, closed_connections: closed }))
}

/// `POST /admin/v1/users/{user}/enable`: login allowed again.
pub async fn enable(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiPath(who): ApiPath<String>) -> Result<Json<Changed>, ApiError> {
    let user = match forwarded_user(&s, &headers, &who)? {
        Some(user) => user,
        None => {
            let user = lookup(&s, Who::parse(&who)?).await?.user.user_id;
            s.store.set_disabled(user, false).await?;
            user
        }
    };
    s.revoked.unrevoke(user).await;
    on_other_nodes(&s, &headers, axum::http::Method::POST, &format!("/users/{}/enable", user.0)).await;
    tracing::warn!(user_id = %user, "user enabled by an operator");
    Ok(Json(Changed { user_id: user, disabled: false, deleted: false, closed_connections: 0 }))
}

/// `DELETE /admin/v1/users/{user}`: as the user's own `DELETE /user/{id}`: profile
/// anonymised, email and phone freed, every token refused, sockets closed with 1008.
pub async fn delete(State(s): State<Arc<AppState>>, headers: HeaderMap, ApiPath(who): ApiPath<String>) -> Result<Json<Changed>, ApiError> {
    let user = match forwarded_user(&s, &headers, &who)? {
        Some(user) => user,
        None => {
            let user = lookup(&s, Who::parse(&who)?).await?.user.user_id;
            s.store.delete_user(user).await?;
            user
        }
    };
    s.revoked.revoke(user).await;
    let mut closed = close_sockets(&s, user, "account deleted");
    closed += on_other_nodes(&s, &headers, axum::http::Method::DELETE, &format!("/users/{}", user.0)).await;
    tracing::warn!(user_id = %user, closed, "user deleted by an operator");
    Ok(Json(Changed { user_id: user, disabled: false, deleted: true, closed_connections: closed }))
}
