"""Lua scripts of the Redis transport (see :mod:`tqcore.transports.redis` for the key schema).

Every key a script touches is passed in ``KEYS``; no script builds a key name or uses
the ``KEYS`` command. Times are milliseconds of the server's clock (``TIME``), so
leases and ETAs do not depend on any client's clock.

A message's identity (its *id*) is its kombu ``properties.delivery_tag`` (a uuid4
per publish): read from the end of the envelope, where kombu and tqcore write it, or
by decoding the JSON; a payload that has none is identified by its SHA-1.
"""

from __future__ import annotations

_COMMON = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function decode(el)
  if #el <= 1048576 then
    local ok, env = pcall(cjson.decode, el)
    if ok and type(env) == 'table' then return env end
  end
  return nil
end

local function ident(el)
  local n = #el
  local tail = el
  if n > 512 then tail = string.sub(el, n - 511) end
  local tag = string.match(tail, '"delivery_tag"%s*:%s*"([^"\\]+)"%s*}%s*}%s*$')
  if tag then return tag end
  local env = decode(el)
  if env and type(env['properties']) == 'table' then
    local t = env['properties']['delivery_tag']
    if type(t) == 'string' and t ~= '' then return t end
  end
  return 'sha1:' .. redis.sha1hex(el)
end

local function message_id(el)
  local env = decode(el)
  if env and type(env['headers']) == 'table' and type(env['headers']['id']) == 'string' then
    return env['headers']['id']
  end
  if #el > 1048576 then
    -- Too big to decode here: the correlation id near the end (the task id, in the
    -- envelopes kombu and tqcore write).
    local tag = string.match(string.sub(el, #el - 2047),
                             '"correlation_id"%s*:%s*"([^"\\]+)"')
    if tag then return tag end
  end
  return ''
end

-- meta value: "<attempts> <enqueued ms>"
local function read_meta(meta, id, now)
  local m = redis.call('HGET', meta, id)
  if m then
    local a, e = string.match(m, '^(%-?%d+) (%d+)$')
    if a then return tonumber(a), e end
  end
  return 0, tostring(now)
end

-- Wake tokens: a consumer with nothing to claim blocks on BLPOP of its queues' wake
-- lists; whatever makes a message ready pushes up to 16 tokens (one per message), so
-- an idle worker starts within a round trip instead of a poll interval.
local function wake(key, n)
  for _ = 1, math.min(n, 16) do redis.call('LPUSH', key, '1') end
  redis.call('LTRIM', key, 0, 63)
  redis.call('PEXPIRE', key, 60000)
end

local function dead_letter(dead, seq, queue, reason, attempts, now, mid, el, maxlen)
  local n = redis.call('INCR', seq)
  redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', 'seq', n, 'queue', queue,
             'reason', reason, 'attempts', attempts, 'dead_at', now, 'message_id', mid,
             'payload', el)
  return n
