"""The Lua scripts of RedisStorage: one script per transition, each one atomic step.

Every script gets one key, ``KEYS[1]``: the namespace prefix ``{ns}:``. The braces
are a Redis Cluster hash tag, so every key built from the prefix lives in the
same slot as ``KEYS[1]`` and the whole script runs on one node. The key layout is
documented in ``exqueue_redis/__init__.py``.

Times and floats arrive as Python ``repr`` strings and are stored as given, so
they round-trip exactly; Redis parses them itself for sorted-set scores.
"""

from __future__ import annotations

# Helpers shared by every script. ``wmember`` builds the member of a waiting set:
# the seq zero-padded to 16 digits, then the id. Equal scores (run_at) are ordered
# by member bytes, so equal run_at comes out in seq order: FIFO.
PRELUDE = r"""
local P = KEYS[1]
local function jkey(id) return P .. 'job:' .. id end
local function wmember(seq, id) return string.format('%016d', tonumber(seq)) .. id end

-- The job's {state, token, worker, seq} when it is running with this token.
local function held(id, token)
  local f = redis.call('HMGET', jkey(id), 'state', 'lease_token', 'worker', 'seq')
  if f[1] ~= 'running' or f[2] ~= token then return nil end
  return f
end

local function unlease(id, worker)
  redis.call('HDEL', jkey(id), 'lease_owner', 'lease_token', 'lease_expires')
  redis.call('ZREM', P .. 'leases', id)
  redis.call('ZREM', P .. 'running:' .. worker, id)
end

local function add_error(id, err)
  local n = redis.call('HINCRBY', jkey(id), 'errors', 1)
  redis.call('HSET', jkey(id), 'error:' .. n, err)
end

local function to_waiting(id, worker, seq, run_at)
  redis.call('HSET', jkey(id), 'state', 'waiting', 'run_at', run_at)
  redis.call('ZADD', P .. 'waiting:' .. worker, run_at, wmember(seq, id))
end

local function to_dead(id, worker, seq)
  redis.call('HSET', jkey(id), 'state', 'dead')
  redis.call('ZADD', P .. 'dead:' .. worker, seq, id)
end

-- Drop a removed job from its worker's index; forget the worker with its last job.
local function forget(id, worker)
  redis.call('ZREM', P .. 'all:' .. worker, id)
  if redis.call('ZCARD', P .. 'all:' .. worker) == 0 then
    redis.call('SREM', P .. 'workers', worker)
  end
end

-- Wake waiters: only when one armed the signal, so a busy queue publishes nothing.
local function signal()
  if redis.call('DEL', P .. 'armed') == 1 then
    redis.call('PUBLISH', P .. 'wake', '1')
  end
end
"""

# ARGV: n, then n times (id, worker, payload, run_at, enqueued_at, max_attempts).
# Returns '' or the first duplicate id (then nothing was written).
ENQUEUE = r"""
local n = tonumber(ARGV[1])
local function store(id, worker, payload, run_at, enqueued_at, max_attempts, seq)
  redis.call('HSET', jkey(id), 'id', id, 'seq', seq, 'worker', worker,
    'payload', payload, 'state', 'waiting', 'attempt', '0',
    'max_attempts', max_attempts, 'run_at', run_at, 'enqueued_at', enqueued_at, 'errors', '0')
end
if n == 1 then  -- the common case, without the batch's bookkeeping
  local id, worker, run_at = ARGV[2], ARGV[3], ARGV[5]
  if redis.call('EXISTS', jkey(id)) == 1 then return id end
  -- Strings, not numbers, reach HSET and ZADD: Lua's number formatting is slow.
  local seq = tostring(redis.call('INCR', P .. 'seq'))
  store(id, worker, ARGV[4], run_at, ARGV[6], ARGV[7], seq)
  redis.call('ZADD', P .. 'waiting:' .. worker, run_at, wmember(seq, id))
  redis.call('ZADD', P .. 'all:' .. worker, seq, id)
  redis.call('SADD', P .. 'workers', worker)
  signal()
  return ''
end
local seen = {}
for i = 0, n - 1 do
  local id = ARGV[2 + i * 6]
  if seen[id] or redis.call('EXISTS', jkey(id)) == 1 then return id end
  seen[id] = true
end
-- A batch costs per job one HSET, plus per worker one ZADD per index: the
-- sorted-set entries are collected and added together, in chunks that stay
-- well inside Lua's limit on unpacked arguments.
local first = redis.call('INCRBY', P .. 'seq', n) - n
local waiting, all = {}, {}
for i = 0, n - 1 do
  local b = 2 + i * 6
  local id, worker, run_at = ARGV[b], ARGV[b + 1], ARGV[b + 3]
  local seq = first + i + 1
  store(id, worker, ARGV[b + 2], run_at, ARGV[b + 4], ARGV[b + 5], seq)
  if not waiting[worker] then waiting[worker], all[worker] = {}, {} end
  local w, a = waiting[worker], all[worker]
  w[#w + 1], w[#w + 2] = run_at, wmember(seq, id)
  a[#a + 1], a[#a + 2] = seq, id
end
local function zadd(key, pairs)
  for s = 1, #pairs, 2000 do
    redis.call('ZADD', key, unpack(pairs, s, math.min(s + 1999, #pairs)))
  end
end
for worker, w in pairs(waiting) do
  zadd(P .. 'waiting:' .. worker, w)
  zadd(P .. 'all:' .. worker, all[worker])
  redis.call('SADD', P .. 'workers', worker)
end
if n > 0 then signal() end
return ''
"""

