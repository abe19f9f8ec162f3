//! Messages, receipts, device cursors, history, chat list and search: plain functions on a
//! connection, run by [`super::SqliteStore`] on the writer thread or a reader.

use super::pool::backend;
use super::users;
use super::QueryCached;
use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Row};
use std::collections::HashMap;
use switchboard_core::ids::{ConversationId, DeviceId, MessageId, UserId};
use switchboard_core::protocol::{MediaRef, MessageView, ReceiptStatus, Target};
use switchboard_core::store::{Appended, Backlog, ChatSummary, NewMessage, Page, ReceiptNotices, StoreError, SyncFrom};
use switchboard_core::time::now_ms;

const MSG_COLS: &str = "m.id, m.conv_id, m.seq, m.sender_id, m.body, m.media_id, m.created_at, m.client_msg_id, \
                        md.content_type, md.size";
const MSG_FROM: &str = "messages m LEFT JOIN media md ON md.id = m.media_id";
const MEDIA_JOIN: &str = "LEFT JOIN media md ON md.id = m.media_id";

fn view_row(r: &Row<'_>) -> rusqlite::Result<(MessageView, ConversationId)> {
    let conv_s: String = r.get(1)?;
    let conv = ConversationId::parse(&conv_s).ok_or(rusqlite::Error::InvalidColumnType(
        1,
        "conv_id".into(),
        rusqlite::types::Type::Text,
    ))?;
    let sender = UserId(r.get(3)?);
    let media = r.get::<_, Option<String>>(5)?.map(|media_id| MediaRef { media_id, content_type: None, size: None });
    let media = match media {
        Some(mut m) => {
            m.content_type = r.get(8)?;
            m.size = r.get(9)?;
            Some(m)
        }
        None => None,
    };
    let (receiver_id, group_id) = match conv {
        ConversationId::Direct(..) => (conv.peer_of(sender), None),
        ConversationId::Group(g) => (None, Some(g)),
    };
    let view = MessageView {
        message_id: MessageId(r.get(0)?),
        sender_id: sender,
        receiver_id,
        group_id,
        message: r.get(4)?,
        media,
        conversation_seq: r.get(2)?,
        timestamp: r.get(6)?,
        client_msg_id: r.get(7)?,
    };
    Ok((view, conv))
}

fn views(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<MessageView>, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(backend)?;
    let rows = st.query_map(p, |r| view_row(r).map(|(v, _)| v)).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub fn message(c: &Connection, id: MessageId) -> Result<Option<(MessageView, ConversationId)>, StoreError> {
    c.query_row_cached(&format!("SELECT {MSG_COLS} FROM {MSG_FROM} WHERE m.id = ?1"), [id.0], view_row)
        .optional()
        .map_err(backend)
}

/// One append job's view of a conversation: read on its first message, kept up to date in
/// memory by the job's writes, and stored once by [`Batch::finish`], so the `conversations`
/// row and the authors' marks are written once per conversation per job rather than once or
/// twice per message.
struct Conv {
    key: String,
    /// Whether its `conversations` row exists (a direct conversation is created by its first
    /// message, at [`Batch::finish`]).
    exists: bool,
    last_seq: i64,
    last_message_id: i64,
    /// Every member, ascending.
    members: Vec<UserId>,
    /// Authors of this job's messages here, each with the highest seq they wrote.
    authors: Vec<(UserId, i64)>,
}

/// An append job on the writer's connection: checks and writes its messages one by one, in
/// order, and then [`Batch::finish`] stores what it kept in memory. Every refusal happens in
/// the read-only checks, before anything of its message is written, so a job needs no
/// savepoint per message; an error from a write leaves the job half written and must fail the
/// whole job (its caller rolls back).
pub struct Batch<'c> {
    c: &'c Connection,
    convs: HashMap<ConversationId, Conv>,
    /// Whether a receiver exists (not deleted), per user asked about.
    receivers: HashMap<UserId, bool>,
    /// The first and last id written: one writer, so every id between is this job's.
    new_ids: Option<(i64, i64)>,
    /// The statements run per message or per conversation, each taken from the connection's
    /// statement cache once per job rather than at every use (a lookup hashes the SQL text).
    insert_message: Option<CachedStatement<'c>>,
    load_conv: Option<CachedStatement<'c>>,
    user_exists: Option<CachedStatement<'c>>,
}

