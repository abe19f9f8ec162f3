//! The REST API (JSON, camelCase). Paths and fields are a contract: add, never rename.

pub mod chats;
pub mod error;
pub mod extract;
pub mod groups;
pub mod media;
pub mod throttle;
pub mod users;

use crate::state::AppState;
use crate::ws;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use error::ApiError;
use std::sync::Arc;
use std::time::Instant;
use switchboard_core::metrics::names;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Every client route.
pub fn routes(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/user/register", post(users::register))
        .route("/user/login", post(users::login))
        .route("/user/refresh", post(users::refresh))
        .route("/user/{id}", get(users::show).put(users::update).delete(users::remove))
        .route("/chat/{user_id}", get(chats::list))
        .route("/messages/send", get(ws::handshake::upgrade))
        .route("/messages/{user_id}/{receiver_id}", get(chats::direct_history))
        .route("/groups/create", post(groups::create))
        .route("/groups/{group_id}/add", post(groups::add))
        .route("/groups/{group_id}/remove", delete(groups::remove))
        .route("/groups/{group_id}", get(groups::history))
        .route("/media", post(media::upload))
        .route("/media/{media_id}", get(media::download))
        .route("/search", get(chats::search))
        .route("/ws", get(ws::handshake::upgrade))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

/// Times every request (labelled by route template, a bounded set) and logs at debug.
async fn observe(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => route.clone(), "status" => status)
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(%method, %route, status = res.status().as_u16(), "http request");
    res
}
