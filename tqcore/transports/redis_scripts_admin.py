"""Lua scripts of the Redis transport that look at queues and workers rather than move
messages: queue figures, purge, the worker registry and reply bindings (the same rules
as :mod:`tqcore.transports.redis_scripts`: every key in ``KEYS``, server time).
"""

from __future__ import annotations

from tqcore.transports.redis_scripts import _COMMON

#: KEYS: per queue L0 L3 L6 L9 eta leases meta dead.  Returns {now, then per queue
#: ready, scheduled, in flight, dead, oldest enqueue ms or -1}.
STATS = _COMMON + r"""
local now = now_ms()
local out = {now}
for q = 0, #KEYS / 8 - 1 do
  local b = 1 + q * 8
  local eta, leases, meta = KEYS[b + 4], KEYS[b + 5], KEYS[b + 6]
  local ready, oldest = 0, -1
  local function seen(id)
    local m = redis.call('HGET', meta, id)
    local e = m and tonumber(string.match(m, ' (%d+)$'))
    if e and (oldest < 0 or e < oldest) then oldest = e end
  end
  for s = 0, 3 do
    local len = redis.call('LLEN', KEYS[b + s])
    if len > 0 then
      ready = ready + len
      seen(ident(redis.call('LINDEX', KEYS[b + s], -1)))
    end
  end
  local due = redis.call('ZCOUNT', eta, '-inf', now)
  local expired = redis.call('ZCOUNT', leases, '-inf', now)
  if due > 0 then seen(redis.call('ZRANGE', eta, 0, 0)[1]) end
  if expired > 0 then seen(redis.call('ZRANGE', leases, 0, 0)[1]) end
  out[#out + 1] = ready + due + expired
  out[#out + 1] = redis.call('ZCARD', eta) - due
  out[#out + 1] = redis.call('ZCARD', leases) - expired
  out[#out + 1] = redis.call('XLEN', KEYS[b + 7])
  out[#out + 1] = oldest
end
return out
"""

#: KEYS: L0 L3 L6 L9 eta msgs meta tmp0 tmp3 tmp6 tmp9.  Moves the lists aside (the
#: caller drops their ids' meta in chunks) and deletes scheduled messages.
PURGE = r"""
local count = 0
local moved = {}
for s = 0, 3 do
  local len = redis.call('LLEN', KEYS[1 + s])
  if len > 0 then
    count = count + len
    redis.call('RENAME', KEYS[1 + s], KEYS[8 + s])
    redis.call('EXPIRE', KEYS[8 + s], 3600)  -- dropped by itself if the caller dies
    moved[#moved + 1] = s
  end
end
local ids = redis.call('ZRANGE', KEYS[5], 0, -1)
count = count + #ids
for i = 1, #ids, 1000 do
  local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
  redis.call('HDEL', KEYS[6], unpack(chunk))
  redis.call('HDEL', KEYS[7], unpack(chunk))
end
redis.call('DEL', KEYS[5])
return {count, moved}
"""

#: KEYS: workers expiry.  ARGV: name, info JSON, ttl ms.
REGISTER = _COMMON + r"""
local now = now_ms()
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, name in ipairs(gone) do
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""

#: KEYS: workers expiry.  Returns flat (name, info) of live workers.
WORKERS = _COMMON + r"""
local names = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_ms(), '+inf')
local out = {}
for _, name in ipairs(names) do
  local info = redis.call('HGET', KEYS[1], name)
  if info then
    out[#out + 1] = name
    out[#out + 1] = info
  end
end
return out
"""

#: KEYS: reply binding set, tq's binding expiry zset, kombu's binding deadlines.
#: ARGV: member (or ''), ttl ms, exchange. Adds a reply binding as a Celery client
#: does and drops the ones this transport added that have expired.
REPLY_BINDING = _COMMON + r"""
local now = now_ms()
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(old) do
  redis.call('SREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
end
if ARGV[1] ~= '' then
  local deadline = now + tonumber(ARGV[2])
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], deadline, ARGV[1])
  redis.call('ZADD', KEYS[3], 'GT', deadline, ARGV[3])
end
return #old
"""
