//! The admin API's bearer token: `Authorization: Bearer <server.admin_token>`, compared in
//! constant time. Without a configured token every admin API request is refused with 401
//! `admin_disabled` (the API is off, not open); a missing or wrong token is 401
//! `unauthorized`.

use crate::auth::bearer;
use crate::http::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Middleware: lets the request through only with the admin token.
pub async fn require_token(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(expected) = s.cfg.server.admin_token.as_deref() else {
        let e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_disabled",
            "the admin API is disabled: set server.admin_token (env SWITCHBOARD_SERVER_ADMIN_TOKEN)",
        );
        return challenge(e);
    };
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => next.run(req).await,
        Some(_) => {
            tracing::warn!(path = %req.uri().path(), "admin API request with a wrong token");
            challenge(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong admin token"))
        }
        None => challenge(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing admin token (Authorization: Bearer)")),
    }
}

fn challenge(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"switchboard-admin\""));
    res
}

/// Equality whose time depends only on the lengths, not on where the bytes differ. (The
/// length itself is not secret enough to hide: tokens have a fixed, configured length.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"secret-token-0123", b"secret-token-0123"));
        assert!(!constant_time_eq(b"secret-token-0123", b"secret-token-0124"));
        assert!(!constant_time_eq(b"secret-token-0123", b"secret-token-012"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
