//! Groups: members and message count.

use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use std::sync::Arc;
use switchboard_core::ids::{ConversationId, GroupId, UserId};

/// Members asked for the newest message at most (a late joiner may see none).
const COUNT_PROBES: usize = 8;

/// `GET /admin/v1/groups/{group}` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    group_id: GroupId,
    group_name: String,
    created_by: UserId,
    member_count: usize,
    members: Vec<UserId>,
    /// Messages in the group: the conversation sequence of its newest message.
    message_count: i64,
    /// Newest message's time, Unix ms.
    last_message_at: Option<i64>,
}

/// `GET /admin/v1/groups/{group}`
pub async fn show(State(s): State<Arc<AppState>>, ApiPath(id): ApiPath<i64>) -> Result<Json<GroupView>, ApiError> {
    let g = s.store.group(GroupId(id)).await?.ok_or_else(|| ApiError::not_found("group"))?;
    let conv = ConversationId::Group(g.group_id);
    // Sequences are gapless from 1, so the newest message's sequence is the count. Any member
    // who sees the newest message knows it; one who joined after it sees nothing.
    let mut newest = None;
    for m in g.members.iter().take(COUNT_PROBES) {
        if let Some(v) = s.store.history(conv, *m, None, 1).await?.items.into_iter().next() {
            newest = Some(v);
            break;
        }
    }
    Ok(Json(GroupView {
        group_id: g.group_id,
        group_name: g.group_name,
        created_by: g.created_by,
        member_count: g.members.len(),
        message_count: newest.as_ref().map_or(0, |v| v.conversation_seq),
        last_message_at: newest.map(|v| v.timestamp),
        members: g.members,
    }))
}