end
"""

#: KEYS: L0 L3 L6 L9 eta msgs meta queues wake acked.  ARGV: queue, retry, then (step
#: index, id, eta ms or 0, element) per message. A retried call skips ids already known,
#: or settled within the last ``SETTLED_KEPT_MS`` (``acked``), so a publish whose reply
#: was lost is not duplicated, even when its first copy already ran.
ENQUEUE = _COMMON + r"""
local now = now_ms()
local retry = ARGV[2] == '1'
redis.call('SADD', KEYS[8], ARGV[1])
-- Variadic commands for the whole call (one HMGET, one HSET, one LPUSH per list)
-- rather than a command per message: a group's enqueue costs the server several
-- times less. Same outcome as HSETNX + LPUSH message by message.
local ids = {}
for i = 3, #ARGV, 4 do ids[#ids + 1] = ARGV[i + 1] end
local known = redis.call('HMGET', KEYS[7], unpack(ids))
local stamp = '0 ' .. now
local meta, lists, seen = {}, {{}, {}, {}, {}}, {}
local pushed = 0
for n, id in ipairs(ids) do
  local fresh = not known[n] and not seen[id] and
    not (retry and redis.call('ZSCORE', KEYS[10], id))
  seen[id] = true
  if fresh then
    meta[#meta + 1] = id
    meta[#meta + 1] = stamp
  end
  if fresh or not retry then
    local i = 3 + (n - 1) * 4
    local si, eta, el = tonumber(ARGV[i]), tonumber(ARGV[i + 2]), ARGV[i + 3]
    if eta > now then
      if redis.call('HSETNX', KEYS[6], id, si .. el) == 1 then
        redis.call('ZADD', KEYS[5], eta, id)
      end
    else
      local list = lists[si + 1]
      list[#list + 1] = el
      pushed = pushed + 1
    end
  end
end
if #meta > 0 then redis.call('HSET', KEYS[7], unpack(meta)) end
for s = 1, 4 do
  if #lists[s] > 0 then redis.call('LPUSH', KEYS[s], unpack(lists[s])) end
end
if pushed > 0 then wake(KEYS[9], pushed) end
return 1
"""

#: KEYS: seq, then per queue L0 L3 L6 L9 eta msgs leases meta dead wake, then the
#: claim's record ``tq:claimed:<token>`` and the record of the caller's previous claim
#: (answered, so no longer needed: dropped here rather than kept until it expires).
#: ARGV: limit, lease ms, max deliveries, dead-letter cap, size cap (bytes, 0: none),
#: queue names.
#: A claim is idempotent: what it leased is recorded under its token for a minute,
#: and the same call again (a retry after its reply was lost, say while the server was
#: frozen) hands those messages out again instead of leasing more to nobody.
#: Returns {deliveries, dead, next, big}: flat (queue index, id, attempts, step index,
#: element) and (queue index, seq, attempts, element, message id, dead_at, reason), the
#: ms until the next ETA or lease expiry (-1: none), and flat (queue index, message id,
#: reason) of the elements over the size cap, dead-lettered without being returned. A claim that finds nothing
#: drops the queues' wake tokens (stale: anything enqueued later pushes new ones).
CLAIM = _COMMON + r"""
local now = now_ms()
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local maxd, dmax, maxsize = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local nq = (#KEYS - 3) / 10
local record = KEYS[#KEYS - 1]
if KEYS[#KEYS] ~= record then redis.call('DEL', KEYS[#KEYS]) end
local out, dead, big = {}, {}, {}
local n = 0
local before = redis.call('GET', record)
if before then
  local ids = cmsgpack.unpack(before)
  for i = 1, #ids, 2 do
    local b = 2 + ids[i] * 10
    local id = ids[i + 1]
    local v = redis.call('ZSCORE', KEYS[b + 6], id) and redis.call('HGET', KEYS[b + 5], id)
    if v then
      local attempts = read_meta(KEYS[b + 7], id, now)
      for _, x in ipairs({ids[i], id, attempts, tonumber(string.sub(v, 1, 1)),
                          string.sub(v, 2)}) do out[#out + 1] = x end
    end
  end
  return {out, dead, -1, big}
end
for q = 0, nq - 1 do
  local b = 2 + q * 10
  local eta, msgs, leases = KEYS[b + 4], KEYS[b + 5], KEYS[b + 6]
  -- Due ETAs join the tail of their list (oldest due first).
  local due = redis.call('ZRANGEBYSCORE', eta, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local v = redis.call('HGET', msgs, id)
    redis.call('ZREM', eta, id)
    redis.call('HDEL', msgs, id)
    if v then redis.call('LPUSH', KEYS[b + tonumber(string.sub(v, 1, 1))], string.sub(v, 2)) end
  end
  -- Expired leases (a dead worker) go back to the head: served next, like kombu's restore.
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1000)
  for i = #expired, 1, -1 do
    local id = expired[i]
    local v = redis.call('HGET', msgs, id)
    redis.call('ZREM', leases, id)
    redis.call('HDEL', msgs, id)
    if v then redis.call('RPUSH', KEYS[b + tonumber(string.sub(v, 1, 1))], string.sub(v, 2)) end
  end
end
if limit <= 0 then return {out, dead, -1, big} end
-- Dead-lettered pops do not count towards the limit: bound the work of one call.
local budget = limit + 1000
for s = 0, 3 do
  for q = 0, nq - 1 do
    local b = 2 + q * 10
    local list, msgs, leases, meta = KEYS[b + s], KEYS[b + 5], KEYS[b + 6], KEYS[b + 7]
    while n < limit and budget > 0 do
      local els = redis.call('RPOP', list, math.min(limit - n, 100, budget))
      if not els then break end
      budget = budget - #els
      for _, el in ipairs(els) do
        local id = ident(el)
        if redis.call('HEXISTS', msgs, id) == 1 then
          -- the same bytes pushed twice by another producer: a separate delivery
          id = id .. '#' .. redis.call('INCR', KEYS[1])
        end
        local attempts, enq = read_meta(meta, id, now)
        attempts = attempts + 1
        if maxsize > 0 and #el > maxsize then
          -- Over the worker's size cap: dead-lettered here, never sent to a worker (which
          -- would refuse it only after reading, and copying, all of it).
          local reason = 'malformed message: message too large: ' .. #el ..
            ' bytes (limit ' .. maxsize .. ')'
          local mid = message_id(el)
          dead_letter(KEYS[b + 8], KEYS[1], ARGV[6 + q], reason, attempts, now, mid, el, dmax)
          redis.call('HDEL', meta, id)
          for _, x in ipairs({q, mid, reason}) do big[#big + 1] = x end
        elseif attempts > maxd then
          local reason = 'delivered ' .. (attempts - 1) ..
            ' times without being acknowledged (max_deliveries=' .. maxd .. '): worker lost'
          local mid = message_id(el)
          local seqn = dead_letter(KEYS[b + 8], KEYS[1], ARGV[6 + q], reason, attempts - 1, now,
                                   mid, el, dmax)
          redis.call('HDEL', meta, id)
          for _, x in ipairs({q, seqn, attempts - 1, el, mid, now, reason}) do
            dead[#dead + 1] = x
          end
        else
          redis.call('HSET', msgs, id, s .. el)
          redis.call('ZADD', leases, now + lease, id)
          redis.call('HSET', meta, id, attempts .. ' ' .. enq)
          for _, x in ipairs({q, id, attempts, s, el}) do out[#out + 1] = x end
          n = n + 1
        end
      end
    end
  end
end
local nxt = -1
if n > 0 then
  local ids = {}
  for i = 1, #out, 5 do
    ids[#ids + 1] = out[i]
    ids[#ids + 1] = out[i + 1]
  end
  redis.call('SET', record, cmsgpack.pack(ids), 'PX', 60000)
end
if n == 0 then
  for q = 0, nq - 1 do
    local b = 2 + q * 10
    redis.call('DEL', KEYS[b + 9])
    for _, z in ipairs({KEYS[b + 4], KEYS[b + 6]}) do
      local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if first[2] then
        local d = math.max(0, tonumber(first[2]) - now)
        if nxt < 0 or d < nxt then nxt = d end
      end
    end
  end
end
return {out, dead, nxt, big}
"""

#: How long a settled message's id is remembered (``tq:acked:<q>``): longer than a
#: producer takes to retry a publish whose reply was lost (a socket timeout, 5 s by
#: default, plus its back-off), so the retry finds it even after the message ran.
SETTLED_KEPT_MS = 30_000

_SETTLED = r"""
local function settled(key, ids)
  if #ids == 0 then return end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 1, #ids, 1000 do  -- unpack() takes a few thousand values at most
    local args = {}
    for j = i, math.min(i + 999, #ids) do
      args[#args + 1] = now
      args[#args + 1] = ids[j]
    end
    redis.call('ZADD', key, unpack(args))
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - """ + str(SETTLED_KEPT_MS) + r""")
  redis.call('PEXPIRE', key, """ + str(SETTLED_KEPT_MS) + r""")
end
"""

_GUARD = r"""
local function holds(leases, meta, id, attempts)
  if not redis.call('ZSCORE', leases, id) then return false end
  local m = redis.call('HGET', meta, id)
  return m ~= false and string.match(m, '^(%-?%d+) ') == attempts
end
"""

#: KEYS: msgs leases meta acked.  ARGV: (id, attempts) pairs. Returns how many were
#: settled. Each settled id is kept in ``acked`` for ``SETTLED_KEPT_MS`` (see ENQUEUE).
ACK = _GUARD + _SETTLED + r"""
local done = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  if holds(KEYS[2], KEYS[3], id, ARGV[i + 1]) then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    done[#done + 1] = id
  end
end
settled(KEYS[4], done)
return #done
"""

#: KEYS: msgs leases meta dead seq acked.  ARGV: id, attempts, reason, message id, cap,
#: queue.
NACK = _COMMON + _GUARD + _SETTLED + r"""
local id = ARGV[1]
if not holds(KEYS[2], KEYS[3], id, ARGV[2]) then return 0 end
local v = redis.call('HGET', KEYS[1], id)
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
settled(KEYS[6], {id})
if v then
  dead_letter(KEYS[4], KEYS[5], ARGV[6], ARGV[3], ARGV[2], now_ms(), ARGV[4], string.sub(v, 2),
              tonumber(ARGV[5]))
end
return 1
"""

#: KEYS: L0 L3 L6 L9 eta msgs leases meta wake.  ARGV: id, attempts, count (1/0), delay ms.
REQUEUE = _COMMON + _GUARD + r"""
local id = ARGV[1]
if not holds(KEYS[7], KEYS[8], id, ARGV[2]) then return 0 end
local count, delay = ARGV[3] == '1', tonumber(ARGV[4])
local attempts, enq = read_meta(KEYS[8], id, 0)
if not count then attempts = attempts - 1 end
redis.call('ZREM', KEYS[7], id)
if string.find(id, '#', 1, true) then
  redis.call('HDEL', KEYS[8], id)  -- a duplicate's own id does not survive the list
else
  redis.call('HSET', KEYS[8], id, attempts .. ' ' .. enq)
end
if delay > 0 then
  redis.call('ZADD', KEYS[5], now_ms() + delay, id)
  return 1
end
local v = redis.call('HGET', KEYS[6], id)
redis.call('HDEL', KEYS[6], id)
if v then
  local list = KEYS[1 + tonumber(string.sub(v, 1, 1))]
  -- a retry waits its turn (kombu's reject(requeue=True)); a message handed back
  -- unstarted is served next (kombu's restore)
  if count then redis.call('LPUSH', list, string.sub(v, 2))
  else redis.call('RPUSH', list, string.sub(v, 2)) end
  wake(KEYS[9], 1)
end
return 1
"""

#: KEYS: leases meta.  ARGV: lease ms, then (id, attempts) pairs.
RENEW = _COMMON + _GUARD + r"""
local deadline = now_ms() + tonumber(ARGV[1])
local done = 0
for i = 2, #ARGV, 2 do
  if holds(KEYS[1], KEYS[2], ARGV[i], ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    done = done + 1
  end
end
return done
"""

#: KEYS: dead seq queues.  ARGV: queue, reason, payload, cap, message id.
DEAD_RAW = _COMMON + r"""
redis.call('SADD', KEYS[3], ARGV[1])
return dead_letter(KEYS[1], KEYS[2], ARGV[1], ARGV[2], 0, now_ms(), ARGV[5], ARGV[3],
                   tonumber(ARGV[4]))
"""
