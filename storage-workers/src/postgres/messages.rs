//! Messages, receipts, device cursors, history, chat list and search: async functions on a
//! connection or a transaction, called by [`super::PgStore`]. Each mirrors the function of
//! the same name in `sqlite::messages`, with the same SQL where PostgreSQL allows it.

use super::pool::{col, db, execute, exists, query, query_opt};
use super::schema::FTS_DOCUMENT;
use deadpool_postgres::GenericClient;
use switchboard_core::ids::{ConversationId, DeviceId, MessageId, UserId};
use switchboard_core::protocol::{MediaRef, MessageView, ReceiptStatus, Target};
use switchboard_core::store::{Appended, Backlog, ChatSummary, NewMessage, Page, ReceiptNotices, StoreError, SyncFrom};
use switchboard_core::time::now_ms;
use tokio_postgres::Row;

const MSG_COLS: &str = "m.id, m.conv_id, m.seq, m.sender_id, m.body, m.media_id, m.created_at, m.client_msg_id, \
                        md.content_type, md.size";
const MSG_FROM: &str = "messages m LEFT JOIN media md ON md.id = m.media_id";
const MEDIA_JOIN: &str = "LEFT JOIN media md ON md.id = m.media_id";

/// A conversation id in the database that does not parse: the data is corrupt.
#[derive(Debug, thiserror::Error)]
#[error("stored conversation id {0:?} is malformed")]
struct MalformedConversation(String);

fn parse_conv(s: String) -> Result<ConversationId, StoreError> {
    ConversationId::parse(&s).ok_or_else(|| StoreError::Backend(Box::new(MalformedConversation(s))))
}

/// Reads the [`MSG_COLS`] columns starting at column `at`.
fn view_at(r: &Row, at: usize) -> Result<(MessageView, ConversationId), StoreError> {
    let conv = parse_conv(col(r, at + 1)?)?;
    let sender = UserId(col(r, at + 3)?);
    let media = match col::<Option<String>>(r, at + 5)? {
        Some(media_id) => Some(MediaRef { media_id, content_type: col(r, at + 8)?, size: col(r, at + 9)? }),
        None => None,
    };
    let (receiver_id, group_id) = match conv {
        ConversationId::Direct(..) => (conv.peer_of(sender), None),
        ConversationId::Group(g) => (None, Some(g)),
    };
    let view = MessageView {
        message_id: MessageId(col(r, at)?),
        sender_id: sender,
        receiver_id,
        group_id,
        message: col(r, at + 4)?,
        media,
        conversation_seq: col(r, at + 2)?,
        timestamp: col(r, at + 6)?,
        client_msg_id: col(r, at + 7)?,
    };
    Ok((view, conv))
}

fn view_row(r: &Row) -> Result<(MessageView, ConversationId), StoreError> {
    view_at(r, 0)
}

async fn views(c: &impl GenericClient, sql: &str, p: super::pool::Params<'_>) -> Result<Vec<MessageView>, StoreError> {
    query(c, sql, p).await?.iter().map(|r| view_row(r).map(|(v, _)| v)).collect()
}

pub async fn message(c: &impl GenericClient, id: MessageId) -> Result<Option<(MessageView, ConversationId)>, StoreError> {
    let sql = format!("SELECT {MSG_COLS} FROM {MSG_FROM} WHERE m.id = $1");
    query_opt(c, &sql, &[&id.0]).await?.as_ref().map(view_row).transpose()
}

