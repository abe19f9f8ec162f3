//! Request authentication: bearer tokens from headers, query or subprotocol, checked against
//! the signature, expiry and the revocation set.

use crate::http::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use dashmap::DashSet;
use std::sync::Arc;
use switchboard_core::auth::{AuthError, Claims, TokenKind};
use switchboard_core::ids::{DeviceId, UserId};
use switchboard_core::store::{MessageStore, StoreError};

/// Where a revocation made on one node is seen at once by the others (cluster mode: Redis).
#[async_trait::async_trait]
pub trait SharedRevocations: Send + Sync {
    /// Refuses `user`'s tokens on every node.
    async fn revoke(&self, user: UserId) -> Result<(), String>;
    /// Whether another node refused `user`'s tokens.
    async fn is_revoked(&self, user: UserId) -> Result<bool, String>;
    /// Accepts `user`'s tokens again on every node (an operator re-enabled the account).
    async fn unrevoke(&self, user: UserId) -> Result<(), String>;
}

/// Users whose every token is refused (deleted accounts). Loaded at start, updated on delete;
/// in cluster mode also checked against, and written to, the shared set, so a deletion on
/// one node refuses the user's tokens on every node from the moment it is answered.
#[derive(Default)]
pub struct Revocations {
    users: DashSet<UserId>,
    shared: Option<Arc<dyn SharedRevocations>>,
}

impl Revocations {
    /// Loads deleted users from the store.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn load(store: &dyn MessageStore, shared: Option<Arc<dyn SharedRevocations>>) -> Result<Self, StoreError> {
        let users = DashSet::new();
        for u in store.deleted_users().await? {
            users.insert(u);
        }
        Ok(Self { users, shared })
    }

    /// Refuses every token of `user` from now on, here and (cluster) on every node. When the
    /// shared set cannot be written, the other nodes still learn it from the store's deleted
    /// users within their poll interval.
    pub async fn revoke(&self, user: UserId) {
        self.users.insert(user);
        if let Some(shared) = &self.shared {
            if let Err(error) = shared.revoke(user).await {
                tracing::warn!(%error, user = user.0, "shared revocation failed; other nodes learn it by polling");
            }
        }
    }

    /// Accepts `user`'s tokens again, here and (cluster) in the shared set; other nodes drop
    /// the user from their own sets at their next poll of the store.
    pub async fn unrevoke(&self, user: UserId) {
        self.users.remove(&user);
        if let Some(shared) = &self.shared {
            if let Err(error) = shared.unrevoke(user).await {
                tracing::warn!(%error, user = user.0, "shared unrevocation failed; the flag expires with the access-token lifetime");
            }
        }
    }

    /// Makes this node's set exactly `users` (what the store lists as deleted or disabled);
    /// returns the users newly refused, whose sockets the caller closes.
    pub fn replace_here(&self, users: &[UserId]) -> Vec<UserId> {
        let keep: std::collections::HashSet<UserId> = users.iter().copied().collect();
        self.users.retain(|u| keep.contains(u));
        users.iter().copied().filter(|u| self.users.insert(*u)).collect()
    }

    /// Whether revocations are shared with other nodes (cluster mode).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether this node already refuses `user`'s tokens.
    pub fn is_revoked_here(&self, user: UserId) -> bool {
        self.users.contains(&user)
    }

    /// Whether `user`'s tokens are refused, here or (cluster) anywhere. When the shared set
    /// cannot be read the answer is this node's alone (logged): an unreachable Redis must not
    /// refuse every request.
    pub async fn is_revoked(&self, user: UserId) -> bool {
        if self.users.contains(&user) {
            return true;
        }
        match &self.shared {
            None => false,
            Some(shared) => shared.is_revoked(user).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "shared revocation check failed; answering from this node");
                false
            }),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User.
    pub user: UserId,
    /// Device (login session).
    pub device: DeviceId,
    /// All claims.
    pub claims: Claims,
}

/// Verifies an access token and the revocation set.
///
/// # Errors
/// [`AuthError`] for a bad, expired or revoked token.
pub async fn verify_access(state: &AppState, token: &str) -> Result<AuthUser, AuthError> {
    let claims = state.keys.verify(token, TokenKind::Access)?;
    if state.revoked.is_revoked(claims.user()).await {
        return Err(AuthError::Revoked);
    }
    Ok(AuthUser { user: claims.user(), device: claims.device(), claims })
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<Arc<AppState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header.and_then(bearer).ok_or(AuthError::Missing)?;
        Ok(verify_access(state, token).await?)
    }
}
