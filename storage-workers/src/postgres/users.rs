//! Users, refresh tokens, groups and media metadata: async functions on a connection or a
//! transaction, called by [`super::PgStore`]. Each mirrors the function of the same name in
//! `sqlite::users`; where SQLite relied on its single writer, a row lock (`FOR UPDATE`) gives
//! the same outcome under concurrent transactions.

use super::pool::{col, db, execute, exists, query, query_one, query_opt};
use deadpool_postgres::GenericClient;
use switchboard_core::ids::{ConversationId, DeviceId, GroupId, MessageId, UserId};
use switchboard_core::store::{
    Account, DeviceCursor, Group, Media, NewUser, RefreshOutcome, StoreError, User, UserLookup, UserPatch,
};
use switchboard_core::time::{now_ms, now_secs};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

const USER_COLS: &str = "id, user_name, email, phone, last_seen";

fn user_row(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        user_id: UserId(col(r, 0)?),
        user_name: col(r, 1)?,
        email: col::<Option<String>>(r, 2)?.unwrap_or_default(),
        phone_number: col::<Option<String>>(r, 3)?.unwrap_or_default(),
        last_seen: col(r, 4)?,
    })
}

/// Which unique field a unique violation hit, as the API names it.
fn conflict(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        match e.as_db_error().and_then(|d| d.constraint()) {
            Some("users_email_key") => return StoreError::Conflict("email"),
            Some("users_phone_key") => return StoreError::Conflict("phoneNumber"),
            _ => {}
        }
    }
    db(e)
}

pub async fn create_user(c: &impl GenericClient, u: &NewUser) -> Result<User, StoreError> {
    let sql = format!(
        "INSERT INTO users (user_name, email, phone, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)
         RETURNING {USER_COLS}"
    );
    let st = c.prepare_cached(&sql).await.map_err(db)?;
    let row = c
        .query_one(&st, &[&u.user_name, &u.email, &u.phone_number, &u.password_hash, &now_ms()])
        .await
        .map_err(conflict)?;
    user_row(&row)
}

pub async fn user(c: &impl GenericClient, id: UserId) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1 AND deleted_at IS NULL");
    query_opt(c, &sql, &[&id.0]).await?.as_ref().map(user_row).transpose()
}

pub async fn credentials(c: &impl GenericClient, email: &str) -> Result<Option<(User, String)>, StoreError> {
    let sql = format!("SELECT {USER_COLS}, password_hash FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL AND disabled_at IS NULL");
    match query_opt(c, &sql, &[&email]).await? {
        Some(r) => Ok(Some((user_row(&r)?, col::<Option<String>>(&r, 5)?.unwrap_or_default()))),
        None => Ok(None),
    }
}

/// Runs in a transaction: a conflict leaves the user unchanged.
pub async fn update_user(c: &impl GenericClient, id: UserId, p: &UserPatch) -> Result<User, StoreError> {
    if !exists(c, "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", &[&id.0]).await? {
        return Err(StoreError::NotFound("user"));
    }
    let st = c
        .prepare_cached(
            "UPDATE users SET user_name = COALESCE($2, user_name), email = COALESCE($3, email),
                    phone = COALESCE($4, phone), password_hash = COALESCE($5, password_hash) WHERE id = $1",
        )
        .await
        .map_err(db)?;
    c.execute(&st, &[&id.0, &p.user_name, &p.email, &p.phone_number, &p.password_hash]).await.map_err(conflict)?;
    if p.password_hash.is_some() {
        execute(c, "DELETE FROM refresh_tokens WHERE user_id = $1", &[&id.0]).await?;
    }
    user(c, id).await?.ok_or(StoreError::NotFound("user"))
}

/// Runs in a transaction.
pub async fn delete_user(c: &impl GenericClient, id: UserId) -> Result<(), StoreError> {
    let n = execute(
        c,
        "UPDATE users SET deleted_at = $2, email = NULL, phone = NULL, password_hash = NULL,
                user_name = 'Deleted user' WHERE id = $1 AND deleted_at IS NULL",
        &[&id.0, &now_ms()],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound("user"));
    }
    execute(c, "DELETE FROM refresh_tokens WHERE user_id = $1", &[&id.0]).await?;
    execute(c, "DELETE FROM devices WHERE user_id = $1", &[&id.0]).await?;
    execute(c, "DELETE FROM members WHERE user_id = $1 AND conv_id LIKE 'g:%'", &[&id.0]).await?;
    Ok(())
}

