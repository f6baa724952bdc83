//! The Lua scripts: each runs atomically in Redis, so a model's order is Redis's own.

use std::sync::LazyLock;

use redis::Script;

/// Appends a batch only if the model is still at the expected epoch and version, as
/// Centrifugo appends to a channel's history: creates the model (its epoch) on its first
/// batch; writes each diff to the stream with id `<version>-0` (the first one also carries the
/// batch's token, field `t`; the last one the client key records, field `k`); writes the client
/// key records (in the same step: a record never exists without its update, nor the reverse);
/// sets the version; writes the checkpoint and trims the stream when one comes along;
/// publishes the batch. A batch of records only (no diff) writes them and publishes nothing.
///
/// Idempotent: a retry of a batch that already committed (its reply was lost, or a try timed
/// out and went through later) finds its token at its first version and answers `ok`, not a
/// conflict, so the batch is never applied twice.
///
/// KEYS: meta, log, snap, clients. ARGV: epoch, base version, history kept before a
/// checkpoint, channel, payload to publish, checkpoint version (`""`: none), checkpoint state,
/// token, client key records (`[[key, record or null], ...]`), the publish command (`PUBLISH`,
/// or `SPUBLISH` on a cluster), diffs... Returns `{"ok", version}`, `{"conflict", epoch, version, missed entries}` or
/// `{"missing"}`.
pub(crate) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local meta, log, snap, clients = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local epoch, base, keep, token, records = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[8], ARGV[9]
local current = redis.call('HMGET', meta, 'epoch', 'version')
if not current[1] then
  if base ~= 0 then return {'missing'} end
  redis.call('HSET', meta, 'epoch', epoch, 'version', 0)
  current = {epoch, '0'}
end
local version = tonumber(current[2])
if current[1] ~= epoch or version ~= base then
  local missed = {}
  if current[1] == epoch and version > base then
    local first = (base + 1) .. '-0'
    local mine = redis.call('XRANGE', log, first, first)
    if mine[1] and mine[1][2][3] == 't' and mine[1][2][4] == token then
      return {'ok', tostring(base + #ARGV - 10)}
    end
    missed = redis.call('XRANGE', log, first, '+')
  end
  return {'conflict', current[1], tostring(version), missed}
end
for i = 11, #ARGV do
  version = version + 1
  local entry = {'d', ARGV[i]}
  if i == 11 then
    table.insert(entry, 't')
    table.insert(entry, token)
  end
  if i == #ARGV and records ~= '[]' then
    table.insert(entry, 'k')
    table.insert(entry, records)
  end
  redis.call('XADD', log, version .. '-0', unpack(entry))
end
if records ~= '[]' then
  for _, write in ipairs(cjson.decode(records)) do
    if write[2] == cjson.null then
      redis.call('HDEL', clients, write[1])
    else
      redis.call('HSET', clients, write[1], write[2])
    end
  end
end
if #ARGV == 10 then
  return {'ok', tostring(version)}
end
redis.call('HSET', meta, 'version', version)
if ARGV[6] ~= '' then
  redis.call('HSET', snap, 'version', ARGV[6], 'state', ARGV[7])
  local keep_from = tonumber(ARGV[6]) - keep
  if keep_from > 1 then
    redis.call('XTRIM', log, 'MINID', keep_from .. '-0')
  end
end
redis.call(ARGV[10], ARGV[4], ARGV[5])
return {'ok', tostring(version)}
",
    )
});

/// Reads a model in one step: `{epoch, version, checkpoint version, checkpoint, entries,
/// client key records (HGETALL)}`, or nil. KEYS: meta, log, snap, clients.
pub(crate) static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local m = redis.call('HMGET', KEYS[1], 'epoch', 'version')
if not m[1] then return false end
local s = redis.call('HMGET', KEYS[3], 'version', 'state')
return {m[1], m[2], s[1] or '0', s[2] or '{}', redis.call('XRANGE', KEYS[2], '-', '+'),
  redis.call('HGETALL', KEYS[4])}
",
    )
});

/// Reads the diffs after a version with the model's epoch: `{epoch, entries}` or nil.
/// KEYS: meta, log. ARGV: the first version wanted.
pub(crate) static SINCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return false end
return {epoch, redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+')}
",
    )
});

/// Removes a model and tells every node (`{"removed": epoch}`). KEYS: meta, log, snap,
/// clients. ARGV: channel, the publish command.
pub(crate) static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call(ARGV[2], ARGV[1], cjson.encode({removed = epoch}))
return 1
",
    )
});

/// Records a new model (epoch, version 0, first state) unless it exists: returns 1 if it
/// created it. KEYS: meta, log, snap. ARGV: epoch, state.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'version', 0)
redis.call('HSET', KEYS[3], 'version', 0, 'state', ARGV[2])
return 1
",
    )
});

/// Records a presence change of this node's (PROTOCOL.md section 11) and publishes it, in one
/// step: a node that loads the model later reads the hash, a node that holds it gets the
/// publish. The hash expires a day after its last change (a model nobody touches any more
/// takes no room for good).
///
/// KEYS: the model's presence hash. ARGV: presence id, its JSON (`null`: cleared), channel,
/// payload, the publish command, the hash's time to live (ms).
pub(crate) static PRESENCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == 'null' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return redis.call(ARGV[5], ARGV[3], ARGV[4])
",
    )
});
