"""The Lua scripts of RedisStorage: one script per transition, each one atomic step.

Every script gets one key, ``KEYS[1]``: the namespace prefix ``{ns}:``. The braces
are a Redis Cluster hash tag, so every key built from the prefix lives in the
same slot as ``KEYS[1]`` and the whole script runs on one node. The key layout is
documented in ``exqueue_redis/__init__.py``.

Times and floats arrive as Python ``repr`` strings and are stored as given, so
they round-trip exactly; Redis parses them itself for sorted-set scores.
"""

from __future__ import annotations

from exqueue.storage import ERRORS_KEPT

# Helpers shared by every script. ``wmember`` builds the member of a waiting set:
# the seq zero-padded to 16 digits, then the id. Equal scores (run_at) are ordered
# by member bytes, so equal run_at comes out in seq order: FIFO.
PRELUDE = f"local KEEP = {ERRORS_KEPT}\n" + r"""
local P = KEYS[1]
local function jkey(id) return P .. 'job:' .. id end
local function wmember(seq, id) return string.format('%016d', tonumber(seq)) .. id end

-- Inputs and stored fields are checked before a script's first write, so a
-- script applies whole or not at all. Only what Python's float()/int() also
-- read back is accepted (Lua's tonumber takes 'nan', 'inf' and '0x10').
local function num(s)
  -- find() returns positions only: no string is made, which keeps this cheap.
  if type(s) ~= 'string' or #s > 40 or s:find('[^%d%.eE%+%-]') then return nil end
  local x = tonumber(s)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end
local function int(s)
  if type(s) ~= 'string' or #s > 16 or s:find('[^%d%-]') then return nil end
  return tonumber(s)
end
local function refuse(msg) error({err = 'ERR exqueue: ' .. msg}) end
local function need_num(s, what)
  local x = num(s)
  if x == nil then refuse(what .. ' must be a finite number, not ' .. tostring(s)) end
  return x
end
local function need_int(s, what, low)
  local x = int(s)
  if x == nil or x < low then
    refuse(what .. ' must be an integer of at least ' .. low .. ', not ' .. tostring(s))
  end
  return x
end

local FIELDS = {'id', 'worker', 'seq', 'attempt', 'max_attempts', 'run_at', 'enqueued_at',
  'errors', 'payload', 'state'}
local STATES = {waiting = true, running = true, dead = true}

-- Why the stored job cannot be read or moved (a corrupt or hostile hash), or nil,
-- given its fields by name (``m``).
local function damage_of(id, m)
  -- The fast path, taken by every sound job: no tables, no closures.
  local seq, attempt, max, n = int(m.seq), int(m.attempt), int(m.max_attempts), int(m.errors)
  if m.id == id and m.worker and m.worker ~= '' and seq and seq >= 0 and attempt
      and attempt >= 0 and max and max >= 0 and n and num(m.run_at) and num(m.enqueued_at)
      and m.payload and STATES[m.state]
      and (n == 0 or (n > 0 and redis.call('HEXISTS', jkey(id), 'error:' .. n) == 1)) then
    return nil
  end
  local bad = {}
  local function note(name, why)
    local v = m[name]
    if not v then v = '(missing)' elseif #v > 40 then v = v:sub(1, 40) .. '...' end
    bad[#bad + 1] = name .. ' ' .. why .. ': ' .. v
  end
  if m.id ~= id then note('id', 'is not the job id') end
  if not m.worker or m.worker == '' then note('worker', 'is empty') end
  for _, name in ipairs({'seq', 'attempt', 'max_attempts', 'errors'}) do
    if int(m[name]) == nil or int(m[name]) < 0 then note(name, 'is not a count') end
  end
  for _, name in ipairs({'run_at', 'enqueued_at'}) do
    if num(m[name]) == nil then note(name, 'is not a finite number') end
  end
  if not m.payload then note('payload', 'is missing') end
  if not STATES[m.state] then note('state', 'is unknown') end
  if n ~= nil and n > 0 and redis.call('HEXISTS', jkey(id), 'error:' .. n) == 0 then
    note('errors', 'does not match the stored errors')
  end
  if #bad == 0 then return nil end
  return 'damaged stored job: ' .. table.concat(bad, '; ')
end

local function damage(id)
  local f, m = redis.call('HMGET', jkey(id), unpack(FIELDS)), {}
  for i, name in ipairs(FIELDS) do m[name] = f[i] or nil end
  return damage_of(id, m)
end

-- The job's {state, token, worker, seq} when it is running with this token.
local function held(id, token)
  local f = redis.call('HMGET', jkey(id), 'state', 'lease_token', 'worker', 'seq')
  if f[1] ~= 'running' or f[2] ~= token then return nil end
  return f
end

local function unlease(id, worker)
  redis.call('HDEL', jkey(id), 'lease_owner', 'lease_token', 'lease_expires', 'started_at')
  redis.call('ZREM', P .. 'leases', id)
  redis.call('ZREM', P .. 'running:' .. worker, id)
end

-- Delete the error fields numbered ``from`` to ``last``, going by the fields
-- there are (a hash written before the bound has every error).
local function drop_errors(k, from, last)
  for _, name in ipairs(redis.call('HKEYS', k)) do
    local i = name:match('^error:(%d+)$')
    if i and tonumber(i) >= from and tonumber(i) <= last then redis.call('HDEL', k, name) end
  end
end

-- Record an error: ``errors`` counts them all; the fields keep error:1 and the
-- last KEEP (error:n-KEEP+1 .. error:n). Bounded work, however many came before.
local function add_error(id, err)
  local k = jkey(id)
  local n = redis.call('HINCRBY', k, 'errors', 1)
  redis.call('HSET', k, 'error:' .. n, err)
  local gone = n - KEEP
  if gone >= 2 then
    redis.call('HDEL', k, 'error:' .. gone)
    if gone > 2 and redis.call('HEXISTS', k, 'error:' .. (gone - 1)) == 1 then
      drop_errors(k, 2, gone - 1)  -- a hash from before the bound, trimmed once
    end
  end
end

local function to_waiting(id, worker, seq, run_at)
  redis.call('HSET', jkey(id), 'state', 'waiting', 'run_at', run_at)
  redis.call('ZADD', P .. 'waiting:' .. worker, run_at, wmember(seq, id))
end

local function to_dead(id, worker, seq)
  redis.call('HSET', jkey(id), 'state', 'dead')
  redis.call('ZADD', P .. 'dead:' .. worker, seq, id)
end

-- A damaged job becomes dead alone, with the reason: unreadable fields are
-- reset to readable ones (the reason keeps what they held), so listing, show,
-- retry and delete work on it. ``seq`` and ``when`` are known-good fallbacks.
local function bury_damaged(id, worker, seq, when, reason)
  local k = jkey(id)
  local f = redis.call('HMGET', k, unpack(FIELDS))
  local hseq = int(f[3])
  if hseq ~= nil and hseq >= 0 then seq = hseq end
  redis.call('HDEL', k, 'lease_owner', 'lease_token', 'lease_expires', 'started_at')
  redis.call('ZREM', P .. 'leases', id)
  if f[2] and f[2] ~= '' then redis.call('ZREM', P .. 'running:' .. f[2], id) end
  redis.call('ZREM', P .. 'running:' .. worker, id)
  redis.call('HSET', k, 'id', id, 'worker', worker, 'seq', seq, 'state', 'dead')
  for i, default in pairs({[4] = '0', [5] = '1', [8] = '0'}) do
    if int(f[i]) == nil or int(f[i]) < 0 then redis.call('HSET', k, FIELDS[i], default) end
  end
  for _, i in ipairs({6, 7}) do
    if num(f[i]) == nil then redis.call('HSET', k, FIELDS[i], when) end
  end
  if not f[9] then redis.call('HSET', k, 'payload', '') end
  local n = int(redis.call('HGET', k, 'errors'))
  if n > 0 and redis.call('HEXISTS', k, 'error:' .. n) == 0 then
    redis.call('HSET', k, 'errors', '0')
  end
  add_error(id, reason)
  redis.call('ZADD', P .. 'dead:' .. worker, seq, id)
  redis.call('ZADD', P .. 'all:' .. worker, seq, id)
  redis.call('SADD', P .. 'workers', worker)
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
local n = need_int(ARGV[1], 'batch size', 0)
if #ARGV ~= 1 + 6 * n then refuse('enqueue needs 6 values per job') end
for i = 0, n - 1 do
  local b = 2 + i * 6
  if ARGV[b] == '' or ARGV[b + 1] == '' then refuse('job id and worker must be non-empty') end
  need_num(ARGV[b + 3], 'run_at')
  need_num(ARGV[b + 4], 'enqueued_at')
  need_int(ARGV[b + 5], 'max_attempts', 1)
end
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
# Returns {claimed jobs as HGETALL lists in claim order, {id, reason, ...}}: the
# second list names damaged jobs that were picked and made dead instead.
CLAIM = r"""
local worker, limit, now = ARGV[1], need_int(ARGV[2], 'claim limit', 0), ARGV[3]
local owner, token, lease_until = ARGV[4], ARGV[5], ARGV[6]
local now_n = need_num(now, 'now')
need_num(lease_until, 'lease_until')
local wq = P .. 'waiting:' .. worker
local picked = {}
if ARGV[7] == '1' then
  local head = redis.call('ZRANGE', P .. 'all:' .. worker, 0, 0, 'WITHSCORES')
  if head[1] then
    local f = redis.call('HMGET', jkey(head[1]), 'state', 'run_at')
    if f[1] == 'waiting' and (num(f[2]) == nil or num(f[2]) <= now_n) then
      picked[1] = string.format('%016d', tonumber(head[2])) .. head[1]
    elseif f[1] == false then
      -- An index entry whose job is gone would block the type for ever.
      redis.call('ZREM', P .. 'all:' .. worker, head[1])
    end
  end
