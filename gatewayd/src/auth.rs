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

/// Users whose every token is refused (deleted accounts). Loaded at start, updated on delete.
#[derive(Default)]
pub struct Revocations {
    users: DashSet<UserId>,
}

impl Revocations {
    /// Loads deleted users from the store.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn load(store: &dyn MessageStore) -> Result<Self, StoreError> {
        let users = DashSet::new();
        for u in store.deleted_users().await? {
            users.insert(u);
        }
        Ok(Self { users })
    }

    /// Refuses every token of `user` from now on.
    pub fn revoke(&self, user: UserId) {
        self.users.insert(user);
    }

    /// Whether `user`'s tokens are refused.
    pub fn is_revoked(&self, user: UserId) -> bool {
        self.users.contains(&user)
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
pub fn verify_access(state: &AppState, token: &str) -> Result<AuthUser, AuthError> {
    let claims = state.keys.verify(token, TokenKind::Access)?;
    if state.revoked.is_revoked(claims.user()) {
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
        Ok(verify_access(state, token)?)
    }
}
