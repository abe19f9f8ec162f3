//! Users, refresh tokens, groups and media metadata: plain functions on a connection, run by
//! [`super::SqliteStore`] on the writer thread or a reader.

use super::pool::backend;
use super::QueryCached;
use rusqlite::{params, Connection, ErrorCode as SqlCode, OptionalExtension, Row};
use switchboard_core::ids::{ConversationId, DeviceId, GroupId, MessageId, UserId};
use switchboard_core::store::{
    Account, DeviceCursor, Group, Media, NewUser, RefreshOutcome, StoreError, User, UserLookup, UserPatch,
};
use switchboard_core::time::{now_ms, now_secs};

const USER_COLS: &str = "id, user_name, email, phone, last_seen";

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        user_id: UserId(r.get(0)?),
        user_name: r.get(1)?,
        email: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        phone_number: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
        last_seen: r.get(4)?,
    })
}

/// Which unique field a constraint error hit, as the API names it.
fn conflict(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(msg)) if f.code == SqlCode::ConstraintViolation => {
            StoreError::Conflict(if msg.contains("email") { "email" } else { "phoneNumber" })
        }
        _ => backend(e),
    }
}

pub fn create_user(c: &Connection, u: &NewUser) -> Result<User, StoreError> {
    c.execute(
        "INSERT INTO users (user_name, email, phone, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![u.user_name, u.email, u.phone_number, u.password_hash, now_ms()],
    )
    .map_err(conflict)?;
    user(c, UserId(c.last_insert_rowid()))?.ok_or(StoreError::NotFound("user"))
}

pub fn user(c: &Connection, id: UserId) -> Result<Option<User>, StoreError> {
    c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1 AND deleted_at IS NULL"))
        .and_then(|mut st| st.query_row([id.0], user_row).optional())
        .map_err(backend)
}

pub fn credentials(c: &Connection, email: &str) -> Result<Option<(User, String)>, StoreError> {
    c.query_row_cached(
        &format!("SELECT {USER_COLS}, password_hash FROM users WHERE email = ?1 AND deleted_at IS NULL AND disabled_at IS NULL"),
        [email],
        |r| Ok((user_row(r)?, r.get(5)?)),
    )
    .optional()
    .map_err(backend)
}

pub fn update_user(c: &Connection, id: UserId, p: &UserPatch) -> Result<User, StoreError> {
    user(c, id)?.ok_or(StoreError::NotFound("user"))?;
    c.execute(
        "UPDATE users SET user_name = COALESCE(?2, user_name), email = COALESCE(?3, email),
                phone = COALESCE(?4, phone), password_hash = COALESCE(?5, password_hash) WHERE id = ?1",
        params![id.0, p.user_name, p.email, p.phone_number, p.password_hash],
    )
    .map_err(conflict)?;
    if p.password_hash.is_some() {
        c.execute("DELETE FROM refresh_tokens WHERE user_id = ?1", [id.0]).map_err(backend)?;
    }
    user(c, id)?.ok_or(StoreError::NotFound("user"))
}

pub fn delete_user(c: &Connection, id: UserId) -> Result<(), StoreError> {
    let n = c
        .execute(
            "UPDATE users SET deleted_at = ?2, email = NULL, phone = NULL, password_hash = NULL,
                    user_name = 'Deleted user' WHERE id = ?1 AND deleted_at IS NULL",
            params![id.0, now_ms()],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NotFound("user"));
    }
    c.execute("DELETE FROM refresh_tokens WHERE user_id = ?1", [id.0]).map_err(backend)?;
    c.execute("DELETE FROM devices WHERE user_id = ?1", [id.0]).map_err(backend)?;
    c.execute("DELETE FROM members WHERE user_id = ?1 AND conv_id LIKE 'g:%'", [id.0]).map_err(backend)?;
    Ok(())
}

