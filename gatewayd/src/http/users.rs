//! `/user/*`: registration, login, refresh, profile.

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::auth::AuthUser;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_core::auth::{AuthError, TokenKind};
use switchboard_core::frame::close;
use switchboard_core::ids::{DeviceId, UserId};
use switchboard_core::store::{NewUser, RefreshOutcome, User, UserPatch};

/// Longest display name, characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest password, characters (argon2 input is bounded to keep hashing cheap).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// `POST /user/register` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    user_name: String,
    email: String,
    phone_number: String,
    password: String,
}

/// `POST /user/register`: 201 with the new user.
pub async fn register(State(s): State<Arc<AppState>>, ApiJson(b): ApiJson<RegisterBody>) -> Result<impl IntoResponse, ApiError> {
    let user_name = valid_name(&b.user_name)?;
    let email = valid_email(&b.email)?;
    let phone_number = valid_phone(&b.phone_number)?;
    valid_password(&s, &b.password)?;
    let password_hash = hash(&s, b.password).await?;
    let user = s.store.create_user(NewUser { user_name, email, phone_number, password_hash }).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `POST /user/login` body.
#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
}

/// A token pair as returned by login and refresh.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    token: String,
    refresh_token: String,
    user_id: UserId,
    device_id: DeviceId,
    /// Access token lifetime, seconds.
    expires_in: i64,
}

/// `POST /user/login`: a new device session. Unknown email and wrong password look the same.
pub async fn login(State(s): State<Arc<AppState>>, ApiJson(b): ApiJson<LoginBody>) -> Result<Json<TokenResponse>, ApiError> {
    let email = b.email.trim().to_owned();
    if !s.login_throttle.allowed(&email) {
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "too many failed logins; try again later"));
    }
    let found = s.store.credentials(&email).await?;
    let hasher = s.hasher.clone();
    // Verify against a dummy hash when the email is unknown, so timing does not tell.
    let (user, phc) = match found {
        Some((u, h)) => (Some(u), h),
        None => (None, s.dummy_hash.clone()),
    };
    let ok = tokio::task::spawn_blocking(move || hasher.verify(&b.password, &phc)).await.unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        s.login_throttle.failed(&email);
        return Err(AuthError::BadCredentials.into());
    };
    s.login_throttle.succeeded(&email);
    let device = DeviceId(uuid::Uuid::new_v4().simple().to_string());
    issue(&s, user.user_id, device).await
}

async fn issue(s: &AppState, user: UserId, device: DeviceId) -> Result<Json<TokenResponse>, ApiError> {
    let pair = s.keys.issue(user, &device);
    s.store.save_refresh(&pair.refresh_jti, user, &device, pair.refresh_exp).await?;
    Ok(Json(TokenResponse {
        token: pair.access,
        refresh_token: pair.refresh,
        user_id: user,
        device_id: device,
        expires_in: pair.expires_in,
    }))
}

/// `POST /user/refresh` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    refresh_token: String,
}

/// `POST /user/refresh`: rotates the pair; a reused refresh token is refused and ends the session.
pub async fn refresh(State(s): State<Arc<AppState>>, ApiJson(b): ApiJson<RefreshBody>) -> Result<Json<TokenResponse>, ApiError> {
    let claims = s.keys.verify(&b.refresh_token, TokenKind::Refresh)?;
    match s.store.use_refresh(&claims.jti).await? {
        RefreshOutcome::Valid { user, device } if !s.revoked.is_revoked(user).await => issue(&s, user, device).await,
        RefreshOutcome::Reused => Err(AuthError::RefreshReused.into()),
        _ => Err(AuthError::Revoked.into()),
    }
}

/// Public profile.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    user_id: UserId,
    user_name: String,
    phone_number: String,
    online: bool,
    last_seen: Option<i64>,
    /// Only on one's own profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

