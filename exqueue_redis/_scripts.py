"""The Lua scripts of RedisStorage's transitions: one script each, one atomic step.

Every script gets one key, ``KEYS[1]``: the namespace prefix ``{ns}:``. The braces
are a Redis Cluster hash tag, so every key built from the prefix lives in the
same slot as ``KEYS[1]`` and the whole script runs on one node. The key layout is
documented in ``exqueue_redis/__init__.py``; the helpers the scripts share are in
:mod:`exqueue_redis._prelude`, the claim in :mod:`exqueue_redis._claim_script`, the
read-side and upgrade scripts in :mod:`exqueue_redis._scripts_read`.

Times and floats arrive as Python ``repr`` strings and are stored as given, so
they round-trip exactly; Redis parses them itself for sorted-set scores.
"""

from __future__ import annotations

#: Values per job in an ENQUEUE call (see ENQUEUE).
ENQUEUE_FIELDS = 7

# ARGV: n, then n times (id, worker, payload, run_at, enqueued_at, max_attempts,
# options): options is '' for a job with every protocol-2 default, else a JSON
# array of 8 strings ('' for none): priority, meta (JSON), timeout, expires_at,
# has_unique ('1'/'0'), unique key, unique states ('r' running, 'd' dead),
# unique period; and, for a job with a partition or a dead_error, 4 more: has partition
# ('1'/'0'), partition, has dead_error ('1'/'0'), dead_error. Returns {'dup', id} for a
# duplicate id (nothing written), else {'ok', holder ids}.
ENQUEUE = r"""
local K = 7
local n = need_int(ARGV[1], 'batch size', 0)
if #ARGV ~= 1 + K * n then refuse('enqueue needs ' .. K .. ' values per job') end
local opts = {}
for i = 0, n - 1 do
  local b = 2 + i * K
  if ARGV[b] == '' or ARGV[b + 1] == '' then refuse('job id and worker must be non-empty') end
  need_num(ARGV[b + 3], 'run_at')
  need_num(ARGV[b + 4], 'enqueued_at')
  need_int(ARGV[b + 5], 'max_attempts', 1)
  if ARGV[b + 6] ~= '' then
    local ok, o = pcall(cjson.decode, ARGV[b + 6])
    if not ok or type(o) ~= 'table' or (#o ~= 8 and #o ~= 12) then
      refuse('job options must be 8 or 12 values')
    end
    for j = 1, #o do
      if type(o[j]) ~= 'string' then refuse('job options must be strings') end
    end
    if not prio_ok(o[1]) then refuse('priority must be a 32-bit integer') end
    if o[2] ~= '' and not meta_ok(o[2]) then refuse('meta must be a JSON object of strings') end
    if o[3] ~= '' then need_num(o[3], 'timeout') end
    if o[4] ~= '' then need_num(o[4], 'expires_at') end
    if o[8] ~= '' then need_num(o[8], 'unique period') end
    opts[b] = o
  end
end
if n == 1 and ARGV[8] == '' then  -- the common case, without the batch's bookkeeping
  local id, worker, run_at, enq = ARGV[2], ARGV[3], ARGV[5], ARGV[6]
  local k = jkey(id)
  if redis.call('EXISTS', k) == 1 then return {'dup', id} end
  -- Strings, not numbers, reach HSET and ZADD: Lua's number formatting is slow.
  local seq = tostring(redis.call('INCR', P .. 'seq'))
  redis.call('HSET', k, 'id', id, 'seq', seq, 'worker', worker, 'payload', ARGV[4],
    'state', 'waiting', 'attempt', '0', 'max_attempts', ARGV[7], 'run_at', run_at,
    'enqueued_at', enq, 'errors', '0')
  if tonumber(run_at) <= tonumber(enq) then
    redis.call('ZADD', P .. 'ready:' .. worker, '0', rmember(run_at, seq, id))
  else
    redis.call('ZADD', P .. 'sched:' .. worker, run_at, smember(seq, id))
  end
  redis.call('ZADD', P .. 'all:' .. worker, seq, id)
  redis.call('SADD', P .. 'workers', worker)
  signal()
  return {'ok', {id}}
end
local seen = {}
for i = 0, n - 1 do
  local id = ARGV[2 + i * K]
  if seen[id] or redis.call('EXISTS', jkey(id)) == 1 then return {'dup', id} end
  seen[id] = true
end
-- The stored job holding (worker, key) for a job enqueued at ``enq`` that
-- counts the states in ``states`` (waiting always) and has a period or not.
local function holder(worker, key, states, period, enq)
  local ids = redis.call('SMEMBERS', ukey(worker, key))
  table.sort(ids)  -- the same answer on every replica and every run
  for _, other in ipairs(ids) do
    local state = redis.call('HGET', jkey(other), 'state')
    if state == 'waiting' or (state == 'running' and states:find('r', 1, true))
        or (state == 'dead' and states:find('d', 1, true)) then
      return other
    end
  end
  if period ~= '' then
    -- A completion at T holds the key until T + the period its job was
    -- enqueued with (the protocol's rule), for jobs that ask for a period.
    local d = redis.call('HMGET', dkey(worker, key), 'at', 'period', 'id')
    local at, held_for = num(d[1]), num(d[2])
    if at and held_for and d[3] and at + held_for > enq then
      return d[3]
    end
  end
  return nil
end
local out, taken, stored = {}, {}, {}
for i = 0, n - 1 do
  local b = 2 + i * K
  local id, o, found = ARGV[b], opts[b], nil
  if o and o[5] == '1' then
    local name = ukey(ARGV[b + 1], o[6])
    found = taken[name] or holder(ARGV[b + 1], o[6], o[7], o[8], tonumber(ARGV[b + 4]))
    if not found then taken[name] = id end
  end
  out[#out + 1] = found or id
  if not found then stored[#stored + 1] = b end
end
if #stored == 0 then return {'ok', out} end
-- Per worker, the sorted-set entries are collected and added together, in
-- chunks that stay well inside Lua's limit on unpacked arguments.
local first = redis.call('INCRBY', P .. 'seq', #stored) - #stored
local ready, sched, all, expiry = {}, {}, {}, {}
local function push(t, key, score, member)
  local list = t[key]
  if not list then list = {} t[key] = list end
  list[#list + 1], list[#list + 2] = score, member
end
for i, b in ipairs(stored) do
  local id, worker, run_at, enq = ARGV[b], ARGV[b + 1], ARGV[b + 3], ARGV[b + 4]
  -- Strings, not numbers, reach HSET and ZADD: Lua's number formatting is slow.
  local seq = tostring(first + i)
  local k = jkey(id)
  redis.call('HSET', k, 'id', id, 'seq', seq, 'worker', worker,
    'payload', ARGV[b + 2], 'state', 'waiting', 'attempt', '0',
    'max_attempts', ARGV[b + 5], 'run_at', run_at, 'enqueued_at', enq, 'errors', '0')
  local o, priority = opts[b], '0'
  local dead = o and o[11] == '1'
  if o and o[9] == '1' then redis.call('HSET', k, 'partition', o[10]) end
  if dead then
    -- Stored dead with its one error (a partition function that failed at enqueue).
    redis.call('HSET', k, 'state', 'dead', 'errors', '1', 'error:1', o[12])
  end
  if o then
    -- Fields at their default are not stored: an absent one reads as its default.
    priority = o[1]
    if priority ~= '0' then redis.call('HSET', k, 'priority', priority) end
    if o[2] ~= '' then redis.call('HSET', k, 'meta', o[2]) end
    if o[3] ~= '' then redis.call('HSET', k, 'timeout', o[3]) end
    if o[4] ~= '' then
      redis.call('HSET', k, 'expires_at', o[4])
      if not dead then expiry[#expiry + 1], expiry[#expiry + 2] = o[4], smember(seq, id) end
    end
    if o[5] == '1' and not dead then
      redis.call('HSET', k, 'unique_key', o[6])
      if o[8] ~= '' then redis.call('HSET', k, 'unique_period', o[8]) end
      redis.call('SADD', ukey(worker, o[6]), id)
    end
  end
  -- Due when enqueued (the common case): straight into the ready set; later
  -- ones wait in the scheduled set until a claim promotes them.
  if dead then
    redis.call('ZADD', P .. 'dead:' .. worker, seq, id)
  elseif tonumber(run_at) <= tonumber(enq) then
    push(ready, P .. 'ready:' .. worker, priority, rmember(run_at, seq, id))
  else
    push(sched, P .. 'sched:' .. worker, run_at, smember(seq, id))
  end
  push(all, worker, seq, id)
end
local function zadd(key, list)
  for s = 1, #list, 2000 do
    redis.call('ZADD', key, unpack(list, s, math.min(s + 1999, #list)))
  end
end
for key, list in pairs(ready) do zadd(key, list) end
for key, list in pairs(sched) do zadd(key, list) end
if #expiry > 0 then zadd(P .. 'expiry', expiry) end
for worker, list in pairs(all) do
  zadd(P .. 'all:' .. worker, list)
  redis.call('SADD', P .. 'workers', worker)
end
signal()
return {'ok', out}
"""

