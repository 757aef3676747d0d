"""The Lua text of a claim: ``CLAIM`` (a script of its own) and ``CLAIM_BODY``, which
``FINISH`` (:mod:`exqueue_redis._finish`) runs after its successes.

Apart from the other transitions' scripts (:mod:`exqueue_redis._scripts`) because
the claim is the longest and the most measured of them: its per-job text and its
costs (callgrind) are described next to it. The pieces it shares with the limited
claim are in :mod:`exqueue_redis._claim_text`.
"""

from __future__ import annotations

from exqueue_redis._claim_text import PROMOTE_DUE

#: The most due scheduled jobs one claim promotes into the ready set.
PROMOTE_CHUNK = 1000

# Reads member, seq, id, from (where the job was found: the ready set, or 'serial'):
# checks one job and adds it to ``g`` or to a rare case's list. Text spliced into
# CLAIM_BODY's loops inside ``repeat ... until true`` (``break`` skips the job),
# not a function: a closure over this many locals costs the server about as
# much as a call to make, on every claim (callgrind). ``seq``: the seq the index
# gives, nil if unreadable, false to read it from the ready member (its 16 digits,
# the seq zero-padded).
CONSIDER = r"""
  -- Read once, by position (CLAIMED_FIELDS, then state): checked now, returned
  -- (patched) after the writes. A job with every option at its default has just
  -- the ten fields every job has (see ENQUEUE): a hash of ten with those has
  -- nothing else, so only they are asked for (HMGET walks the hash for each name,
  -- an absent one to its end). Such a row stops after errors (the caller reads
  -- the rest as absent); any other has every field, false where absent. (HGETALL
  -- into a row by a name->position table measured the same: callgrind.)
  local k, f, state = jkey(id), nil, nil
  if redis.call('HLEN', k) == 10 then
    f = redis.call('HMGET', k, 'id', 'seq', 'worker', 'payload', 'attempt',
      'max_attempts', 'run_at', 'enqueued_at', 'errors', 'state')
    state = f[10]
    if state and f[1] and f[2] and f[3] and f[4] and f[5] and f[6] and f[7] and f[8]
        and f[9] then
      f[10] = nil
    else
      f = nil
    end
  end
  if f == nil then
    f = redis.call('HMGET', k, 'id', 'seq', 'worker', 'payload', 'attempt',
      'max_attempts', 'run_at', 'enqueued_at', 'errors', 'priority', 'meta', 'timeout',
      'expires_at', 'unique_key', 'partition', 'state')
    state, f[16] = f[16], nil
  end
  -- A ready member whose digits spell the stored seq, as every sound job's do,
  -- needs no parse (a tonumber costs the server about as much as a short call).
  local s, hseq = f[2], nil
  if seq == false and s and #s <= 16 and string.sub(member, 25 - #s, 24) == s
      and string.sub(member, 9, 24 - #s) == string.sub(ZEROS, #s + 1) then
    hseq = true
  else
    if seq == false then seq = tonumber(string.sub(member, 9, 24)) end
    hseq = int(s)
    if seq == nil or (hseq ~= nil and hseq ~= seq) then state = nil end
  end
  if state ~= 'waiting' then
    stale = stale or {}
    stale[#stale + 1] = {from, member}
    break
  end
  -- Only what would stop this script half-way or hand back another job's id
  -- is checked here, with tonumber rather than the stricter num()/int() (a
  -- full check per job costs about as much as the claim's writes); a field
  -- that fails to read back in Python is buried from there.
  -- A first attempt (most claims) skips the parse, and the format below.
  local r, e, a = tonumber(f[7]), f[13] and tonumber(f[13]), f[5] == '0' and 0 or int(f[5])
  local why = nil
  if f[1] ~= id or hseq == nil or a == nil or r == nil or r ~= r
      or r == math.huge or r == -math.huge or (f[13] and (e == nil or e ~= e)) then
    why = true  -- the damage rules tell why, after the look (CLAIM_BODY)
  end
  if why == nil and f[3] ~= worker then
    why = 'damaged stored job: indexed under worker ' .. worker
  end
  if (why or r > now_n) and not seq then seq = tonumber(string.sub(member, 9, 24)) end
  if why then
    damaged = damaged or {}
    damaged[#damaged + 1] = {from, member, id, seq, why}
  elseif r > now_n then
    if from == rq then
      later = later or {}
      later[#later + 1] = {member, f[7], seq, id}
    end
  elseif e and e <= now_n then
    break  -- never claimed; expire() makes it dead
  else
    ngood = ngood + 1
    f[5] = a == 0 and '1' or string.format('%d', a + 1)  -- the new attempt, returned and written
    local b = 5 * ngood
    g[b - 4], g[b - 3], g[b - 2], g[b - 1], g[b] = from, member, id, k, f
  end
"""[1:]