/// The statement in `slot`, prepared (through the cache) on first use.
fn stmt<'a, 'c>(c: &'c Connection, slot: &'a mut Option<CachedStatement<'c>>, sql: &str) -> Result<&'a mut CachedStatement<'c>, StoreError> {
    match slot {
        Some(st) => Ok(st),
        None => Ok(slot.insert(c.prepare_cached(sql).map_err(backend)?)),
    }
}

impl<'c> Batch<'c> {
    pub fn new(c: &'c Connection) -> Self {
        Self {
            c,
            convs: HashMap::new(),
            receivers: HashMap::new(),
            new_ids: None,
            insert_message: None,
            load_conv: None,
            user_exists: None,
        }
    }

    /// Appends one message. The outer error is a failed write (the job must be rolled
    /// back); the inner one a refusal of this message alone, which wrote nothing.
    pub fn append(&mut self, m: &NewMessage) -> Result<Result<Appended, StoreError>, StoreError> {
        let conv = m.target.conversation(m.sender);
        let media = match self.check(m, conv) {
            Ok(media) => media,
            // A resend is answered with the original even where a new send would be refused.
            Err(refused) => {
                return Ok(match self.duplicate(m) {
                    Ok(Some(a)) => Ok(a),
                    Ok(None) => Err(refused),
                    Err(e) => Err(e),
                })
            }
        };
        let c = self.c;
        let cv = self.convs.get_mut(&conv).expect("loaded by check");
        let seq = cv.last_seq + 1;
        let ts = now_ms();
        // A resend hits the dedupe index here: nothing is written and the original answered.
        let inserted = stmt(
            c,
            &mut self.insert_message,
            "INSERT INTO messages (conv_id, seq, sender_id, sender_device, client_msg_id, body, media_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL DO NOTHING",
        )?
        .execute(params![cv.key, seq, m.sender.0, m.sender_device.0, m.client_msg_id, m.text, m.media_id, ts])
        .map_err(backend)?;
        if inserted == 0 {
            return Ok(match self.duplicate(m) {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(StoreError::NotFound("original of a resend")),
                Err(e) => Err(e),
            });
        }
        let id = c.last_insert_rowid();
        cv.last_seq = seq;
        cv.last_message_id = id;
        match cv.authors.iter_mut().find(|(u, _)| *u == m.sender) {
            Some(a) => a.1 = seq,
            None => cv.authors.push((m.sender, seq)),
        }
        self.new_ids = Some(self.new_ids.map_or((id, id), |(first, _)| (first, id)));
        let recipients: Vec<UserId> = cv.members.iter().copied().filter(|u| *u != m.sender).collect();
        let view = m.stored_view(MessageId(id), seq, ts, media);
        Ok(Ok(Appended { view, conversation: conv, recipients, duplicate: false }))
    }

    /// The read-only half of an append: the receiver or membership, and the media reference.
    fn check(&mut self, m: &NewMessage, conv: ConversationId) -> Result<Option<MediaRef>, StoreError> {
        match m.target {
            Target::User(u) => {
                let exists = match self.receivers.get(&u) {
                    Some(&e) => e,
                    None => {
                        let e = stmt(self.c, &mut self.user_exists, "SELECT 1 FROM users WHERE id = ?1 AND deleted_at IS NULL")?
                            .exists([u.0])
                            .map_err(backend)?;
                        self.receivers.insert(u, e);
                        e
                    }
                };
                if !exists {
                    return Err(StoreError::NotFound("receiver"));
                }
                self.conv(conv, Some([m.sender, u]))?;
            }
            Target::Group(g) => {
                if !self.conv(conv, None)?.members.contains(&m.sender) {
                    return Err(match users::group(self.c, g)? {
                        Some(_) => StoreError::Forbidden("not a member of this group"),
                        None => StoreError::NotFound("group"),
                    });
                }
            }
        }
        Ok(match &m.media_id {
            Some(id) => {
                let md = users::media_for(self.c, m.sender, id)?.ok_or(StoreError::NotFound("media"))?;
                Some(MediaRef { media_id: md.media_id, content_type: Some(md.content_type), size: Some(md.size) })
            }
            None => None,
        })
    }