/// `GET /user/{id}`: any authenticated user sees the public profile.
pub async fn show(State(s): State<Arc<AppState>>, me: AuthUser, ApiPath(id): ApiPath<i64>) -> Result<Json<Profile>, ApiError> {
    let u = s.store.user(UserId(id)).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let online = s.presence.is_online(u.user_id).await;
    let email = (me.user == u.user_id).then(|| u.email.clone());
    Ok(Json(Profile { user_id: u.user_id, user_name: u.user_name, phone_number: u.phone_number, online, last_seen: u.last_seen, email }))
}

/// `PUT /user/{id}` body; every field optional.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateBody {
    user_name: Option<String>,
    email: Option<String>,
    phone_number: Option<String>,
    password: Option<String>,
}

/// `PUT /user/{id}`: self only.
pub async fn update(
    State(s): State<Arc<AppState>>,
    me: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<UpdateBody>,
) -> Result<Json<User>, ApiError> {
    only_self(&me, id)?;
    let mut patch = UserPatch {
        user_name: b.user_name.as_deref().map(valid_name).transpose()?,
        email: b.email.as_deref().map(valid_email).transpose()?,
        phone_number: b.phone_number.as_deref().map(valid_phone).transpose()?,
        password_hash: None,
    };
    if let Some(p) = b.password {
        valid_password(&s, &p)?;
        patch.password_hash = Some(hash(&s, p).await?);
    }
    Ok(Json(s.store.update_user(me.user, patch).await?))
}

/// `DELETE /user/{id}`: self only; every token of the user is refused from now on and their
/// sockets are closed.
pub async fn remove(State(s): State<Arc<AppState>>, me: AuthUser, ApiPath(id): ApiPath<i64>) -> Result<StatusCode, ApiError> {
    only_self(&me, id)?;
    s.store.delete_user(me.user).await?;
    s.revoked.revoke(me.user).await;
    s.registry.close_user(me.user, close::POLICY, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn only_self(me: &AuthUser, id: i64) -> Result<(), ApiError> {
    if me.user.0 == id {
        Ok(())
    } else {
        Err(ApiError::forbidden("you may only change your own account"))
    }
}

async fn hash(s: &AppState, password: String) -> Result<String, ApiError> {
    let hasher = s.hasher.clone();
    tokio::task::spawn_blocking(move || hasher.hash(&password))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "hashing failed"))
}

fn valid_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!("userName must be 1-{MAX_NAME_CHARS} characters")));
    }
    Ok(n.to_owned())
}

/// A pragmatic email check: one `@`, a non-empty local part, a dotted domain, no spaces.
fn valid_email(email: &str) -> Result<String, ApiError> {
    let e = email.trim();
    let ok = e.len() <= 254
        && !e.chars().any(char::is_whitespace)
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.split('.').count() >= 2
                && domain.split('.').all(|p| !p.is_empty())
        });
    if ok {
        Ok(e.to_owned())
    } else {
        Err(ApiError::invalid("email is not a valid address"))
    }
}

/// Phone numbers are stored as `+` and 6-15 digits (E.164); spaces, dashes, dots and
/// parentheses are dropped.
fn valid_phone(phone: &str) -> Result<String, ApiError> {
    let p: String = phone.trim().chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = p.strip_prefix('+').unwrap_or(&p);
    if (6..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(p)
    } else {
        Err(ApiError::invalid("phoneNumber must be 6-15 digits, optionally with a leading +"))
    }
}

fn valid_password(s: &AppState, password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    let min = s.cfg.auth.password_min_len;
    if n < min || n > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!("password must be {min}-{MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators() {
        assert!(valid_email("a@b.co").is_ok());
        for bad in ["", "a", "a@b", "@b.co", "a b@c.d", "a@b..c", "a@@b.c"] {
            assert!(valid_email(bad).is_err(), "{bad}");
        }
        assert_eq!(valid_phone("+1 (555) 123-4567").unwrap(), "+15551234567");
        for bad in ["", "12345", "abcdefg", "+1234567890123456"] {
            assert!(valid_phone(bad).is_err(), "{bad}");
        }
        assert!(valid_name("  ").is_err());
        assert_eq!(valid_name(" Ann ").unwrap(), "Ann");
    }
}
