"""The Lua scripts of RedisStorage that read the store, expire jobs and upgrade a layout.

As in :mod:`exqueue_redis._scripts`, every script gets the namespace prefix as
``KEYS[1]`` and runs after :data:`exqueue_redis._prelude.PRELUDE`.
"""

from __future__ import annotations

# ARGV: now, limit, error. Waiting jobs with expires_at <= now become dead with
# the error (attempt unchanged). Returns their ids in seq order: the limit takes
# the oldest seq first. Members of the expiry set are seq + id, so the due ones
# are put in seq order by their bytes, without reading their jobs.
EXPIRE = r"""
local now, err = ARGV[1], ARGV[3]
local now_n = need_num(now, 'now')
local limit = need_int(ARGV[2], 'expire limit', 0)
if limit == 0 then return {} end
local due = redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', now)
table.sort(due)
local jobs = {}
for _, member in ipairs(due) do
  if #jobs >= limit then break end
  local seq, id = int(string.sub(member, 1, 16)), string.sub(member, 17)
  local f = redis.call('HMGET', jkey(id), 'state', 'worker', 'seq', 'run_at', 'expires_at')
  local at = num(f[5])
  if seq == nil or f[1] ~= 'waiting' or at == nil or at > now_n or not f[2]
      or int(f[3]) ~= seq then
    redis.call('ZREM', P .. 'expiry', member)  -- stale: the job moved on or was changed
  else
    jobs[#jobs + 1] = {id = id, worker = f[2], seq = f[3], run_at = f[4]}
  end
end
local out = {}
for _, j in ipairs(jobs) do
  unwait(j.id, j.worker, j.seq, j.run_at)
  local why = damage(j.id)
  if why then
    bury_damaged(j.id, j.worker, int(j.seq), now, why .. '; then: ' .. err)
  else
    add_error(j.id, err)
    to_dead(j.id, j.worker, j.seq)
  end
  out[#out + 1] = j.id
end
return out
"""

# ARGV: now. Returns {worker, waiting, scheduled, running, dead, worker, ...}.
# The ready set holds jobs due when enqueued or promoted by a claim; the
# scheduled set's due part is waiting too.
COUNTS = r"""
local now = ARGV[1]
local out = {}
for _, w in ipairs(redis.call('SMEMBERS', P .. 'workers')) do
  local sq = P .. 'sched:' .. w
  local due = redis.call('ZCOUNT', sq, '-inf', now)
  out[#out + 1] = w
  out[#out + 1] = due + redis.call('ZCARD', P .. 'ready:' .. w)
  out[#out + 1] = redis.call('ZCARD', sq) - due
  out[#out + 1] = redis.call('ZCARD', P .. 'running:' .. w)
  out[#out + 1] = redis.call('ZCARD', P .. 'dead:' .. w)
end
return out
"""

# ARGV: state ('' for any), worker, has_worker ('1' or '0'), limit, after_seq,
# has_tag ('1' or '0'), tag key, tag value.
# Returns up to limit jobs (HGETALL lists) with seq > after_seq, in seq order.
LIST = r"""
local state, limit, after = ARGV[1], tonumber(ARGV[4]), ARGV[5]
local tagged, tag_key, tag_value = ARGV[6] == '1', ARGV[7], ARGV[8]
local workers = {ARGV[2]}
if ARGV[3] ~= '1' then workers = redis.call('SMEMBERS', P .. 'workers') end
local function wanted(id, filter)
  if filter ~= '' and redis.call('HGET', jkey(id), 'state') ~= filter then return false end
  if not tagged then return true end
  local raw = redis.call('HGET', jkey(id), 'meta')
  if not raw then return false end
  local ok, meta = pcall(cjson.decode, raw)
  return ok and type(meta) == 'table' and meta[tag_key] == tag_value
end
local found = {}
for _, w in ipairs(workers) do
  -- running and dead jobs have their own seq-ordered sets; waiting ones are
  -- picked out of the worker's set of all jobs.
  local source, filter = P .. 'all:' .. w, state
  if state == 'running' or state == 'dead' then
    source, filter = P .. state .. ':' .. w, ''
  end
  -- Batches follow a seq cursor (not an offset, which Redis walks from the start
  -- each time: quadratic past many filtered-out jobs, such as 100,000 dead ones
  -- before the first waiting one) and are at least 1,000 long.
  local taken, cursor, size = 0, '(' .. after, math.max(limit, 1000)
  local dead, running, probe = P .. 'dead:' .. w, P .. 'running:' .. w, size
  while taken < limit do
    local skipped, finished = false, false
    if filter == 'waiting' then
      -- A stretch of jobs all dead or running (the oldest jobs are often dead) is
      -- passed over by three counts on its seq range, not job by job; the stretch
      -- doubles while that goes on.
      local edge = redis.call('ZRANGEBYSCORE', source, cursor, '+inf',
        'WITHSCORES', 'LIMIT', probe - 1, 1)
      local hi = edge[2] or '+inf'
      local n = redis.call('ZCOUNT', source, cursor, hi)
      if n == 0 then
        finished = true
      elseif redis.call('ZCOUNT', dead, cursor, hi)
          + redis.call('ZCOUNT', running, cursor, hi) >= n then
        skipped, finished = true, hi == '+inf'
        cursor, probe = '(' .. hi, math.min(probe * 2, 65536)
      else
        probe = size
      end
    end
    if finished then break end
    if not skipped then
      local batch = redis.call('ZRANGEBYSCORE', source, cursor, '+inf',
        'WITHSCORES', 'LIMIT', 0, size)
      if #batch == 0 then break end
      cursor = '(' .. batch[#batch]
      for i = 1, #batch, 2 do
        local id = batch[i]
        if wanted(id, filter) then
          found[#found + 1] = {id = id, seq = tonumber(batch[i + 1])}
          taken = taken + 1
          if taken >= limit then break end
        end
      end
    end
  end
end
table.sort(found, function(a, b) return a.seq < b.seq end)
local out = {}
for i = 1, math.min(limit, #found) do out[i] = redis.call('HGETALL', jkey(found[i].id)) end
return out
"""