    /// The conversation, read on first use (its row and members in one statement). A direct
    /// one not yet stored starts empty with both `direct` users as members (stored with its
    /// first message).
    fn conv(&mut self, conv: ConversationId, direct: Option<[UserId; 2]>) -> Result<&mut Conv, StoreError> {
        use std::collections::hash_map::Entry;
        let e = match self.convs.entry(conv) {
            Entry::Occupied(e) => return Ok(e.into_mut()),
            Entry::Vacant(e) => e,
        };
        let key = conv.to_string();
        let st = stmt(
            self.c,
            &mut self.load_conv,
            "SELECT c.last_seq, c.last_message_id, m.user_id FROM conversations c
             LEFT JOIN members m ON m.conv_id = c.id WHERE c.id = ?1",
        )?;
        let mut rows = st.query([&key]).map_err(backend)?;
        let (mut exists, mut last_seq, mut last_message_id, mut members) = (false, 0, 0, Vec::new());
        while let Some(r) = rows.next().map_err(backend)? {
            (exists, last_seq, last_message_id) = (true, r.get(0).map_err(backend)?, r.get(1).map_err(backend)?);
            if let Some(u) = r.get::<_, Option<i64>>(2).map_err(backend)? {
                members.push(UserId(u));
            }
        }
        drop(rows);
        members.sort_unstable();
        if let (false, Some([a, b])) = (exists, direct) {
            members = vec![a.min(b), a.max(b)];
            members.dedup();
        }
        // Every group has its conversation row (`users::create_group`): without one, no members.
        Ok(e.insert(Conv { key, exists, last_seq, last_message_id, members, authors: Vec::new() }))
    }

    /// The stored original of a resend, if `m` is one.
    fn duplicate(&self, m: &NewMessage) -> Result<Option<Appended>, StoreError> {
        let Some(cid) = &m.client_msg_id else { return Ok(None) };
        let sql = format!("SELECT {MSG_COLS} FROM {MSG_FROM} WHERE m.sender_id = ?1 AND m.client_msg_id = ?2");
        let found = self.c.prepare_cached(&sql).and_then(|mut st| st.query_row(params![m.sender.0, cid], view_row).optional());
        Ok(found
            .map_err(backend)?
            .map(|(view, conversation)| Appended { view, conversation, recipients: Vec::new(), duplicate: true }))
    }

    /// Stores what the job kept in memory: each written conversation's sequence and last
    /// message (creating a new direct one with its members), the authors' own marks (an
    /// author has, by definition, seen their own message), and the new messages' inbox rows,
    /// in one statement. The search index follows on its own thread (`super::search`).
    pub fn finish(self) -> Result<(), StoreError> {
        let c = self.c;
        let (mut update, mut create, mut member, mut marks) = (None, None, None, None);
        for cv in self.convs.values().filter(|cv| !cv.authors.is_empty()) {
            if cv.exists {
                stmt(c, &mut update, "UPDATE conversations SET last_seq = ?2, last_message_id = ?3 WHERE id = ?1")?
                    .execute(params![cv.key, cv.last_seq, cv.last_message_id])
                    .map_err(backend)?;
                let marks = stmt(
                    c,
                    &mut marks,
                    "UPDATE members SET delivered_seq = MAX(delivered_seq, ?3), read_seq = MAX(read_seq, ?3)
                     WHERE conv_id = ?1 AND user_id = ?2",
                )?;
                for (u, seq) in &cv.authors {
                    marks.execute(params![cv.key, u.0, seq]).map_err(backend)?;
                }
            } else {
                stmt(c, &mut create, "INSERT INTO conversations (id, last_seq, last_message_id) VALUES (?1, ?2, ?3)")?
                    .execute(params![cv.key, cv.last_seq, cv.last_message_id])
                    .map_err(backend)?;
                let member = stmt(
                    c,
                    &mut member,
                    "INSERT OR IGNORE INTO members (conv_id, user_id, delivered_seq, read_seq) VALUES (?1, ?2, ?3, ?3)",
                )?;
                for u in &cv.members {
                    let seen = cv.authors.iter().find(|(a, _)| a == u).map_or(0, |(_, seq)| *seq);
                    member.execute(params![cv.key, u.0, seen]).map_err(backend)?;
                }
            }
        }
        if let Some((first, last)) = self.new_ids {
            fill_inboxes(c, first, last)?;
        }
        Ok(())
    }
}

