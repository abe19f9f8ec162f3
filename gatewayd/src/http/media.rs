//! `/media`: upload raw bytes, download if allowed.

use super::error::ApiError;
use super::extract::{read_body, ApiPath};
use crate::auth::AuthUser;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use switchboard_core::store::Media;

/// `POST /media`: the raw body is the object; `Content-Type` is kept (default
/// `application/octet-stream`).
pub async fn upload(State(s): State<Arc<AppState>>, me: AuthUser, req: Request) -> Result<(StatusCode, Json<Media>), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .unwrap_or("application/octet-stream")
        .to_owned();
    let bytes = read_body(req, s.cfg.server.media_max_bytes).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("empty body"));
    }
    let media = Media {
        media_id: uuid::Uuid::new_v4().simple().to_string(),
        uploader: me.user,
        content_type,
        size: bytes.len() as i64,
    };
    s.media.put(&media.media_id, bytes).await?;
    s.store.save_media(media.clone()).await?;
    Ok((StatusCode::CREATED, Json(media)))
}

/// `GET /media/{mediaId}`: for the uploader and the members of a conversation it was sent in.
pub async fn download(State(s): State<Arc<AppState>>, me: AuthUser, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("media"));
    }
    let Some(media) = s.store.media_for(me.user, &id).await? else {
        return Err(ApiError::forbidden("media not shared with you"));
    };
    let bytes = s.media.get(&media.media_id).await?;
    Ok(([(header::CONTENT_TYPE, media.content_type), (header::CACHE_CONTROL, "private, max-age=3600".into())], bytes).into_response())
}