# ARGV: state ('' for any), worker, has_worker ('1' or '0'), limit, after_seq,
# has_tag ('1' or '0'), tag key, tag value, budget. The bounded LIST (capability
# job_scan): reads at most budget candidates (jobs of the state and worker) after
# after_seq, in seq order across the workers. Returns {next_after ('' when
# nothing is left), HGETALL list, ...}: the matches, at most limit.
SCAN = r"""
local state, limit, after = ARGV[1], tonumber(ARGV[4]), ARGV[5]
local tagged, tag_key, tag_value = ARGV[6] == '1', ARGV[7], ARGV[8]
local budget = tonumber(ARGV[9])
local workers = {ARGV[2]}
if ARGV[3] ~= '1' then workers = redis.call('SMEMBERS', P .. 'workers') end
-- Each worker's first budget + 1 members past the cursor hold every candidate
-- of the merged first budget, and say whether any is left after them. One
-- worker's are in order already (the common case: no merge, no sort).
local ids, seqs = {}, {}
local function source_of(w)
  if state == 'running' or state == 'dead' then return P .. state .. ':' .. w end
  return P .. 'all:' .. w
end
local function head(w)
  return redis.call('ZRANGEBYSCORE', source_of(w), '(' .. after, '+inf',
    'WITHSCORES', 'LIMIT', 0, budget + 1)
end
if #workers == 1 then
  local batch = head(workers[1])
  for i = 1, #batch, 2 do ids[#ids + 1], seqs[#seqs + 1] = batch[i], tonumber(batch[i + 1]) end
else
  local pool = {}
  for _, w in ipairs(workers) do
    local batch = head(w)
    for i = 1, #batch, 2 do pool[#pool + 1] = {batch[i], tonumber(batch[i + 1])} end
  end
  table.sort(pool, function(a, b) return a[2] < b[2] end)
  for i = 1, math.min(budget + 1, #pool) do ids[i], seqs[i] = pool[i][1], pool[i][2] end
end
local bound = ''
if #ids > budget then bound = string.format('%d', seqs[budget]) end
local out = {''}
for i = 1, math.min(budget, #ids) do
  local id, keep = ids[i], true
  if state == 'waiting' then keep = redis.call('HGET', jkey(id), 'state') == 'waiting' end
  if keep and tagged then
    local raw = redis.call('HGET', jkey(id), 'meta')
    local ok, meta = false, nil
    if raw then ok, meta = pcall(cjson.decode, raw) end
    keep = ok and type(meta) == 'table' and meta[tag_key] == tag_value
  end
  if keep then
    out[#out + 1] = redis.call('HGETALL', jkey(id))
    if #out - 1 >= limit then
      out[1] = string.format('%d', seqs[i])
      return out
    end
  end
end
out[1] = bound
return out
"""

# ARGV: from version, to version, note. Upgrades layout 1 to 2 in one step: a
# version-1 waiting set (score run_at, member seq + id) is exactly a version-2
# scheduled set, so it is renamed, and claims promote its jobs as they come due
# (a version-1 job has priority 0, so promotion in run_at order keeps the claim
# order). Job hashes need nothing: an absent protocol-2 field reads as its
# default. Returns the version found ('1' when this call upgraded).
UPGRADE = r"""
local found = redis.call('GET', P .. 'schema')
if found ~= ARGV[1] then return found or '' end
for _, w in ipairs(redis.call('SMEMBERS', P .. 'workers')) do
  if redis.call('EXISTS', P .. 'waiting:' .. w) == 1 then
    redis.call('RENAME', P .. 'waiting:' .. w, P .. 'sched:' .. w)
  end
end
redis.call('SET', P .. 'schema', ARGV[2])
redis.call('RPUSH', P .. 'schema:log', ARGV[3])
return found
"""