# Reads now ('' for none, else checked), first and last: ARGV[first .. last] are
# id, token, id, token, ... Defines ``out``, the ids completed (removed), in order,
# and ``by_worker`` (worker -> its ids in ``out``).
# A success removes the job whole, so a damaged field does not matter here. A job
# enqueued with a unique period leaves a completion marker for its key, kept until
# now + that period. The workers set is left to UNLIST (FINISH runs it after its
# claim, which may show that a type still has jobs without counting them).
COMPLETE_PART = r"""
-- Look first, then remove in batches (one variadic DEL / ZREM per chunk and per
-- worker type, not five calls per job), then the unique markers: removals
-- first, since in a Redis at maxmemory a script's first write is the one checked.
-- Per job one HMGET, no table: ids (out), keys, and apart the few with a unique key
-- (``keyed``, made on its first entry, as ``seen`` is only for more than one pair).
local out, keys, by_worker, keyed, marked = {}, {}, {}, nil, false
local seen = last > first + 1 and {} or nil
for i = first, last, 2 do
  local id = ARGV[i]
  if not (seen and seen[id]) then
    local k = jkey(id)
    -- The running check of every transition, without the seq (unused here). The
    -- unique period only of a job with a unique key: asking for a field the hash
    -- lacks walks it whole, and most jobs have neither.
    local f = redis.call('HMGET', k, 'state', 'lease_token', 'worker', 'unique_key')
    if f[1] == 'running' and f[2] == ARGV[i + 1] then
      if seen then seen[id] = true end
      local n = #out + 1
      out[n], keys[n] = id, k
      local worker = f[3]
      if worker then
        local ids = by_worker[worker]
        if not ids then ids = {} by_worker[worker] = ids end
        ids[#ids + 1] = id
        if f[4] then
          keyed = keyed or {}
          keyed[#keyed + 1] = {id, worker, f[4], redis.call('HGET', k, 'unique_period')}
        end
      end
    end
  end
end
local CHUNK = 500
for a = 1, #keys, CHUNK do
  local b = math.min(a + CHUNK - 1, #keys)
  redis.call('DEL', unpack(keys, a, b))  -- the hashes whole, lease fields and all
  redis.call('ZREM', P .. 'leases', unpack(out, a, b))
end
for worker, ids in pairs(by_worker) do
  for a = 1, #ids, CHUNK do
    local b = math.min(a + CHUNK - 1, #ids)
    redis.call('ZREM', P .. 'running:' .. worker, unpack(ids, a, b))
    redis.call('ZREM', P .. 'all:' .. worker, unpack(ids, a, b))
  end
end
if keyed then
--[[rare]]
  for _, u in ipairs(keyed) do
    local id, worker, key = u[1], u[2], u[3]
    unhold(id, worker, key)
    local period = num(u[4])
    if now ~= '' and period then
      -- The marker that holds the key longest is kept.
      local k = dkey(worker, key)
      local m = redis.call('HMGET', k, 'at', 'period')
      local until_before = (num(m[1]) or -math.huge) + (num(m[2]) or 0)
      if until_before <= tonumber(now) + period then
        redis.call('HSET', k, 'at', now, 'period', u[4], 'id', id)
        redis.call('ZADD', P .. 'udone', tonumber(now) + period, k)
        marked = true
      end
    end
  end
--[[/rare]]
end
if marked then
  -- Each marker written drops up to 16 whose period has passed, so the
  -- markers kept stay about as many as are live.
  for _, d in ipairs(redis.call('ZRANGEBYSCORE', P .. 'udone', '-inf', now, 'LIMIT', 0, 16)) do
    redis.call('DEL', d)
    redis.call('ZREM', P .. 'udone', d)
  end
end
"""