# ARGV: worker, limit, now, owner, token, lease_until, serial ('1' or '0').
# Returns the claimed jobs as HGETALL lists, in claim order.
CLAIM = r"""
local worker, limit, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local owner, token, lease_until = ARGV[4], ARGV[5], ARGV[6]
local wq = P .. 'waiting:' .. worker
local picked = {}
if ARGV[7] == '1' then
  local head = redis.call('ZRANGE', P .. 'all:' .. worker, 0, 0)[1]
  if head then
    local f = redis.call('HMGET', jkey(head), 'state', 'run_at', 'seq')
    if f[1] == 'waiting' and tonumber(f[2]) <= tonumber(now) then
      picked[1] = wmember(f[3], head)
    end
  end
elseif limit > 0 then
  picked = redis.call('ZRANGEBYSCORE', wq, '-inf', now, 'LIMIT', 0, limit)
end
local out = {}
for i, member in ipairs(picked) do
  local seq, id = tonumber(string.sub(member, 1, 16)), string.sub(member, 17)
  redis.call('ZREM', wq, member)
  redis.call('HSET', jkey(id), 'state', 'running', 'lease_owner', owner,
    'lease_token', token, 'lease_expires', lease_until)
  redis.call('HINCRBY', jkey(id), 'attempt', 1)
  redis.call('ZADD', P .. 'leases', lease_until, id)
  redis.call('ZADD', P .. 'running:' .. worker, seq, id)
  out[i] = redis.call('HGETALL', jkey(id))
end
return out
"""

# ARGV: id, token, id, token, ... Returns the ids completed (removed), in order.
COMPLETE = r"""
local out = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local f = held(id, ARGV[i + 1])
  if f then
    redis.call('DEL', jkey(id))  -- the hash goes whole: no need to clear its lease fields
    redis.call('ZREM', P .. 'leases', id)
    redis.call('ZREM', P .. 'running:' .. f[3], id)
    forget(id, f[3])
    out[#out + 1] = id
  end
end
return out
"""

# ARGV: id, token, run_at, error.
RETRY = r"""
local id = ARGV[1]
local f = held(id, ARGV[2])
if not f then return 0 end
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
unlease(id, f[3])
add_error(id, ARGV[3])
to_dead(id, f[3], f[4])
return 1
"""

# ARGV: id, token. The attempt is given back; run_at is kept.
RELEASE = r"""
local id = ARGV[1]
local f = held(id, ARGV[2])
if not f then return 0 end
unlease(id, f[3])
redis.call('HINCRBY', jkey(id), 'attempt', -1)
to_waiting(id, f[3], f[4], redis.call('HGET', jkey(id), 'run_at'))
signal()
return 1
"""

# ARGV: token, lease_until, ids... Returns the ids whose lease was extended.
EXTEND = r"""
local token, lease_until = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if held(id, token) then
    redis.call('HSET', jkey(id), 'lease_expires', lease_until)
    redis.call('ZADD', P .. 'leases', lease_until, id)
    out[#out + 1] = id
  end
end
return out
"""