/// Deleted and disabled users: those whose tokens are refused.
pub async fn deleted_users(c: &impl GenericClient) -> Result<Vec<UserId>, StoreError> {
    let sql = "SELECT id FROM users WHERE deleted_at IS NOT NULL OR disabled_at IS NOT NULL ORDER BY id";
    let rows = query(c, sql, &[]).await?;
    rows.iter().map(|r| col(r, 0).map(UserId)).collect()
}

pub async fn account(c: &impl GenericClient, who: &UserLookup) -> Result<Option<Account>, StoreError> {
    let cols = format!("SELECT {USER_COLS}, disabled_at, created_at FROM users");
    let row = match who {
        UserLookup::Id(id) => query_opt(c, &format!("{cols} WHERE id = $1 AND deleted_at IS NULL"), &[&id.0]).await?,
        UserLookup::Email(email) => {
            let sql = format!("{cols} WHERE lower(email) = lower($1) AND deleted_at IS NULL");
            query_opt(c, &sql, &[&email.trim()]).await?
        }
    };
    let Some(r) = row else { return Ok(None) };
    let user = user_row(&r)?;
    let disabled = col::<Option<i64>>(&r, 5)?.is_some();
    let created_at = col(&r, 6)?;
    let rows = query(c, "SELECT device_id, cursor FROM devices WHERE user_id = $1 ORDER BY device_id", &[&user.user_id.0]).await?;
    let devices = rows
        .iter()
        .map(|d| Ok(DeviceCursor { device_id: DeviceId(col(d, 0)?), cursor: col::<Option<i64>>(d, 1)?.map(MessageId) }))
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(Account { user, disabled, created_at, devices }))
}

pub async fn set_disabled(c: &impl GenericClient, id: UserId, disabled: bool) -> Result<(), StoreError> {
    let n = execute(
        c,
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN COALESCE(disabled_at, $3) ELSE NULL END
         WHERE id = $1 AND deleted_at IS NULL",
        &[&id.0, &disabled, &now_ms()],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound("user"));
    }
    Ok(())
}

pub async fn set_last_seen(c: &impl GenericClient, id: UserId, at: i64) -> Result<(), StoreError> {
    execute(c, "UPDATE users SET last_seen = $2 WHERE id = $1", &[&id.0, &at]).await?;
    Ok(())
}

pub async fn save_refresh(c: &impl GenericClient, jti: &str, user: UserId, device: &DeviceId, exp: i64) -> Result<(), StoreError> {
    execute(
        c,
        "INSERT INTO refresh_tokens (jti, user_id, device_id, expires_at) VALUES ($1, $2, $3, $4)",
        &[&jti, &user.0, &device.0, &exp],
    )
    .await?;
    Ok(())
}

/// Runs in a transaction. The row lock makes two concurrent uses of one token one `Valid`
/// and one `Reused`, never two `Valid`.
pub async fn use_refresh(c: &impl GenericClient, jti: &str) -> Result<RefreshOutcome, StoreError> {
    let row = query_opt(
        c,
        "SELECT user_id, device_id, expires_at, used_at FROM refresh_tokens WHERE jti = $1 FOR UPDATE",
        &[&jti],
    )
    .await?;
    let Some(row) = row else { return Ok(RefreshOutcome::Unknown) };
    let (user, device, exp, used): (i64, String, i64, Option<i64>) = (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?, col(&row, 3)?);
    if used.is_some() {
        // Reuse means the token leaked: end the whole session.
        execute(c, "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2", &[&user, &device]).await?;
        return Ok(RefreshOutcome::Reused);
    }
    if exp < now_secs() {
        return Ok(RefreshOutcome::Unknown);
    }
    execute(c, "UPDATE refresh_tokens SET used_at = $2 WHERE jti = $1", &[&jti, &now_secs()]).await?;
    Ok(RefreshOutcome::Valid { user: UserId(user), device: DeviceId(device) })
}