# Reads by_worker: forgets each worker type whose last job it removed.
UNLIST = r"""
for worker in pairs(by_worker) do
  if redis.call('ZCARD', P .. 'all:' .. worker) == 0 then
    redis.call('SREM', P .. 'workers', worker)
  end
end
"""

# ARGV: now ('' for none), then id, token, id, token, ... Returns the ids
# completed (removed), in order.
COMPLETE = (
    r"""
local now, first, last = ARGV[1], 2, #ARGV
if now ~= '' then need_num(now, 'now') end
"""
    + COMPLETE_PART
    + UNLIST
    + "return out\n"
)

# ARGV: id, token, run_at, error. A damaged job becomes dead instead (still 1).
RETRY = r"""
local id = ARGV[1]
need_num(ARGV[3], 'run_at')
local f = held(id, ARGV[2])
if not f then return 0 end
local why = damage(id)
if why then bury_damaged(id, f[3] or '(unknown)', 0, ARGV[3], why) return 1 end
unlease(id, f[3])
add_error(id, ARGV[4])
to_waiting(id, f[3], f[4], ARGV[3])
signal()
return 1
"""

# ARGV: id, token, error.
BURY = r"""
local id = ARGV[1]
local f = held(id, ARGV[2])
if not f then return 0 end
local why = damage(id)
if why then bury_damaged(id, f[3] or '(unknown)', 0, '0', why .. '; then: ' .. ARGV[3]) return 1 end
unlease(id, f[3])
add_error(id, ARGV[3])
to_dead(id, f[3], f[4])
return 1
"""

