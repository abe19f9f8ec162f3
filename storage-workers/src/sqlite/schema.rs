//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Append a new entry to [`MIGRATIONS`] to change the schema; never edit a released one.

use rusqlite::Connection;

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name     TEXT NOT NULL,
    email         TEXT UNIQUE COLLATE NOCASE,
    phone         TEXT UNIQUE,
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER,
    deleted_at    INTEGER
);
CREATE TABLE refresh_tokens (
    jti        TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    device_id  TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_by_device ON refresh_tokens(user_id, device_id);
CREATE TABLE devices (
    user_id   INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    cursor    INTEGER,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;
CREATE TABLE groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    created_by INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE conversations (
    id              TEXT PRIMARY KEY,
    group_id        INTEGER,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    last_message_id INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE members (
    conv_id       TEXT NOT NULL,
    user_id       INTEGER NOT NULL,
    joined_seq    INTEGER NOT NULL DEFAULT 0,
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    read_seq      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_id);
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    conv_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    sender_id     INTEGER NOT NULL,
    sender_device TEXT NOT NULL,
    client_msg_id TEXT,
    body          TEXT NOT NULL,
    media_id      TEXT,
    created_at    INTEGER NOT NULL,
    UNIQUE (conv_id, seq)
);
CREATE UNIQUE INDEX messages_dedupe ON messages(sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_by_media ON messages(media_id) WHERE media_id IS NOT NULL;
CREATE TABLE inbox (
    user_id    INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, message_id)
) WITHOUT ROWID;
CREATE TABLE media (
    id           TEXT PRIMARY KEY,
    uploader     INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', content_rowid='id');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
END;
"#,
// 2: messages are indexed for search once per write batch (since 5: by `messages::index_pending`), not
// by a trigger per row: with the trigger, every later write statement of the batch flushed the
// full-text index (a statement savepoint), which the store bench measured at a third of an append.
r#"
DROP TRIGGER messages_fts_insert;
"#,
// 3: operators can disable an account (admin API, `chatctl user disable`); NULL = enabled.
r#"
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
"#,
// 4: a cheaper append (the store bench in benches/MICRO.md). Rebuilds `messages` without
// AUTOINCREMENT: every INSERT read and rewrote its `sqlite_sequence` row. Ids stay as they
// were, and the next one is still the highest plus one: messages are never deleted, so no id
// can be handed out twice. Rebuilds the full-text index without per-document sizes
// (`columnsize=0`; only ranking functions read them, and search orders by id), and lets each
// level collect 16 segments before merging them instead of 4 (`automerge`): the merges were
// most of the index's cost. Takes time proportional to the number of messages, once.
r#"
DROP TABLE messages_fts;
CREATE TABLE messages_new (
    id            INTEGER PRIMARY KEY,
    conv_id       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    sender_id     INTEGER NOT NULL,
    sender_device TEXT NOT NULL,
    client_msg_id TEXT,
    body          TEXT NOT NULL,
    media_id      TEXT,
    created_at    INTEGER NOT NULL,
    UNIQUE (conv_id, seq)
);
INSERT INTO messages_new (id, conv_id, seq, sender_id, sender_device, client_msg_id, body, media_id, created_at)
    SELECT id, conv_id, seq, sender_id, sender_device, client_msg_id, body, media_id, created_at FROM messages ORDER BY id;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE UNIQUE INDEX messages_dedupe ON messages(sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_by_media ON messages(media_id) WHERE media_id IS NOT NULL;
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', content_rowid='id', columnsize=0);
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', 16);
"#,
// 5: the full-text index is brought up to date after the commit instead of in it
// (`messages::index_pending`); this row says how far it goes. Everything stored so far is
// indexed already.
r#"
CREATE TABLE search_state (
    id           INTEGER PRIMARY KEY CHECK (id = 0),
    last_indexed INTEGER NOT NULL
);
INSERT INTO search_state (id, last_indexed) SELECT 0, COALESCE(MAX(id), 0) FROM messages;
"#,
// 6: the full-text index moves to a file of its own, `search.db`, written by its own thread
// (`super::search`), which rebuilds it from the messages in the background.
r#"
DROP TABLE messages_fts;
DROP TABLE search_state;
"#];

/// Brings the database to the newest schema version.
///
/// # Errors
/// When a migration fails (the transaction is rolled back), or the database is newer than
/// this binary.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<u32> {
    apply(conn, MIGRATIONS, "store")
}

/// Applies the `migrations` a database (`what`, for the log) has not had yet, each in its own
/// transaction, tracked in `PRAGMA user_version`; returns the version reached.
///
/// # Errors
/// As [`migrate`].
pub fn apply(conn: &mut Connection, migrations: &[&str], what: &str) -> rusqlite::Result<u32> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > migrations.len() {
        return Err(rusqlite::Error::InvalidQuery);
    }
    for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
        tracing::info!(database = what, version = i + 1, "applied schema migration");
    }
    Ok(migrations.len() as u32)
}