/// Deleted and disabled users: those whose tokens are refused.
pub fn deleted_users(c: &Connection) -> Result<Vec<UserId>, StoreError> {
    let mut st = c
        .prepare("SELECT id FROM users WHERE deleted_at IS NOT NULL OR disabled_at IS NOT NULL ORDER BY id")
        .map_err(backend)?;
    let rows = st.query_map([], |r| Ok(UserId(r.get(0)?))).map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

pub fn account(c: &Connection, who: &UserLookup) -> Result<Option<Account>, StoreError> {
    let sql = |by: &str| format!("SELECT {USER_COLS}, disabled_at, created_at FROM users WHERE {by} = ?1 AND deleted_at IS NULL");
    let row = |r: &Row<'_>| Ok((user_row(r)?, r.get::<_, Option<i64>>(5)?.is_some(), r.get::<_, i64>(6)?));
    let found = match who {
        UserLookup::Id(id) => c.query_row_cached(&sql("id"), [id.0], row),
        UserLookup::Email(email) => c.query_row_cached(&sql("email"), [email.trim()], row),
    }
    .optional()
    .map_err(backend)?;
    let Some((user, disabled, created_at)) = found else { return Ok(None) };
    let mut st = c.prepare_cached("SELECT device_id, cursor FROM devices WHERE user_id = ?1 ORDER BY device_id").map_err(backend)?;
    let devices = st
        .query_map([user.user_id.0], |r| {
            Ok(DeviceCursor { device_id: DeviceId(r.get(0)?), cursor: r.get::<_, Option<i64>>(1)?.map(MessageId) })
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    Ok(Some(Account { user, disabled, created_at, devices }))
}

pub fn set_disabled(c: &Connection, id: UserId, disabled: bool) -> Result<(), StoreError> {
    let n = c
        .execute(
            "UPDATE users SET disabled_at = CASE WHEN ?2 THEN COALESCE(disabled_at, ?3) ELSE NULL END
             WHERE id = ?1 AND deleted_at IS NULL",
            params![id.0, disabled, now_ms()],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NotFound("user"));
    }
    Ok(())
}

pub fn set_last_seen(c: &Connection, id: UserId, at: i64) -> Result<(), StoreError> {
    c.execute("UPDATE users SET last_seen = ?2 WHERE id = ?1", params![id.0, at]).map_err(backend)?;
    Ok(())
}

pub fn save_refresh(c: &Connection, jti: &str, user: UserId, device: &DeviceId, exp: i64) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO refresh_tokens (jti, user_id, device_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![jti, user.0, device.0, exp],
    )
    .map_err(backend)?;
    Ok(())
}

pub fn use_refresh(c: &Connection, jti: &str) -> Result<RefreshOutcome, StoreError> {
    let row: Option<(i64, String, i64, Option<i64>)> = c
        .query_row_cached("SELECT user_id, device_id, expires_at, used_at FROM refresh_tokens WHERE jti = ?1", [jti], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(backend)?;
    let Some((user, device, exp, used)) = row else { return Ok(RefreshOutcome::Unknown) };
    if used.is_some() {
        // Reuse means the token leaked: end the whole session.
        c.execute("DELETE FROM refresh_tokens WHERE user_id = ?1 AND device_id = ?2", params![user, device])
            .map_err(backend)?;
        return Ok(RefreshOutcome::Reused);
    }
    if exp < now_secs() {
        return Ok(RefreshOutcome::Unknown);
    }
    c.execute("UPDATE refresh_tokens SET used_at = ?2 WHERE jti = ?1", params![jti, now_secs()]).map_err(backend)?;
    Ok(RefreshOutcome::Valid { user: UserId(user), device: DeviceId(device) })
}

pub fn create_group(c: &Connection, name: &str, creator: UserId) -> Result<Group, StoreError> {
    user(c, creator)?.ok_or(StoreError::NotFound("user"))?;
    c.execute("INSERT INTO groups (name, created_by, created_at) VALUES (?1, ?2, ?3)", params![name, creator.0, now_ms()])
        .map_err(backend)?;
    let id = GroupId(c.last_insert_rowid());
    let conv = ConversationId::Group(id).to_string();
    c.execute("INSERT INTO conversations (id, group_id) VALUES (?1, ?2)", params![conv, id.0]).map_err(backend)?;
    c.execute("INSERT INTO members (conv_id, user_id) VALUES (?1, ?2)", params![conv, creator.0]).map_err(backend)?;
    group(c, id)?.ok_or(StoreError::NotFound("group"))
}

pub fn group(c: &Connection, id: GroupId) -> Result<Option<Group>, StoreError> {
    let head: Option<(String, i64)> = c
        .query_row_cached("SELECT name, created_by FROM groups WHERE id = ?1", [id.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(backend)?;
    let Some((group_name, created_by)) = head else { return Ok(None) };
    let mut st = c.prepare_cached("SELECT user_id FROM members WHERE conv_id = ?1 ORDER BY user_id").map_err(backend)?;
    let members = st
        .query_map([ConversationId::Group(id).to_string()], |r| Ok(UserId(r.get(0)?)))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    Ok(Some(Group { group_id: id, group_name, created_by: UserId(created_by), members }))
}

pub fn add_member(c: &Connection, id: GroupId, u: UserId) -> Result<Group, StoreError> {
    group(c, id)?.ok_or(StoreError::NotFound("group"))?;
    user(c, u)?.ok_or(StoreError::NotFound("user"))?;
    // A new member starts reading at the current end of the conversation.
    c.execute(
        "INSERT OR IGNORE INTO members (conv_id, user_id, joined_seq, delivered_seq, read_seq)
         SELECT id, ?2, last_seq, last_seq, last_seq FROM conversations WHERE id = ?1",
        params![ConversationId::Group(id).to_string(), u.0],
    )
    .map_err(backend)?;
    group(c, id)?.ok_or(StoreError::NotFound("group"))
}

pub fn remove_member(c: &Connection, id: GroupId, u: UserId) -> Result<Group, StoreError> {
    group(c, id)?.ok_or(StoreError::NotFound("group"))?;
    c.execute("DELETE FROM members WHERE conv_id = ?1 AND user_id = ?2", params![ConversationId::Group(id).to_string(), u.0])
        .map_err(backend)?;
    group(c, id)?.ok_or(StoreError::NotFound("group"))
}

pub fn save_media(c: &Connection, m: &Media) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO media (id, uploader, content_type, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![m.media_id, m.uploader.0, m.content_type, m.size, now_ms()],
    )
    .map_err(backend)?;
    Ok(())
}

pub fn media_for(c: &Connection, user: UserId, id: &str) -> Result<Option<Media>, StoreError> {
    c.prepare_cached(
        "SELECT id, uploader, content_type, size FROM media WHERE id = ?1 AND (uploader = ?2 OR EXISTS (
             SELECT 1 FROM messages m JOIN inbox i ON i.message_id = m.id AND i.user_id = ?2 WHERE m.media_id = ?1))",
    )
    .and_then(|mut st| {
        st.query_row(params![id, user.0], |r| {
            Ok(Media { media_id: r.get(0)?, uploader: UserId(r.get(1)?), content_type: r.get(2)?, size: r.get(3)? })
        })
        .optional()
    })
    .map_err(backend)
}