# ARGV: id, token. The attempt is given back; run_at is kept. A damaged job
# cannot be given back readable: it becomes dead instead (still 1).
RELEASE = r"""
local id = ARGV[1]
local f = held(id, ARGV[2])
if not f then return 0 end
local why = damage(id)
if why then bury_damaged(id, f[3] or '(unknown)', 0, '0', why) return 1 end
unlease(id, f[3])
redis.call('HINCRBY', jkey(id), 'attempt', -1)
to_waiting(id, f[3], f[4], redis.call('HGET', jkey(id), 'run_at'))
signal()
return 1
"""

# ARGV: token, lease_until, ids... Returns the ids whose lease was extended.
EXTEND = r"""
local token, lease_until = ARGV[1], ARGV[2]
need_num(lease_until, 'lease_until')
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if held(id, token) then
    -- A removal first: on a Redis at maxmemory a script is refused only when
    -- its first write may grow memory, and a heartbeat must go on there.
    redis.call('ZREM', P .. 'leases', id)
    redis.call('HSET', jkey(id), 'lease_expires', lease_until)
    redis.call('ZADD', P .. 'leases', lease_until, id)
    out[#out + 1] = id
  end
end
return out
"""

# ARGV: now, error, owner ('' for none), has_owner ('1' or '0').
# Returns {waiting ids, dead ids}, each in seq order. A damaged job is dead.
RECOVER = r"""
local now, err, owner = ARGV[1], ARGV[2], ARGV[3]
need_num(now, 'now')
local ids = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now)
if ARGV[4] == '1' then
  -- Also every running job leased by this owner, expired or not.
  local expired = {}
  for _, id in ipairs(ids) do expired[id] = true end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '(' .. now, '+inf')) do
    if not expired[id] and redis.call('HGET', jkey(id), 'lease_owner') == owner then
      ids[#ids + 1] = id
    end
  end
end
local jobs, orphans = {}, {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', jkey(id), 'seq', 'worker', 'attempt', 'max_attempts', 'state')
  if f[5] == 'running' then
    local why = damage(id)
    jobs[#jobs + 1] = {id = id, seq = int(f[1]) or 0, worker = f[2] or '(unknown)',
      attempt = int(f[3]), max = int(f[4]), why = why}
  elseif f[5] == false then
    orphans[#orphans + 1] = id  -- a lease left without its job
  end
end
table.sort(jobs, function(a, b) return a.seq < b.seq end)
for _, id in ipairs(orphans) do redis.call('ZREM', P .. 'leases', id) end
local waiting, dead = {}, {}
for _, j in ipairs(jobs) do
  if j.why then
    bury_damaged(j.id, j.worker, j.seq, now, j.why .. '; then: ' .. err)
    dead[#dead + 1] = j.id
  else
    unlease(j.id, j.worker)
    add_error(j.id, err)
    if j.attempt < j.max then
      to_waiting(j.id, j.worker, j.seq, now)
      waiting[#waiting + 1] = j.id
    else
      to_dead(j.id, j.worker, j.seq)
      dead[#dead + 1] = j.id
    end
  end
end
if #waiting > 0 then signal() end
return {waiting, dead}
"""

