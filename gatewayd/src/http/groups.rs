//! `/groups/*`: create, membership, history.

use super::chats::{HistoryQuery, MessagesPage};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::auth::AuthUser;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use switchboard_core::ids::{ConversationId, GroupId, UserId};
use switchboard_core::policy;
use switchboard_core::store::Group;

/// Longest group name, characters.
pub const MAX_GROUP_NAME_CHARS: usize = 128;

/// `POST /groups/create` body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    group_name: String,
    created_by: i64,
}

/// `POST /groups/create`: `createdBy` must be the caller.
pub async fn create(State(s): State<Arc<AppState>>, me: AuthUser, ApiJson(b): ApiJson<CreateBody>) -> Result<(StatusCode, Json<Group>), ApiError> {
    if b.created_by != me.user.0 {
        return Err(ApiError::forbidden("createdBy must be the authenticated user"));
    }
    let name = b.group_name.trim();
    if name.is_empty() || name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(ApiError::invalid(format!("groupName must be 1-{MAX_GROUP_NAME_CHARS} characters")));
    }
    Ok((StatusCode::CREATED, Json(s.store.create_group(name, me.user).await?)))
}

/// Body of add and remove.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberBody {
    user_id: i64,
}

async fn load(s: &AppState, id: i64) -> Result<Group, ApiError> {
    s.store.group(GroupId(id)).await?.ok_or_else(|| ApiError::not_found("group"))
}

/// `POST /groups/{groupId}/add`: any member may add.
pub async fn add(
    State(s): State<Arc<AppState>>,
    me: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<MemberBody>,
) -> Result<Json<Group>, ApiError> {
    let g = load(&s, id).await?;
    if !policy::can_add(&g, me.user) {
        return Err(ApiError::forbidden("only members may add members"));
    }
    Ok(Json(s.store.add_member(g.group_id, UserId(b.user_id)).await?))
}

/// `DELETE /groups/{groupId}/remove`: the creator removes anyone; a member removes themself.
pub async fn remove(
    State(s): State<Arc<AppState>>,
    me: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<MemberBody>,
) -> Result<Json<Group>, ApiError> {
    let g = load(&s, id).await?;
    if !policy::can_remove(&g, me.user, UserId(b.user_id)) {
        return Err(ApiError::forbidden("only the group's creator may remove other members"));
    }
    Ok(Json(s.store.remove_member(g.group_id, UserId(b.user_id)).await?))
}

/// `GET /groups/{groupId}`: members only; messages since the caller joined.
pub async fn history(
    State(s): State<Arc<AppState>>,
    me: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<MessagesPage>, ApiError> {
    let g = load(&s, id).await?;
    if !policy::can_read(&g, me.user) {
        return Err(ApiError::forbidden("only members may read a group"));
    }
    let (limit, before) = q.parts()?;
    let page = s.store.history(ConversationId::Group(g.group_id), me.user, before, limit).await?;
    Ok(Json(MessagesPage { messages: page.items, next_cursor: page.next_cursor }))
}