elseif limit > 0 then
  picked = redis.call('ZRANGEBYSCORE', wq, '-inf', now, 'LIMIT', 0, limit)
end
-- Sort first, write second: a job that cannot be claimed is buried alone, a
-- member whose job is gone or no longer waiting is dropped, the rest are claimed.
local good, damaged, stale = {}, {}, {}
for _, member in ipairs(picked) do
  local seq, id = int(string.sub(member, 1, 16)), string.sub(member, 17)
  -- The whole hash, read once: checked now, returned (patched) after the writes.
  local h, m, at = redis.call('HGETALL', jkey(id)), {}, 0
  for j = 1, #h, 2 do
    m[h[j]] = h[j + 1]
    if h[j] == 'attempt' then at = j + 1 end
  end
  local state = m.state
  if seq == nil or state == nil or state == 'running' or state == 'dead' then
    stale[#stale + 1] = member
  else
    -- Only what would stop this script half-way (HINCRBY needs an integer) or
    -- hand back another job's id is checked here; a field that fails to read
    -- back in Python is buried from there.
    -- A full check per job would cost about as much as the claim's writes.
    local why = nil
    if m.id ~= id or int(m.attempt) == nil then why = damage_of(id, m) end
    if why == nil and m.worker ~= worker then
      why = 'damaged stored job: indexed under worker ' .. worker
    end
    if why then damaged[#damaged + 1] = {member, id, seq, why}
    else good[#good + 1] = {member, id, seq, h, at} end
  end
end
for _, member in ipairs(stale) do redis.call('ZREM', wq, member) end
local gone = {}
for _, d in ipairs(damaged) do
  redis.call('ZREM', wq, d[1])
  bury_damaged(d[2], worker, d[3], now, d[4])
  gone[#gone + 1], gone[#gone + 2] = d[2], d[4]
end
local out = {}
for i, g in ipairs(good) do
  local id = g[2]
  redis.call('ZREM', wq, g[1])
  redis.call('HSET', jkey(id), 'state', 'running', 'lease_owner', owner,
    'lease_token', token, 'lease_expires', lease_until, 'started_at', now)
  local h = g[4]
  h[g[5]] = tostring(redis.call('HINCRBY', jkey(id), 'attempt', 1))
  redis.call('ZADD', P .. 'leases', lease_until, id)
  redis.call('ZADD', P .. 'running:' .. worker, g[3], id)
  -- Appended pairs win over earlier ones when the caller reads the list.
  local n = #h
  h[n + 1], h[n + 2], h[n + 3], h[n + 4], h[n + 5] = 'state', 'running', 'lease_owner', owner,
    'lease_token'
  h[n + 6], h[n + 7], h[n + 8], h[n + 9], h[n + 10] = token, 'lease_expires', lease_until,
    'started_at', now
  out[i] = h
end
return {out, gone}
"""

# ARGV: id, token, id, token, ... Returns the ids completed (removed), in order.
# A success removes the job whole, so a damaged field does not matter here.
COMPLETE = r"""
local out = {}
for i = 1, #ARGV, 2 do
  local id = ARGV[i]
  local f = held(id, ARGV[i + 1])
  if f then
    redis.call('DEL', jkey(id))  -- the hash goes whole: no need to clear its lease fields
    redis.call('ZREM', P .. 'leases', id)
    if f[3] then
      redis.call('ZREM', P .. 'running:' .. f[3], id)
      forget(id, f[3])
    end
    out[#out + 1] = id
  end
end
return out
"""

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
local f = redis.call('HMGET', jkey(id), 'state', 'worker', 'seq')
if not f[1] then return 'missing' end
if f[1] == 'running' then return 'running' end
if f[2] then
  if int(f[3]) ~= nil and int(f[3]) >= 0 then
    redis.call('ZREM', P .. 'waiting:' .. f[2], wmember(f[3], id))
  end
  redis.call('ZREM', P .. 'dead:' .. f[2], id)
end
redis.call('DEL', jkey(id))
if f[2] then forget(id, f[2]) end
return 'deleted'
"""

# ARGV: id, new_id, now. Returns 'requeued', 'missing', 'not_dead' or 'exists'.
REQUEUE = r"""
local id, new, now = ARGV[1], ARGV[2], ARGV[3]
need_num(now, 'now')
local f = redis.call('HMGET', jkey(id), 'state', 'worker', 'seq', 'errors')
if not f[1] then return 'missing' end
if f[1] ~= 'dead' then return 'not_dead' end
if redis.call('EXISTS', jkey(new)) == 1 then return 'exists' end
local why = damage(id)
if why then refuse('job ' .. id .. ' cannot be retried: ' .. why .. '; delete it') end
local worker, seq = f[2], f[3]
redis.call('RENAME', jkey(id), jkey(new))
drop_errors(jkey(new), 1, math.huge)
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