/// Appends one message. The caller holds the append lock and wraps the call in a savepoint.
/// Appends a batch in the caller's transaction: one `append_message` call per message (schema
/// migration 3), all sent back to back so they cost about one round trip together instead of
/// 13 each, and run by the server in order (per-conversation order holds). The outer error is
/// a failed call (the transaction is lost); the inner ones are each message's own outcome.
pub async fn append_batch(c: &impl GenericClient, batch: &[NewMessage]) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let st = c
        .prepare(
            "SELECT status, msg_id, msg_seq, recipients, media_type, media_size
             FROM append_message($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(db)?;
    let args: Vec<(ConversationId, String, Option<i64>, Option<i64>, i64)> = batch
        .iter()
        .map(|m| {
            let conv = m.target.conversation(m.sender);
            let (receiver, group) = match m.target {
                Target::User(u) => (Some(u.0), None),
                Target::Group(g) => (None, Some(g.0)),
            };
            (conv, conv.to_string(), receiver, group, now_ms())
        })
        .collect();
    type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let params: Vec<[Param<'_>; 9]> = batch
        .iter()
        .zip(&args)
        .map(|(m, (_, conv_s, receiver, group, ts))| -> [Param<'_>; 9] {
            [conv_s, &m.sender.0, &m.sender_device.0, &m.client_msg_id, receiver, group, &m.text, &m.media_id, ts]
        })
        .collect();
    let rows = futures_util::future::join_all(params.iter().map(|p| c.query_one(&st, p))).await;
    let mut out = Vec::with_capacity(batch.len());
    for ((m, (conv, _, _, _, ts)), row) in batch.iter().zip(&args).zip(rows) {
        let row = row.map_err(db)?;
        let status: String = col(&row, 0)?;
        out.push(match status.as_str() {
            "ok" => {
                let media = match &m.media_id {
                    Some(id) => Some(MediaRef { media_id: id.clone(), content_type: Some(col(&row, 4)?), size: Some(col(&row, 5)?) }),
                    None => None,
                };
                let recipients: Vec<i64> = col(&row, 3)?;
                Ok(Appended {
                    view: m.stored_view(MessageId(col(&row, 1)?), col(&row, 2)?, *ts, media),
                    conversation: *conv,
                    recipients: recipients.into_iter().map(UserId).collect(),
                    duplicate: false,
                })
            }
            "duplicate" => match message(c, MessageId(col(&row, 1)?)).await? {
                Some((view, conversation)) => Ok(Appended { view, conversation, recipients: Vec::new(), duplicate: true }),
                None => Err(StoreError::NotFound("original of a resend")),
            },
            "no_receiver" => Err(StoreError::NotFound("receiver")),
            "not_member" => Err(StoreError::Forbidden("not a member of this group")),
            "no_group" => Err(StoreError::NotFound("group")),
            "no_media" => Err(StoreError::NotFound("media")),
            other => return Err(StoreError::Backend(Box::new(std::io::Error::other(format!("append_message said {other:?}"))))),
        });
    }
    Ok(out)
}

pub async fn direct_peers(c: &impl GenericClient, user: UserId) -> Result<Vec<UserId>, StoreError> {
    let rows = query(
        c,
        "SELECT DISTINCT other.user_id FROM members mine JOIN members other ON other.conv_id = mine.conv_id
         WHERE mine.user_id = $1 AND mine.conv_id LIKE 'd:%' AND other.user_id <> $1",
        &[&user.0],
    )
    .await?;
    rows.iter().map(|r| col(r, 0).map(UserId)).collect()
}

pub async fn history(
    c: &impl GenericClient,
    conv: ConversationId,
    viewer: UserId,
    before: Option<i64>,
    limit: usize,
) -> Result<Page<MessageView>, StoreError> {
    // A member sees nothing from before they joined; a non-member of a conversation with no
    // row sees it from the start, as in SQLite (callers check access first).
    let sql = format!(
        "SELECT {MSG_COLS} FROM {MSG_FROM} WHERE m.conv_id = $1
           AND m.seq > COALESCE((SELECT joined_seq FROM members WHERE conv_id = $1 AND user_id = $2), 0)
           AND m.seq < $3 ORDER BY m.seq DESC LIMIT $4"
    );
    let mut items = views(c, &sql, &[&conv.to_string(), &viewer.0, &before.unwrap_or(i64::MAX), &page_limit(limit)]).await?;
    let more = items.len() > limit;
    items.truncate(limit);
    items.reverse();
    let next_cursor = if more { items.first().map(|m| m.conversation_seq.to_string()) } else { None };
    Ok(Page { items, next_cursor })
}

/// `limit + 1` (to learn whether another page follows) as a SQL `LIMIT`.
fn page_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Parses a chat-list cursor, `<lastMessageId>|<convId>`.
fn chat_cursor(cursor: Option<&str>) -> Result<(i64, String), StoreError> {
    match cursor {
        None => Ok((i64::MAX, String::new())),
        Some(s) => {
            let (a, b) = s.split_once('|').ok_or(StoreError::Invalid("bad cursor"))?;
            Ok((a.parse().map_err(|_| StoreError::Invalid("bad cursor"))?, b.to_owned()))
        }
    }
}

/// One query for the page (unread counts, group names and previews included), one for the
/// names of direct-chat peers.
pub async fn chats(c: &impl GenericClient, user: UserId, cursor: Option<&str>, limit: usize) -> Result<Page<ChatSummary>, StoreError> {
    let (after_msg, after_conv) = chat_cursor(cursor)?;
    // A member who joined later must not see, even as a preview, what came before: the
    // preview join requires `m.seq > joined_seq`.
    let sql = format!(
        "SELECT c.id, c.last_message_id,
                (SELECT COUNT(*) FROM messages x WHERE x.conv_id = c.id
                    AND x.seq > GREATEST(mb.read_seq, mb.joined_seq) AND x.sender_id <> $1),
                g.name, {MSG_COLS}
         FROM members mb
         JOIN conversations c ON c.id = mb.conv_id
         LEFT JOIN groups g ON g.id = c.group_id
         LEFT JOIN messages m ON m.id = c.last_message_id AND m.seq > mb.joined_seq
         {MEDIA_JOIN}
         WHERE mb.user_id = $1 AND (c.last_message_id < $2 OR (c.last_message_id = $2 AND c.id > $3))
         ORDER BY c.last_message_id DESC, c.id ASC LIMIT $4"
    );
    let rows = query(c, &sql, &[&user.0, &after_msg, &after_conv, &page_limit(limit)]).await?;
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut last_key = None;
    for r in rows.iter().take(limit) {
        let conv_s: String = col(r, 0)?;
        let last_id: i64 = col(r, 1)?;
        let conv = parse_conv(conv_s.clone())?;
        let last_message = match col::<Option<i64>>(r, 4)? {
            Some(_) => Some(view_at(r, 4)?.0),
            None => None,
        };
        let (kind, peer_id, group_id, title) = match conv {
            ConversationId::Direct(..) => ("direct", conv.peer_of(user), None, String::new()),
            ConversationId::Group(g) => ("group", None, Some(g), col::<Option<String>>(r, 3)?.unwrap_or_default()),
        };
        last_key = Some(format!("{last_id}|{conv_s}"));
        items.push(ChatSummary { chat_id: conv_s, kind, peer_id, group_id, title, last_message, unread_count: col(r, 2)? });
    }
    name_peers(c, &mut items).await?;
    let next_cursor = if more { last_key } else { None };
    Ok(Page { items, next_cursor })
}

/// Fills in the titles of direct chats: the peer's name (deleted users included, under
/// their anonymised name).
async fn name_peers(c: &impl GenericClient, items: &mut [ChatSummary]) -> Result<(), StoreError> {
    let peers: Vec<i64> = items.iter().filter_map(|s| s.peer_id).map(|p| p.0).collect();
    if peers.is_empty() {
        return Ok(());
    }
    let rows = query(c, "SELECT id, user_name FROM users WHERE id = ANY($1)", &[&peers]).await?;
    let names = rows
        .iter()
        .map(|r| Ok((UserId(col(r, 0)?), col::<String>(r, 1)?)))
        .collect::<Result<std::collections::HashMap<_, _>, StoreError>>()?;
    for s in items.iter_mut() {
        if let Some(name) = s.peer_id.and_then(|p| names.get(&p)) {
            s.title.clone_from(name);
        }
    }
    Ok(())
}

/// Turns free text into plain words (all must match) for `plainto_tsquery`, so user input
/// can never be tsquery syntax: the same words the SQLite store's `fts_query` quotes.
pub fn search_words(q: &str) -> Option<String> {
    let terms: Vec<&str> = q.split(|ch: char| !ch.is_alphanumeric()).filter(|t| !t.is_empty()).take(16).collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

pub async fn search(c: &impl GenericClient, user: UserId, q: &str, limit: usize) -> Result<Vec<MessageView>, StoreError> {
    let Some(words) = search_words(q) else { return Err(StoreError::Invalid("query has no searchable words")) };
    let sql = format!(
        "SELECT {MSG_COLS} FROM inbox i JOIN messages m ON m.id = i.message_id {MEDIA_JOIN}
         WHERE i.user_id = $1 AND {FTS_DOCUMENT} @@ plainto_tsquery('simple', $2)
         ORDER BY m.id DESC LIMIT $3"
    );
    views(c, &sql, &[&user.0, &words, &sql_limit(limit)]).await
}

pub async fn advance_cursor(c: &impl GenericClient, user: UserId, device: &DeviceId, to: MessageId) -> Result<(), StoreError> {
    // Never past the newest message the user has, so a bogus id cannot hide future messages.
    execute(
        c,
        "INSERT INTO devices (user_id, device_id, cursor)
         SELECT $1::bigint, $2::text, LEAST($3::bigint, COALESCE((SELECT MAX(message_id) FROM inbox WHERE user_id = $1), 0))
         ON CONFLICT (user_id, device_id) DO UPDATE SET cursor = GREATEST(COALESCE(devices.cursor, 0), excluded.cursor)",
        &[&user.0, &device.0, &to.0],
    )
    .await?;
    Ok(())
}

/// Runs in a transaction; the member row is locked so concurrent receipts of one user each
/// report only what they newly covered.
pub async fn receipt(
    c: &impl GenericClient,
    user: UserId,
    device: &DeviceId,
    id: MessageId,
    status: ReceiptStatus,
) -> Result<ReceiptNotices, StoreError> {
    let (view, conv) = message(c, id).await?.ok_or(StoreError::NotFound("message"))?;
    if !exists(c, "SELECT 1 FROM inbox WHERE user_id = $1 AND message_id = $2", &[&user.0, &id.0]).await? {
        return Err(StoreError::Forbidden("not a message you received"));
    }
    advance_cursor(c, user, device, id).await?;
    if view.sender_id == user {
        return Ok(Vec::new());
    }
    let conv_s = conv.to_string();
    let marks = query_opt(
        c,
        "SELECT delivered_seq, read_seq FROM members WHERE conv_id = $1 AND user_id = $2 FOR UPDATE",
        &[&conv_s, &user.0],
    )
    .await?;
    let Some(marks) = marks else { return Ok(Vec::new()) };
    let (delivered, read): (i64, i64) = (col(&marks, 0)?, col(&marks, 1)?);
    let seq = view.conversation_seq;
    let is_read = status == ReceiptStatus::Read;
    let old = if is_read { read } else { delivered };
    if seq <= old {
        return Ok(Vec::new());
    }
    execute(
        c,
        "UPDATE members SET delivered_seq = GREATEST(delivered_seq, $3),
                read_seq = CASE WHEN $4 THEN GREATEST(read_seq, $3) ELSE read_seq END
         WHERE conv_id = $1 AND user_id = $2",
        &[&conv_s, &user.0, &seq, &is_read],
    )
    .await?;
    let rows = query(
        c,
        "SELECT sender_id, MAX(id) FROM messages WHERE conv_id = $1 AND seq > $2 AND seq <= $3 AND sender_id <> $4
         GROUP BY sender_id",
        &[&conv_s, &old, &seq, &user.0],
    )
    .await?;
    rows.iter().map(|r| Ok((UserId(col(r, 0)?), MessageId(col(r, 1)?)))).collect()
}

pub async fn backlog(c: &impl GenericClient, user: UserId, device: &DeviceId, from: SyncFrom, limit: usize) -> Result<Backlog, StoreError> {
    let from = match from {
        SyncFrom::Device => {
            let row = query_opt(c, "SELECT cursor FROM devices WHERE user_id = $1 AND device_id = $2", &[&user.0, &device.0]).await?;
            match row.map(|r| col::<Option<i64>>(&r, 0)).transpose()?.flatten() {
                Some(cur) => SyncFrom::After(MessageId(cur)),
                None => SyncFrom::Undelivered(MessageId(0)),
            }
        }
        other => other,
    };
    let messages = match from {
        SyncFrom::After(after) => {
            let sql = format!(
                "SELECT {MSG_COLS} FROM inbox i JOIN messages m ON m.id = i.message_id {MEDIA_JOIN}
                 WHERE i.user_id = $1 AND i.message_id > $2 AND NOT (m.sender_id = $1 AND m.sender_device = $3)
                 ORDER BY i.message_id LIMIT $4"
            );
            views(c, &sql, &[&user.0, &after.0, &device.0, &sql_limit(limit)]).await?
        }
        SyncFrom::Undelivered(after) => {
            let sql = format!(
                "SELECT {MSG_COLS} FROM inbox i JOIN messages m ON m.id = i.message_id {MEDIA_JOIN}
                 JOIN members mb ON mb.conv_id = m.conv_id AND mb.user_id = i.user_id
                 WHERE i.user_id = $1 AND i.message_id > $2 AND m.sender_id <> $1 AND m.seq > mb.delivered_seq
                 ORDER BY i.message_id LIMIT $3"
            );
            views(c, &sql, &[&user.0, &after.0, &sql_limit(limit)]).await?
        }
        SyncFrom::Device => unreachable!("resolved above"),
    };
    Ok(Backlog::page(messages, from, limit))
}

#[cfg(test)]
mod tests {
    use super::{chat_cursor, search_words};

    #[test]
    fn search_words_keep_only_words() {
        assert_eq!(search_words("hello world").as_deref(), Some("hello world"));
        assert_eq!(search_words("a\" OR 1=1 NEAR(").as_deref(), Some("a OR 1 1 NEAR"));
        assert_eq!(search_words("'; DROP TABLE messages; --").as_deref(), Some("DROP TABLE messages"));
        assert_eq!(search_words("fox:* & !dog | <->").as_deref(), Some("fox dog"));
        assert_eq!(search_words("  ** "), None);
        assert_eq!(search_words(&"w ".repeat(40)).map(|s| s.split(' ').count()), Some(16), "at most 16 words");
    }

    #[test]
    fn chat_cursors_parse_or_are_invalid() {
        assert_eq!(chat_cursor(None).unwrap(), (i64::MAX, String::new()));
        assert_eq!(chat_cursor(Some("42|d:1:2")).unwrap(), (42, "d:1:2".to_owned()));
        assert!(chat_cursor(Some("garbage")).is_err());
        assert!(chat_cursor(Some("x|g:1")).is_err());
    }
}