# ARGV: worker, limit, now, owner, token, lease_until, serial ('1' or '0').
# Returns one flat list (see _records._claim_reply): d, j, then d values naming
# the damaged jobs that were picked and made dead instead (id, reason, ...), then
# the j claimed jobs in claim order, each as its row's length and its row. A row
# is the CLAIMED_FIELDS of the job's hash in that order (the new attempt; false
# for a field that is absent), then its error fields as name, text pairs; a job
# with only the fields every job has, and no errors, stops after ``errors`` (the
# rest absent). The state and the lease fields are not sent: the caller wrote
# them (see _records._claimed). CLAIM_ARGS reads and checks the arguments into
# locals, CLAIM_BODY (FINISH runs it too) claims from them.
CLAIM_ARGS = r"""
-- A claim of one (a job thread's) skips the parse.
local worker, limit = ARGV[1], ARGV[2] == '1' and 1 or need_int(ARGV[2], 'claim limit', 0)
local now, owner, token, lease_until = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now_n, serial = need_num(now, 'now'), ARGV[7] == '1'
need_num(lease_until, 'lease_until')
"""

# Reads worker, limit, now, now_n, owner, token, lease_until, serial; sets ``reply``
# (a local of the text around it). Run inside ``repeat ... until true``: a paused
# type ends it with ``break``. Text, not a function (see CONSIDER), in CLAIM and FINISH.
CLAIM_BODY = (
    f"local PROMOTE = '{PROMOTE_CHUNK}'\n"
    + r"""
local sq, rq = P .. 'sched:' .. worker, P .. 'ready:' .. worker
-- A paused type is not claimed (see _limits).
if redis.call('SISMEMBER', P .. 'paused', worker) == 1 then reply = {0, 0} break end
-- Look first, write second: a job that cannot be claimed is buried alone, a
-- member whose job is gone or no longer waiting is dropped, one not yet due
-- goes back to the scheduled set, an expired one is left for expire().
-- The jobs to claim, five values each in one list (no table per job): from where,
-- member, id, key, fields. The lists of the rare cases are made on their first
-- entry: a table costs the server about as much as a short string operation, and
-- most claims need none.
local ngood, g = 0, {}
local damaged, stale, later = nil, nil, nil
local ZEROS = '0000000000000000'
if serial then
  -- Serial: only the head (lowest seq in any state), whatever its priority.
  local head = redis.call('ZRANGE', P .. 'all:' .. worker, 0, 0, 'WITHSCORES')
  if head[1] then
    local id = head[1]
    local state = redis.call('HGET', jkey(id), 'state')
    if state == false then
      -- An index entry whose job is gone would block the type for ever.
      redis.call('ZREM', P .. 'all:' .. worker, id)
    elseif state == 'waiting' and limit > 0 then
      local member, seq, from = nil, tonumber(head[2]), 'serial'
      repeat
"""
    + CONSIDER
    + r"""      until true
      stale = nil
    end
  end
elseif limit > 0 then
"""
    + PROMOTE_DUE
    + r"""
  -- By rank, the ready set's order; a string for a claim of one: Lua sprintf's numbers.
  local batch = redis.call('ZRANGE', rq, '0', limit == 1 and '0' or limit - 1)
  local offset = 0
  while #batch > 0 do
    offset = offset + #batch
    for _, member in ipairs(batch) do
      local seq, id, from = false, string.sub(member, 25), rq
      repeat
"""
    + CONSIDER
    + r"""      until true
      if ngood >= limit then break end
    end
    if ngood >= limit then break end
    batch = redis.call('ZRANGE', rq, offset, offset + limit - 1)
  end
end
if stale then
  for _, s in ipairs(stale) do redis.call('ZREM', s[1], s[2]) end
end
if later then
--[[rare]]
  for _, l in ipairs(later) do
    redis.call('ZREM', rq, l[1])
    redis.call('ZADD', sq, l[2], smember(l[3], l[4]))
  end
--[[/rare]]
end
-- The reply, flat: the server writes each nested list of a reply with about
-- the work of ten of its strings (callgrind), and most replies are short.
local out, no = {0, ngood}, 2
if damaged then
  -- The damage rules' helpers are defined here, in the branch that needs them
  -- (see with_prelude): a claim of sound jobs makes none of their closures.
--[[rare]]
  for _, d in ipairs(damaged) do
    local why = d[5]
    if why == true then why = damage(d[3]) or 'damaged stored job' end
    if d[1] == 'serial' then
      redis.call('ZREM', sq, smember(d[4], d[3]))
    elseif d[1] then
      redis.call('ZREM', d[1], d[2])
    end
    bury_damaged(d[3], worker, d[4], now, why)
    out[no + 1], out[no + 2] = d[3], why
    no = no + 2
  end
--[[/rare]]
  out[1] = no - 2
end
-- The sorted sets are written once per chunk of jobs (variadic ZREM and ZADD),
-- not once per job: a claim of hundreds of jobs is mostly these calls. The
-- removals come first: in a Redis at maxmemory, a script's first write is the
-- one checked against the limit, and a removal is never refused.
-- A claim of one job (a job thread's) makes its calls without the lists.
local CHUNK, one = 500, ngood == 1
local taken, leased, ran
if one then
  if g[1] == 'serial' then
--[[rare]]
    unwait(g[3], worker, g[5][2], g[5][7])
--[[/rare]]
  else
    redis.call('ZREM', rq, g[2])
  end
else
  taken, leased, ran = {}, {}, {}
  for b = 5, 5 * ngood, 5 do
    if g[b - 4] == 'serial' then
--[[rare]]
      unwait(g[b - 2], worker, g[b][2], g[b][7])
--[[/rare]]
    else
      taken[#taken + 1] = g[b - 3]
    end
  end
  for a = 1, #taken, CHUNK do
    redis.call('ZREM', rq, unpack(taken, a, math.min(a + CHUNK - 1, #taken)))
  end
end
for b = 5, 5 * ngood, 5 do
  local id, k, f = g[b - 2], g[b - 1], g[b]
  if g[b - 4] ~= 'serial' and f[13] then
--[[rare]]
    redis.call('ZREM', P .. 'expiry', smember(f[2], id))
--[[/rare]]
  end
  redis.call('HSET', k, 'state', 'running', 'lease_owner', owner,
    'lease_token', token, 'lease_expires', lease_until, 'started_at', now, 'attempt', f[5])
  if one then
    redis.call('ZADD', P .. 'leases', lease_until, id)
    -- The stored seq's text (checked equal): a Lua number would go through sprintf.
    redis.call('ZADD', P .. 'running:' .. worker, f[2], id)
  else
    leased[#leased + 1], leased[#leased + 2] = lease_until, id
    ran[#ran + 1], ran[#ran + 2] = f[2], id
  end
  -- The reply is the fields read (CLAIMED_FIELDS) with the new attempt, not the
  -- whole hash with its lease: about half as much for the server to write and
  -- the caller to read. The lease fields are the caller's own.
  if f[9] ~= '0' then
    -- The error fields follow the fifteen claimed ones: a short row is filled out first.
    for j = #f + 1, 15 do f[j] = false end
    local h = redis.call('HGETALL', k)
    for j = 1, #h, 2 do
      if string.sub(h[j], 1, 6) == 'error:' then f[#f + 1], f[#f + 2] = h[j], h[j + 1] end
    end
  end
  local m = #f
  out[no + 1] = m
  for j = 1, m do out[no + 1 + j] = f[j] end
  no = no + 1 + m
end
for a = 1, one and 0 or #leased, 2 * CHUNK do
  local b = math.min(a + 2 * CHUNK - 1, #leased)
  redis.call('ZADD', P .. 'leases', unpack(leased, a, b))
  redis.call('ZADD', P .. 'running:' .. worker, unpack(ran, a, b))
end
reply = out
"""
)

CLAIM = CLAIM_ARGS + "local reply\nrepeat\n" + CLAIM_BODY + "until true\nreturn reply\n"
