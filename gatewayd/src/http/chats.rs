//! Chat list, 1:1 history and search.

use super::error::ApiError;
use super::extract::{page_limit, ApiPath, ApiQuery};
use crate::auth::AuthUser;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use switchboard_core::ids::{ConversationId, UserId};
use switchboard_core::protocol::MessageView;
use switchboard_core::store::ChatSummary;

/// History page size: default and maximum.
pub const HISTORY_LIMIT: (usize, usize) = (50, 200);
/// Chat list page size: default and maximum.
pub const CHATS_LIMIT: (usize, usize) = (20, 100);
/// Search results: default and maximum.
pub const SEARCH_LIMIT: (usize, usize) = (20, 100);

/// `?limit=&cursor=`
#[derive(Deserialize)]
pub struct ChatsQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /chat/{userId}` answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatsPage {
    chats: Vec<ChatSummary>,
    next_cursor: Option<String>,
}

/// `GET /chat/{userId}`: the caller's own chats, newest activity first.
pub async fn list(
    State(s): State<Arc<AppState>>,
    me: AuthUser,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ChatsQuery>,
) -> Result<Json<ChatsPage>, ApiError> {
    if me.user.0 != user_id {
        return Err(ApiError::forbidden("you may only list your own chats"));
    }
    let limit = page_limit(q.limit, CHATS_LIMIT.0, CHATS_LIMIT.1);
    let page = s.store.chats(me.user, q.cursor.as_deref(), limit).await?;
    Ok(Json(ChatsPage { chats: page.items, next_cursor: page.next_cursor }))
}

/// `?limit=&before=`
#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
    /// A `nextCursor` from the previous page (a conversation sequence number).
    before: Option<String>,
}

impl HistoryQuery {
    /// The page size and the sequence to read below.
    ///
    /// # Errors
    /// 400 when `before` is not a cursor this API issued.
    pub fn parts(&self) -> Result<(usize, Option<i64>), ApiError> {
        let before = match self.before.as_deref() {
            None | Some("") => None,
            Some(b) => Some(b.parse::<i64>().map_err(|_| ApiError::invalid("before must be a nextCursor value"))?),
        };
        Ok((page_limit(self.limit, HISTORY_LIMIT.0, HISTORY_LIMIT.1), before))
    }
}

/// A page of messages.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesPage {
    /// Messages in conversation order.
    pub messages: Vec<MessageView>,
    /// Fetches the next older page; absent on the oldest.
    pub next_cursor: Option<String>,
}

/// `GET /messages/{userId}/{receiverId}`: the caller must be one of the two.
pub async fn direct_history(
    State(s): State<Arc<AppState>>,
    me: AuthUser,
    ApiPath((a, b)): ApiPath<(i64, i64)>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<MessagesPage>, ApiError> {
    if me.user.0 != a && me.user.0 != b {
        return Err(ApiError::forbidden("you are not part of this conversation"));
    }
    let (limit, before) = q.parts()?;
    let page = s.store.history(ConversationId::direct(UserId(a), UserId(b)), me.user, before, limit).await?;
    Ok(Json(MessagesPage { messages: page.items, next_cursor: page.next_cursor }))
}

/// `?q=&limit=`
#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
}

/// `GET /search` answer.
#[derive(Serialize)]
pub struct SearchResults {
    messages: Vec<MessageView>,
}

/// `GET /search`: messages with every word of `q`, from the caller's conversations only,
/// newest first.
pub async fn search(State(s): State<Arc<AppState>>, me: AuthUser, ApiQuery(q): ApiQuery<SearchQuery>) -> Result<Json<SearchResults>, ApiError> {
    let text = q.q.unwrap_or_default();
    if text.trim().is_empty() || text.len() > 512 {
        return Err(ApiError::invalid("q must be 1-512 bytes"));
    }
    let limit = page_limit(q.limit, SEARCH_LIMIT.0, SEARCH_LIMIT.1);
    Ok(Json(SearchResults { messages: s.store.search(me.user, &text, limit).await? }))
}