# ARGV: now, error, owner ('' for none), has_owner ('1' or '0').
# Returns {waiting ids, dead ids}, each in seq order.
RECOVER = r"""
local now, err, owner = ARGV[1], ARGV[2], ARGV[3]
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
local jobs = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', jkey(id), 'seq', 'worker', 'attempt', 'max_attempts', 'state')
  if f[5] == 'running' then
    jobs[#jobs + 1] = {id = id, seq = tonumber(f[1]), worker = f[2],
      attempt = tonumber(f[3]), max = tonumber(f[4])}
  end
end
table.sort(jobs, function(a, b) return a.seq < b.seq end)
local waiting, dead = {}, {}
for _, j in ipairs(jobs) do
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
if #waiting > 0 then signal() end
return {waiting, dead}
"""

# ARGV: id. Returns 'deleted', 'missing' or 'running'.
DELETE = r"""
local id = ARGV[1]
local f = redis.call('HMGET', jkey(id), 'state', 'worker', 'seq')
if not f[1] then return 'missing' end
if f[1] == 'running' then return 'running' end
if f[1] == 'waiting' then
  redis.call('ZREM', P .. 'waiting:' .. f[2], wmember(f[3], id))
else
  redis.call('ZREM', P .. 'dead:' .. f[2], id)
end
redis.call('DEL', jkey(id))
forget(id, f[2])
return 'deleted'
"""

# ARGV: id, new_id, now. Returns 'requeued', 'missing', 'not_dead' or 'exists'.
REQUEUE = r"""
local id, new, now = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', jkey(id), 'state', 'worker', 'seq', 'errors')
if not f[1] then return 'missing' end
if f[1] ~= 'dead' then return 'not_dead' end
if redis.call('EXISTS', jkey(new)) == 1 then return 'exists' end
local worker, seq = f[2], f[3]
redis.call('RENAME', jkey(id), jkey(new))
for i = 1, tonumber(f[4]) do redis.call('HDEL', jkey(new), 'error:' .. i) end
redis.call('HSET', jkey(new), 'id', new, 'attempt', 0, 'errors', 0)
redis.call('ZREM', P .. 'dead:' .. worker, id)
redis.call('ZREM', P .. 'all:' .. worker, id)
redis.call('ZADD', P .. 'all:' .. worker, seq, new)
to_waiting(new, worker, seq, now)
signal()
return 'requeued'
"""

# ARGV: now. Returns {worker, waiting, scheduled, running, dead, worker, ...}.
COUNTS = r"""
local now = ARGV[1]
local out = {}
for _, w in ipairs(redis.call('SMEMBERS', P .. 'workers')) do
  local wq = P .. 'waiting:' .. w
  local runnable = redis.call('ZCOUNT', wq, '-inf', now)
  out[#out + 1] = w
  out[#out + 1] = runnable
  out[#out + 1] = redis.call('ZCARD', wq) - runnable
  out[#out + 1] = redis.call('ZCARD', P .. 'running:' .. w)
  out[#out + 1] = redis.call('ZCARD', P .. 'dead:' .. w)
end
return out
"""

# ARGV: state ('' for any), worker, has_worker ('1' or '0'), limit, after_seq.
# Returns up to limit jobs (HGETALL lists) with seq > after_seq, in seq order.
LIST = r"""
local state, limit, after = ARGV[1], tonumber(ARGV[4]), ARGV[5]
local workers = {ARGV[2]}
if ARGV[3] ~= '1' then workers = redis.call('SMEMBERS', P .. 'workers') end
local found = {}
for _, w in ipairs(workers) do
  -- running and dead jobs have their own seq-ordered sets; waiting ones are
  -- picked out of the worker's set of all jobs.
  local source, filter = P .. 'all:' .. w, state
  if state == 'running' or state == 'dead' then
    source, filter = P .. state .. ':' .. w, ''
  end
  local taken, offset = 0, 0
  while taken < limit do
    local batch = redis.call('ZRANGEBYSCORE', source, '(' .. after, '+inf',
      'WITHSCORES', 'LIMIT', offset, limit)
    if #batch == 0 then break end
    offset = offset + #batch / 2
    for i = 1, #batch, 2 do
      local id = batch[i]
      if filter == '' or redis.call('HGET', jkey(id), 'state') == filter then
        found[#found + 1] = {id = id, seq = tonumber(batch[i + 1])}
        taken = taken + 1
        if taken >= limit then break end
      end
    end
  end
end
table.sort(found, function(a, b) return a.seq < b.seq end)
local out = {}
for i = 1, math.min(limit, #found) do out[i] = redis.call('HGETALL', jkey(found[i].id)) end
return out
"""
