"""The Lua text of a claim, spliced into the scripts where it stands: the due-job
promotion (CLAIM in :mod:`exqueue_redis._scripts` and CLAIM_LIMITED in
:mod:`exqueue_redis._limits`), and the whole-hash read, damage check and running
view that CLAIM_LIMITED uses (CLAIM reads and returns only the fields it needs, by
position, with a cheaper check of its own).

Text rather than prelude functions: these parts run once per job a claim takes,
and a Lua function call there costs about 1% of a claim's instructions (callgrind,
claims of 200 jobs).
Each part says which locals it reads and which it defines; each is whole lines
without the last newline, which the text after it brings.
"""

from __future__ import annotations

# Reads sq, rq, now, PROMOTE (a string): moves up to PROMOTE due jobs of the scheduled set to
# the ready set.
PROMOTE_DUE = r"""
  -- Counted first: most claims find none due, and a call costs the server about
  -- as much per argument it is given as for itself (callgrind).
  if redis.call('ZCOUNT', sq, '-inf', now) > 0 then
--[[rare]]
    local due = redis.call('ZRANGEBYSCORE', sq, '-inf', now, 'LIMIT', '0', PROMOTE)
    for _, member in ipairs(due) do
      local id = string.sub(member, 17)
      local f = redis.call('HMGET', jkey(id), 'state', 'priority', 'run_at', 'seq')
      redis.call('ZREM', sq, member)
      local seq = int(string.sub(member, 1, 16))
      if f[1] == 'waiting' and seq and (int(f[4]) == nil or int(f[4]) == seq) then
        -- A damaged priority or run_at sorts first, for the claim to bury it.
        local prio, run_at = '-2147483648', '-1e308'
        if prio_ok(f[2]) then prio = f[2] or '0' end
        if num(f[3]) then run_at = f[3] end
        redis.call('ZADD', rq, prio, rmember(run_at, seq, id))
      end
    end
--[[/rare]]
  end
"""[1:-1]

# Reads id; defines h (the HGETALL list), m (the fields by name), at (h's index of
# the attempt) and hseq (the stored seq).
READ_JOB = r"""
  -- The whole hash, read once: checked now, returned (patched) after the writes.
  local h, m, at = redis.call('HGETALL', jkey(id)), {}, 0
  for j = 1, #h, 2 do
    m[h[j]] = h[j + 1]
    if h[j] == 'attempt' then at = j + 1 end
  end
  local hseq = int(m.seq)
"""[1:-1]

# Reads id, m, hseq, worker; defines r and e (run_at and expires_at read) and why
# (why the job cannot be claimed; nil: it can).
CLAIM_DAMAGE = r"""
  -- Only what would stop this script half-way or hand back another job's id
  -- is checked here, with tonumber rather than the stricter num()/int() (a
  -- full check per job costs about as much as the claim's writes); a field
  -- that fails to read back in Python is buried from there.
  local r, e = tonumber(m.run_at), m.expires_at and tonumber(m.expires_at)
  local why = nil
  if m.id ~= id or hseq == nil or int(m.attempt) == nil or r == nil or r ~= r
      or r == math.huge or r == -math.huge or (m.expires_at and (e == nil or e ~= e)) then
    why = damage_of(id, m) or 'damaged stored job'
  end
  if why == nil and m.worker ~= worker then
    why = 'damaged stored job: indexed under worker ' .. worker
  end
"""[1:-1]

# Reads h, owner, token, lease_until, now: appends the running job's new fields to h.
RUNNING_VIEW = r"""
  -- Appended pairs win over earlier ones when the caller reads the list.
  local n = #h
  h[n + 1], h[n + 2], h[n + 3], h[n + 4], h[n + 5] = 'state', 'running', 'lease_owner', owner,
    'lease_token'
  h[n + 6], h[n + 7], h[n + 8], h[n + 9], h[n + 10] = token, 'lease_expires', lease_until,
    'started_at', now
"""[1:-1]
