//! The Lua scripts behind the writes that must read before they write.
//!
//! Each script touches exactly one key (`KEYS[1]`), so on Redis Cluster it runs on the shard
//! owning that key's slot. They are loaded once at connect (`SCRIPT LOAD` goes to every primary)
//! and called with `EVALSHA`; `redis::Script` reloads one after a `NOSCRIPT` (failover, restart).
//! Epochs are compared as decimal strings (longer is newer, then lexicographic), so a `u64`
//! never passes through Lua's doubles; expiry times are Unix ms, well below 2^53.

use redis::Script;

/// `older(a, b)`: whether epoch `a` is older than epoch `b`, both decimal strings.
const OLDER: &str = "local function older(a, b) return #a < #b or (#a == #b and a < b) end\n";

/// Raises the key's TTL to `ttl` ms unless it already lives longer (PTTL is -1 when persistent).
const ARM: &str = "local function arm(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
";

/// Writes one entry and arms its user key.
/// KEYS[1] user hash; ARGV: field, value, key TTL ms. Returns 1.
const UPSERT: &str = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
arm(KEYS[1], tonumber(ARGV[3]))
return 1
";

/// Re-arms this node's current-epoch entries in one user hash and drops its older-epoch ones;
/// other nodes' entries are left alone. Only existing fields are touched, so an entry deleted
/// by a disconnect is never brought back.
/// KEYS[1] user hash; ARGV: node, epoch, new expiry (Unix ms), key TTL ms.
/// Returns how many entries were re-armed.
const REFRESH: &str = "local all = redis.call('HGETALL', KEYS[1])
local kept = 0
for i = 1, #all, 2 do
  if string.match(all[i], '^(.*):%d+$') == ARGV[1] then
    local epoch, device = string.match(all[i + 1], '^(%d+):%-?%d+:(.*)$')
    if epoch == ARGV[2] then
      redis.call('HSET', KEYS[1], all[i], epoch .. ':' .. ARGV[3] .. ':' .. device)
      kept = kept + 1
    elseif epoch == nil or older(epoch, ARGV[2]) then
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
if kept > 0 then arm(KEYS[1], tonumber(ARGV[4])) end
return kept
";

/// Compare-and-delete: drops each field that still holds the value the reader judged dead, so a
/// purge never removes an entry rewritten (reconnected, refreshed) since it was read.
/// KEYS[1] hash; ARGV: field, value, field, value, ... Returns how many were deleted.
const PURGE: &str = "local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
";

/// Registers or renews a node unless a newer epoch holds its id.
/// KEYS[1] nodes hash; ARGV: node, epoch, expiry (Unix ms), advertised address, now (Unix ms).
/// Returns {status, epoch}: 0 new (no record, or an older epoch's), 1 renewed, 2 lapsed (our
/// epoch's record had expired), 3 stale (`epoch` is the newer registered one; nothing written).
const REGISTER: &str = "local cur = redis.call('HGET', KEYS[1], ARGV[1])
local status = 0
if cur then
  local epoch, expires = string.match(cur, '^(%d+):(%-?%d+):')
  if epoch and older(ARGV[2], epoch) then return {3, epoch} end
  if epoch == ARGV[2] then
    if tonumber(expires) > tonumber(ARGV[5]) then status = 1 else status = 2 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4])
return {status, ARGV[2]}
";

/// The loaded scripts.
pub(super) struct Scripts {
    /// See [`UPSERT`].
    pub upsert: Script,
    /// See [`REFRESH`].
    pub refresh: Script,
    /// See [`PURGE`].
    pub purge: Script,
    /// See [`REGISTER`].
    pub register: Script,
}

impl Scripts {
    /// Builds the scripts (hashing them; nothing is sent yet).
    pub fn new() -> Self {
        Self {
            upsert: Script::new(&format!("{ARM}{UPSERT}")),
            refresh: Script::new(&format!("{OLDER}{ARM}{REFRESH}")),
            purge: Script::new(PURGE),
            register: Script::new(&format!("{OLDER}{REGISTER}")),
        }
    }

    /// Every script, for loading at connect.
    pub fn all(&self) -> [&Script; 4] {
        [&self.upsert, &self.refresh, &self.purge, &self.register]
    }
}
