//! The connection pool, the schema name, error mapping and small query helpers.
//!
//! Every connection is opened with `-c search_path=<schema>` in its startup packet, so every
//! unqualified table name in this module's SQL resolves to the store's schema and nothing
//! ever falls through to `public`.

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::time::Duration;
use switchboard_core::store::StoreError;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Longest wait for a pooled connection, for a new connection to be set up, and for a
/// returned one to be checked: past it the call fails with [`StoreError::Unavailable`]
/// instead of queueing forever.
pub const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Query parameters, as tokio-postgres takes them.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A validated schema name: `[a-z_][a-z0-9_]*`, at most 63 bytes.
///
/// Lower case only, so the name means the same quoted or not; it is spliced into
/// `search_path` and DDL, which is safe because nothing else gets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaName(String);

impl SchemaName {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when it is empty, too long or has other characters.
    pub fn new(name: &str) -> Result<Self, StoreError> {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && name.len() <= 63 {
            Ok(Self(name.to_owned()))
        } else {
            Err(StoreError::Invalid("schema name must match [a-z_][a-z0-9_]* (at most 63 bytes)"))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Builds the pool. Connections are opened lazily, on first use.
///
/// # Errors
/// [`StoreError::Invalid`] for an unparsable URL; [`StoreError::Backend`] if the pool cannot
/// be built.
pub fn build(url: &str, schema: &SchemaName, size: usize) -> Result<Pool, StoreError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|error| {
        tracing::warn!(%error, "unparsable PostgreSQL URL");
        StoreError::Invalid("unparsable PostgreSQL URL")
    })?;
    // Keep any `options` the URL already carries; ours comes last, so it wins.
    let options = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c search_path={}", schema.as_str()),
        _ => format!("-c search_path={}", schema.as_str()),
    };
    cfg.options(&options);
    if cfg.get_application_name().is_none() {
        cfg.application_name("switchboard");
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(POOL_TIMEOUT);
    }
    let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

/// Maps a PostgreSQL error: a lost or refused connection (and the server shutting down or
/// out of connection slots) is [`StoreError::Unavailable`], retryable, with the cause logged;
/// anything else is [`StoreError::Backend`] with the cause kept.
pub fn db(e: tokio_postgres::Error) -> StoreError {
    if is_unavailable(&e) {
        tracing::warn!(error = %e, "PostgreSQL unavailable");
        StoreError::Unavailable("database unavailable")
    } else {
        StoreError::Backend(Box::new(e))
    }
}

fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception.
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No SQLSTATE: an I/O failure (refused, reset, timed out) or a protocol error.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Maps a pool failure: no connection within [`POOL_TIMEOUT`], or none can be opened.
pub fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => db(e),
        other => {
            tracing::warn!(error = %other, "no PostgreSQL connection");
            StoreError::Unavailable("no database connection")
        }
    }
}

/// Maps a failed COMMIT: whatever the cause, nothing was stored, and a retry may succeed.
pub fn commit_err(e: tokio_postgres::Error) -> StoreError {
    match db(e) {
        StoreError::Backend(cause) => {
            tracing::warn!(error = %cause, "commit failed");
            StoreError::Unavailable("commit failed")
        }
        other => other,
    }
}

/// Runs a query (statement prepared once per connection) and returns its rows.
pub async fn query(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&st, params).await.map_err(db)
}

/// Runs a query that returns at most one row.
pub async fn query_opt(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&st, params).await.map_err(db)
}

/// Runs a query that returns exactly one row.
pub async fn query_one(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query_one(&st, params).await.map_err(db)
}

/// Runs a statement and returns the number of rows it touched.
pub async fn execute(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&st, params).await.map_err(db)
}

/// Whether a query returns any row.
pub async fn exists(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<bool, StoreError> {
    Ok(query_opt(c, sql, params).await?.is_some())
}

/// Reads column `i`, mapping a type mismatch to a backend error.
pub fn col<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(db)
}

#[cfg(test)]
mod tests {
    use super::SchemaName;

    #[test]
    fn schema_names_are_plain_lowercase_identifiers() {
        for ok in ["switchboard", "sbtest_0123abcd", "_x", "a1"] {
            assert!(SchemaName::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "1abc", "Switchboard", "a-b", "a b", "a;drop", "a\"b", "é", long.as_str()] {
            assert!(SchemaName::new(bad).is_err(), "{bad}");
        }
    }
}