/// Appends one message as a job of its own ([`Batch`]); an error may leave part of it
/// written: the caller rolls back (a savepoint).
pub fn append(c: &Connection, m: &NewMessage) -> Result<Appended, StoreError> {
    let mut b = Batch::new(c);
    let r = b.append(m)?;
    b.finish()?;
    r
}

/// Puts messages `first..=last` (written in this transaction, after their conversations'
/// members) in every member's inbox, the sender's included, in one statement: one small
/// statement per row was a fifth of the writer's time.
fn fill_inboxes(c: &Connection, first: i64, last: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO inbox (user_id, message_id)
         SELECT mb.user_id, m.id FROM messages m JOIN members mb ON mb.conv_id = m.conv_id WHERE m.id BETWEEN ?1 AND ?2",
    )
    .and_then(|mut st| st.execute(params![first, last]))
    .map(|_| ())
    .map_err(backend)
}

pub fn direct_peers(c: &Connection, user: UserId) -> Result<Vec<UserId>, StoreError> {
    let mut st = c
        .prepare_cached(
            "SELECT DISTINCT other.user_id FROM members mine JOIN members other ON other.conv_id = mine.conv_id
             WHERE mine.user_id = ?1 AND mine.conv_id LIKE 'd:%' AND other.user_id != ?1",
        )
        .map_err(backend)?;
    let rows = st.query_map([user.0], |r| Ok(UserId(r.get(0)?))).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub fn history(c: &Connection, conv: ConversationId, viewer: UserId, before: Option<i64>, limit: usize) -> Result<Page<MessageView>, StoreError> {
    let conv_s = conv.to_string();
    let joined: i64 = c
        .query_row_cached("SELECT joined_seq FROM members WHERE conv_id = ?1 AND user_id = ?2", params![conv_s, viewer.0], |r| r.get(0))
        .optional()
        .map_err(backend)?
        .unwrap_or(0);
    let sql = format!(
        "SELECT {MSG_COLS} FROM {MSG_FROM} WHERE m.conv_id = ?1 AND m.seq > ?2 AND m.seq < ?3 ORDER BY m.seq DESC LIMIT ?4"
    );
    let mut items = views(c, &sql, params![conv_s, joined, before.unwrap_or(i64::MAX), limit as i64 + 1])?;
    let more = items.len() > limit;
    items.truncate(limit);
    items.reverse();
    let next_cursor = if more { items.first().map(|m| m.conversation_seq.to_string()) } else { None };
    Ok(Page { items, next_cursor })
}

pub fn chats(c: &Connection, user: UserId, cursor: Option<&str>, limit: usize) -> Result<Page<ChatSummary>, StoreError> {
    let (after_msg, after_conv) = match cursor {
        None => (i64::MAX, String::new()),
        Some(s) => {
            let (a, b) = s.split_once('|').ok_or(StoreError::Invalid("bad cursor"))?;
            (a.parse().map_err(|_| StoreError::Invalid("bad cursor"))?, b.to_owned())
        }
    };
    let mut st = c
        .prepare_cached(
            "SELECT c.id, c.last_message_id, mb.read_seq, mb.joined_seq FROM members mb
             JOIN conversations c ON c.id = mb.conv_id
             WHERE mb.user_id = ?1 AND (c.last_message_id < ?2 OR (c.last_message_id = ?2 AND c.id > ?3))
             ORDER BY c.last_message_id DESC, c.id ASC LIMIT ?4",
        )
        .map_err(backend)?;
    let rows: Vec<(String, i64, i64, i64)> = st
        .query_map(params![user.0, after_msg, after_conv, limit as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut last_key = None;
    for (conv_s, last_id, read_seq, joined_seq) in rows.into_iter().take(limit) {
        let conv = ConversationId::parse(&conv_s).ok_or(StoreError::Invalid("bad conversation id"))?;
        items.push(summary(c, user, conv, last_id, read_seq, joined_seq)?);
        last_key = Some(format!("{last_id}|{conv_s}"));
    }
    let next_cursor = if more { last_key } else { None };
    Ok(Page { items, next_cursor })
}

fn summary(c: &Connection, user: UserId, conv: ConversationId, last_id: i64, read_seq: i64, joined_seq: i64) -> Result<ChatSummary, StoreError> {
    let conv_s = conv.to_string();
    let read_seq = read_seq.max(joined_seq);
    // A member who joined later must not see, even as a preview, what came before.
    let last_message = if last_id > 0 {
        message(c, MessageId(last_id))?.map(|(v, _)| v).filter(|v| v.conversation_seq > joined_seq)
    } else {
        None
    };
    let unread_count: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM messages WHERE conv_id = ?1 AND seq > ?2 AND sender_id != ?3")
        .and_then(|mut st| st.query_row(params![conv_s, read_seq, user.0], |r| r.get(0)))
        .map_err(backend)?;
    let (kind, peer_id, group_id, title) = match conv {
        ConversationId::Direct(..) => {
            let peer = conv.peer_of(user);
            let name: Option<String> = c
                .query_row_cached("SELECT user_name FROM users WHERE id = ?1", [peer.map_or(0, |p| p.0)], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            ("direct", peer, None, name.unwrap_or_default())
        }
        ConversationId::Group(g) => {
            let name: Option<String> =
                c.query_row_cached("SELECT name FROM groups WHERE id = ?1", [g.0], |r| r.get(0)).optional().map_err(backend)?;
            ("group", None, Some(g), name.unwrap_or_default())
        }
    };
    Ok(ChatSummary { chat_id: conv_s, kind, peer_id, group_id, title, last_message, unread_count })
}

/// Turns free text into an FTS5 query: its words as the index's tokenizer cuts them (at most
/// 16, deduplicated), each quoted, all required; `None` when it has none. FTS5 itself cuts
/// them, in the connection's scratch table (`search::create_query_scratch`, made when the
/// reader attached the index), so a query term is always exactly one indexed token: the index
/// keeps no positions (`detail=none`, `super::search`), and a quoted term cut in two (a
/// hyphenated word, a Devanagari word) would be a phrase, which it cannot match. User input
/// never becomes query syntax.
fn fts_query(c: &Connection, q: &str) -> Result<Option<String>, StoreError> {
    c.prepare_cached("INSERT INTO temp.query_words(query_words) VALUES ('delete-all')")
        .and_then(|mut st| st.execute([]))
        .map_err(backend)?;
    c.prepare_cached("INSERT INTO temp.query_words(rowid, t) VALUES (1, ?1)")
        .and_then(|mut st| st.execute([q]))
        .map_err(backend)?;
    let mut st = c.prepare_cached("SELECT term FROM temp.query_vocab ORDER BY term LIMIT 16").map_err(backend)?;
    let words: Vec<String> = st.query_map([], |r| r.get(0)).map_err(backend)?.collect::<Result<_, _>>().map_err(backend)?;
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect();
    Ok((!quoted.is_empty()).then(|| quoted.join(" ")))
}

pub fn search(c: &Connection, user: UserId, q: &str, limit: usize) -> Result<Vec<MessageView>, StoreError> {
    let Some(fts) = fts_query(c, q)? else { return Err(StoreError::Invalid("query has no searchable words")) };
    let sql = format!(
        "SELECT {MSG_COLS} FROM search.messages_fts JOIN messages m ON m.id = messages_fts.rowid {MEDIA_JOIN}
         JOIN inbox i ON i.message_id = m.id AND i.user_id = ?1
         WHERE messages_fts MATCH ?2 ORDER BY m.id DESC LIMIT ?3"
    );
    views(c, &sql, params![user.0, fts, limit as i64])
}

pub fn advance_cursor(c: &Connection, user: UserId, device: &DeviceId, to: MessageId) -> Result<(), StoreError> {
    // Never past the newest message the user has, so a bogus id cannot hide future messages.
    c.prepare_cached(
        "INSERT INTO devices (user_id, device_id, cursor)
         SELECT ?1, ?2, MIN(?3, COALESCE((SELECT MAX(message_id) FROM inbox WHERE user_id = ?1), 0))
         ON CONFLICT (user_id, device_id) DO UPDATE SET cursor = MAX(COALESCE(cursor, 0), excluded.cursor)",
    )
    .and_then(|mut st| st.execute(params![user.0, device.0, to.0]))
    .map_err(backend)?;
    Ok(())
}

pub fn receipt(c: &Connection, user: UserId, device: &DeviceId, id: MessageId, status: ReceiptStatus) -> Result<ReceiptNotices, StoreError> {
    let (view, conv) = message(c, id)?.ok_or(StoreError::NotFound("message"))?;
    let received = c
        .prepare_cached("SELECT 1 FROM inbox WHERE user_id = ?1 AND message_id = ?2")
        .and_then(|mut st| st.exists(params![user.0, id.0]))
        .map_err(backend)?;
    if !received {
        return Err(StoreError::Forbidden("not a message you received"));
    }
    advance_cursor(c, user, device, id)?;
    if view.sender_id == user {
        return Ok(Vec::new());
    }
    let conv_s = conv.to_string();
    let marks: Option<(i64, i64)> = c
        .query_row_cached("SELECT delivered_seq, read_seq FROM members WHERE conv_id = ?1 AND user_id = ?2", params![conv_s, user.0], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(backend)?;
    let Some((delivered, read)) = marks else { return Ok(Vec::new()) };
    let seq = view.conversation_seq;
    let old = if status == ReceiptStatus::Read { read } else { delivered };
    if seq <= old {
        return Ok(Vec::new());
    }
    c.execute(
        "UPDATE members SET delivered_seq = MAX(delivered_seq, ?3),
                read_seq = CASE WHEN ?4 THEN MAX(read_seq, ?3) ELSE read_seq END
         WHERE conv_id = ?1 AND user_id = ?2",
        params![conv_s, user.0, seq, status == ReceiptStatus::Read],
    )
    .map_err(backend)?;
    let mut st = c
        .prepare_cached(
            "SELECT sender_id, MAX(id) FROM messages WHERE conv_id = ?1 AND seq > ?2 AND seq <= ?3 AND sender_id != ?4
             GROUP BY sender_id",
        )
        .map_err(backend)?;
    let rows = st.query_map(params![conv_s, old, seq, user.0], |r| Ok((UserId(r.get(0)?), MessageId(r.get(1)?)))).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub fn backlog(c: &Connection, user: UserId, device: &DeviceId, from: SyncFrom, limit: usize) -> Result<Backlog, StoreError> {
    let from = match from {
        SyncFrom::Device => {
            let cursor: Option<Option<i64>> = c
                .query_row_cached("SELECT cursor FROM devices WHERE user_id = ?1 AND device_id = ?2", params![user.0, device.0], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            match cursor.flatten() {
                Some(cur) => SyncFrom::After(MessageId(cur)),
                None => SyncFrom::Undelivered(MessageId(0)),
            }
        }
        other => other,
    };
    let messages = match from {
        SyncFrom::After(after) => views(
            c,
            &format!(
                "SELECT {MSG_COLS} FROM inbox i JOIN messages m ON m.id = i.message_id {MEDIA_JOIN}
                 WHERE i.user_id = ?1 AND i.message_id > ?2 AND NOT (m.sender_id = ?1 AND m.sender_device = ?3)
                 ORDER BY i.message_id LIMIT ?4"
            ),
            params![user.0, after.0, device.0, limit as i64],
        )?,
        SyncFrom::Undelivered(after) => views(
            c,
            &format!(
                "SELECT {MSG_COLS} FROM inbox i JOIN messages m ON m.id = i.message_id {MEDIA_JOIN}
                 JOIN members mb ON mb.conv_id = m.conv_id AND mb.user_id = i.user_id
                 WHERE i.user_id = ?1 AND i.message_id > ?2 AND m.sender_id != ?1 AND m.seq > mb.delivered_seq
                 ORDER BY i.message_id LIMIT ?3"
            ),
            params![user.0, after.0, limit as i64],
        )?,
        SyncFrom::Device => unreachable!("resolved above"),
    };
    Ok(Backlog::page(messages, from, limit))
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn fts_query_quotes_the_tokenizers_words_and_drops_syntax() {
        let c = rusqlite::Connection::open_in_memory().expect("connection");
        crate::sqlite::search::create_query_scratch(&c).expect("scratch tables");
        let q = |text: &str| fts_query(&c, text).expect("tokenized");
        assert_eq!(q("hello world").as_deref(), Some("\"hello\" \"world\""));
        assert_eq!(q("a\" OR 1=1 NEAR(").as_deref(), Some("\"1\" \"a\" \"near\" \"or\""));
        assert_eq!(q("Wor-ld café").as_deref(), Some("\"cafe\" \"ld\" \"wor\""), "cut and folded as the index is");
        assert_eq!(q("  ** "), None);
        assert_eq!(q("again"), Some("\"again\"".into()), "the scratch table starts empty each time");
    }
}