/// Runs in a transaction.
pub async fn create_group(c: &impl GenericClient, name: &str, creator: UserId) -> Result<Group, StoreError> {
    user(c, creator).await?.ok_or(StoreError::NotFound("user"))?;
    let row = query_one(
        c,
        "INSERT INTO groups (name, created_by, created_at) VALUES ($1, $2, $3) RETURNING id",
        &[&name, &creator.0, &now_ms()],
    )
    .await?;
    let id = GroupId(col(&row, 0)?);
    let conv = ConversationId::Group(id).to_string();
    execute(c, "INSERT INTO conversations (id, group_id) VALUES ($1, $2)", &[&conv, &id.0]).await?;
    execute(c, "INSERT INTO members (conv_id, user_id) VALUES ($1, $2)", &[&conv, &creator.0]).await?;
    group(c, id).await?.ok_or(StoreError::NotFound("group"))
}

pub async fn group(c: &impl GenericClient, id: GroupId) -> Result<Option<Group>, StoreError> {
    let row = query_opt(
        c,
        "SELECT g.name, g.created_by, ARRAY(SELECT mb.user_id FROM members mb WHERE mb.conv_id = $2 ORDER BY mb.user_id)
         FROM groups g WHERE g.id = $1",
        &[&id.0, &ConversationId::Group(id).to_string()],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    let members: Vec<i64> = col(&row, 2)?;
    Ok(Some(Group {
        group_id: id,
        group_name: col(&row, 0)?,
        created_by: UserId(col(&row, 1)?),
        members: members.into_iter().map(UserId).collect(),
    }))
}

/// Locks the conversation row, which `append_message` (schema migration 3) updates before it
/// reads the members: a membership change then lands wholly before or wholly after a
/// concurrent message (a new member either gets the message in their inbox, or joins after it
/// and never sees it).
async fn lock_conversation(c: &impl GenericClient, conv: &str) -> Result<Option<i64>, StoreError> {
    let row = query_opt(c, "SELECT last_seq FROM conversations WHERE id = $1 FOR UPDATE", &[&conv]).await?;
    row.map(|r| col(&r, 0)).transpose()
}

/// Runs in a transaction.
pub async fn add_member(c: &impl GenericClient, id: GroupId, u: UserId) -> Result<Group, StoreError> {
    group(c, id).await?.ok_or(StoreError::NotFound("group"))?;
    user(c, u).await?.ok_or(StoreError::NotFound("user"))?;
    let conv = ConversationId::Group(id).to_string();
    // A new member starts reading at the current end of the conversation.
    if let Some(last_seq) = lock_conversation(c, &conv).await? {
        execute(
            c,
            "INSERT INTO members (conv_id, user_id, joined_seq, delivered_seq, read_seq) VALUES ($1, $2, $3, $3, $3)
             ON CONFLICT DO NOTHING",
            &[&conv, &u.0, &last_seq],
        )
        .await?;
    }
    group(c, id).await?.ok_or(StoreError::NotFound("group"))
}

/// Runs in a transaction.
pub async fn remove_member(c: &impl GenericClient, id: GroupId, u: UserId) -> Result<Group, StoreError> {
    group(c, id).await?.ok_or(StoreError::NotFound("group"))?;
    let conv = ConversationId::Group(id).to_string();
    lock_conversation(c, &conv).await?;
    execute(c, "DELETE FROM members WHERE conv_id = $1 AND user_id = $2", &[&conv, &u.0]).await?;
    group(c, id).await?.ok_or(StoreError::NotFound("group"))
}

pub async fn save_media(c: &impl GenericClient, m: &Media) -> Result<(), StoreError> {
    execute(
        c,
        "INSERT INTO media (id, uploader, content_type, size, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[&m.media_id, &m.uploader.0, &m.content_type, &m.size, &now_ms()],
    )
    .await?;
    Ok(())
}

pub async fn media_for(c: &impl GenericClient, user: UserId, id: &str) -> Result<Option<Media>, StoreError> {
    let row = query_opt(
        c,
        "SELECT id, uploader, content_type, size FROM media WHERE id = $1 AND (uploader = $2 OR EXISTS (
             SELECT 1 FROM messages m JOIN inbox i ON i.message_id = m.id AND i.user_id = $2 WHERE m.media_id = $1))",
        &[&id, &user.0],
    )
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Media { media_id: col(&r, 0)?, uploader: UserId(col(&r, 1)?), content_type: col(&r, 2)?, size: col(&r, 3)? }))
}