# ARGV: id. Returns 'deleted', 'missing' or 'running'. Works on a damaged job too.
DELETE = r"""
local id = ARGV[1]
local f = redis.call('HMGET', jkey(id), 'state', 'worker', 'seq', 'run_at', 'unique_key')
if not f[1] then return 'missing' end
if f[1] == 'running' then return 'running' end
if f[2] then
  unwait(id, f[2], f[3], f[4])
  redis.call('ZREM', P .. 'dead:' .. f[2], id)
  unhold(id, f[2], f[5])
end
redis.call('DEL', jkey(id))
if f[2] then forget(id, f[2]) end
return 'deleted'
"""

# ARGV: id, new_id, now. Returns 'requeued', 'missing', 'not_dead' or 'exists'.
# Priority, meta, timeout and the unique key stay; expires_at goes.
REQUEUE = r"""
local id, new, now = ARGV[1], ARGV[2], ARGV[3]
need_num(now, 'now')
local f = redis.call('HMGET', jkey(id), 'state', 'worker', 'seq', 'errors', 'unique_key')
if not f[1] then return 'missing' end
if f[1] ~= 'dead' then return 'not_dead' end
if redis.call('EXISTS', jkey(new)) == 1 then return 'exists' end
local why = damage(id)
if why then refuse('job ' .. id .. ' cannot be retried: ' .. why .. '; delete it') end
local worker, seq = f[2], f[3]
redis.call('RENAME', jkey(id), jkey(new))
drop_errors(jkey(new), 1, math.huge)
redis.call('HSET', jkey(new), 'id', new, 'attempt', 0, 'errors', 0)
-- A new job: no expiry, and no snooze count or cancel mark (see _control).
redis.call('HDEL', jkey(new), 'expires_at', 'snoozes', 'cancel_token')
redis.call('ZREM', P .. 'expiry', smember(seq, id))
redis.call('ZREM', P .. 'dead:' .. worker, id)
redis.call('ZREM', P .. 'all:' .. worker, id)
redis.call('ZADD', P .. 'all:' .. worker, seq, new)
if f[5] then
  unhold(id, worker, f[5])
  redis.call('SADD', ukey(worker, f[5]), new)
end
to_waiting(new, worker, seq, now)
signal()
return 'requeued'
"""
