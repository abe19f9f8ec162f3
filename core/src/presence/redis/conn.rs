//! One connection type over single Redis and Redis Cluster.

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use std::time::Duration;

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server, e.g. `redis://127.0.0.1:6379/`.
    Single(String),
    /// Seed nodes of a Redis Cluster; the rest of the topology is discovered.
    Cluster(Vec<String>),
}

/// One connection type over single and cluster Redis; both multiplex concurrent requests.
#[derive(Clone)]
pub(super) enum Conn {
    /// Reconnects by itself.
    Single(ConnectionManager),
    /// Follows slot moves and reconnects by itself.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects, with `timeout` bounding the connect and each answer.
    pub(super) async fn open(target: &RedisTarget, timeout: Duration) -> Result<Self, RedisError> {
        match target {
            RedisTarget::Single(url) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout));
                Ok(Self::Single(Client::open(url.as_str())?.get_connection_manager_with_config(cfg).await?))
            }
            RedisTarget::Cluster(seeds) => {
                let client = ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Room for a MOVED/ASK redirect or a reconnect within one call.
                    .overall_response_timeout(Some(timeout * 3))
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
