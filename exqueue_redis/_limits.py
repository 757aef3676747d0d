"""RedisStorage's cluster-wide limits and pause (capabilities ``LIMITS`` and ``PAUSE``).

Keys (all under the namespace's hash tag, so one Cluster slot, as every other key):

=================================  ======  =============================================
key                                type    holds
=================================  ======  =============================================
``{ns}:paused``                    set     names of the paused worker types
``{ns}:starts:<n>:<w>:<b>``        zset    one member per claim of a rate-limited type
                                           ``<w>`` (``<n>``: its length), score the
                                           claim's ``now``; ``<b>`` is the bucket:
                                           empty when the limits are not partitioned,
                                           ``n`` for partition None, ``p<partition>``
=================================  ======  =============================================

and the job hash's field ``partition`` (absent: None). A job stored with a
``dead_error`` goes straight into ``dead:<w>`` with that error (see ``ENQUEUE``).

A slot is a running job: a limited claim counts the worker's ``running:<w>`` set
(per partition it reads each running job's ``partition``; running jobs are
bounded by the nodes' concurrency), so every script that moves a job out of
running frees its slot by that move, recovery included. The claim is one script
(:data:`CLAIM_LIMITED`), so the check and the claim are one atomic step. Starts
older than the window are dropped as the claim reads them; a starts key of a
partition no longer used expires ``per`` + one hour after its last claim
(server time; only garbage collection, the window itself uses the caller's ``now``).
A claim looks past at most :data:`SCAN_LIMIT` ready jobs of full partitions.

``CLAIM`` (unlimited) checks ``{ns}:paused`` too, so a pause holds for every claim.
"""

from __future__ import annotations

import math

from exqueue.storage import JobRecord, LimitedClaim
from exqueue_redis._claim_text import CLAIM_DAMAGE, PROMOTE_DUE, READ_JOB, RUNNING_VIEW
from exqueue_redis._lazy import LazyScripts
from exqueue_redis._records import _number, _record, _text

#: The most ready jobs one limited claim examines (those of full partitions are passed over).
SCAN_LIMIT = 5000
_PROMOTE = 1000

# ARGV: worker, limit, now, owner, token, lease_until, concurrency ('' none), rate ('' none),
# since (now - per), partitioned ('1'/'0'), starts ttl (seconds). Returns as CLAIM does.
CLAIM_LIMITED = (
    f"local PROMOTE, SCAN = '{_PROMOTE}', {SCAN_LIMIT}\n"
    + r"""
local worker, limit, now = ARGV[1], need_int(ARGV[2], 'claim limit', 0), ARGV[3]
local owner, token, lease_until = ARGV[4], ARGV[5], ARGV[6]
local now_n = need_num(now, 'now')
need_num(lease_until, 'lease_until')
local conc, rate = nil, nil
if ARGV[7] ~= '' then conc = need_int(ARGV[7], 'concurrency', 1) end
if ARGV[8] ~= '' then rate = need_int(ARGV[8], 'rate', 1) end
local since = ARGV[9]
if rate then need_num(since, 'window start') end
local parted, ttl = ARGV[10] == '1', need_int(ARGV[11], 'starts ttl', 1)
if limit == 0 or redis.call('SISMEMBER', P .. 'paused', worker) == 1 then return {{}, {}} end
local sq, rq, rn = P .. 'sched:' .. worker, P .. 'ready:' .. worker, P .. 'running:' .. worker
local function bucket(part)
  if not parted then return '' end
  if part then return 'p' .. part end
  return 'n'
end
local function skey(b) return P .. 'starts:' .. #worker .. ':' .. worker .. ':' .. b end
-- Slots held: the running jobs, per bucket.
local used = {}
if conc then
  if parted then
    for _, id in ipairs(redis.call('ZRANGE', rn, 0, -1)) do
      local b = bucket(redis.call('HGET', jkey(id), 'partition') or nil)
      used[b] = (used[b] or 0) + 1
    end
  else
    used[''] = redis.call('ZCARD', rn)
  end
end
local started, taken = {}, {}
local function starts_of(b)
  local n = started[b]
  if n == nil then
    -- Starts at or before now - per are out of the window for good.
    redis.call('ZREMRANGEBYSCORE', skey(b), '-inf', since)
    n = redis.call('ZCARD', skey(b))
    started[b] = n
  end
  return n
end
local function room(b)
  local t = taken[b] or 0
  if conc and (used[b] or 0) + t >= conc then return false end
  if rate and starts_of(b) + t >= rate then return false end
  return true
end
if not parted and not room('') then return {{}, {}} end
local good, damaged, stale, later = {}, {}, {}, {}
local function consider(member, seq, id)
"""
    + READ_JOB
    + r"""
  if seq == nil or m.state ~= 'waiting' or (hseq ~= nil and hseq ~= seq) then
    stale[#stale + 1] = member
    return
  end
"""
    + CLAIM_DAMAGE
    + r"""
  if why then
    damaged[#damaged + 1] = {member, id, seq, why}
  elseif r > now_n then
    later[#later + 1] = {member, m.run_at, seq, id}
  elseif e and e <= now_n then
    return
  else
    local b = bucket(m.partition)
    if room(b) then
      taken[b] = (taken[b] or 0) + 1
      good[#good + 1] = {member, id, seq, h, at, m, b}
    end
  end
end
"""
    + PROMOTE_DUE
    + r"""
local offset, step, seen = 0, math.max(limit, 100), 0
while #good < limit and seen < SCAN do
  local batch = redis.call('ZRANGE', rq, offset, offset + step - 1)
  if #batch == 0 then break end
  offset = offset + #batch
  for _, member in ipairs(batch) do
    seen = seen + 1
    consider(member, tonumber(string.sub(member, 9, 24)), string.sub(member, 25))
    if #good >= limit or (not parted and not room('')) then break end
  end
  if not parted and not room('') then break end
end
for _, member in ipairs(stale) do redis.call('ZREM', rq, member) end
for _, l in ipairs(later) do
  redis.call('ZREM', rq, l[1])
  redis.call('ZADD', sq, l[2], smember(l[3], l[4]))
end
local gone = {}
for _, d in ipairs(damaged) do
  redis.call('ZREM', rq, d[1])
  bury_damaged(d[2], worker, d[3], now, d[4])
  gone[#gone + 1], gone[#gone + 2] = d[2], d[4]
end
local out = {}
for i, g in ipairs(good) do
  local id = g[2]
  redis.call('ZREM', rq, g[1])
  if g[6].expires_at then redis.call('ZREM', P .. 'expiry', smember(g[3], id)) end
  redis.call('HSET', jkey(id), 'state', 'running', 'lease_owner', owner,
    'lease_token', token, 'lease_expires', lease_until, 'started_at', now)
  local h = g[4]
  h[g[5]] = tostring(redis.call('HINCRBY', jkey(id), 'attempt', 1))
  redis.call('ZADD', P .. 'leases', lease_until, id)
  redis.call('ZADD', rn, g[3], id)
  if rate then
    redis.call('ZADD', skey(g[7]), now, token .. ':' .. id)
    redis.call('EXPIRE', skey(g[7]), ttl)
  end
"""
    + RUNNING_VIEW
    + r"""
  out[i] = h
end
return {out, gone}
"""
)

# ARGV: worker, paused ('1'/'0').
PAUSE = r"""
if ARGV[2] == '1' then
  redis.call('SADD', P .. 'paused', ARGV[1])
else
  redis.call('SREM', P .. 'paused', ARGV[1])
  signal()  -- its waiting jobs are claimable again
end
return 1
"""

_SOURCES = {"CLAIM_LIMITED": CLAIM_LIMITED, "PAUSE": PAUSE}


class RedisLimits(LazyScripts):
    """The limited claim and pause calls of ``RedisStorage`` (a base class of it)."""

    _prefix: str

    def _limits_script(self, name: str) -> str:
        return self._lazy("LIMITS", _SOURCES, name)

    def claim_limited(self, request: LimitedClaim) -> list[JobRecord]:
        lim = request.limits
        if request.limit <= 0:
            return []
        if (lim.rate is None) != (lim.per is None):
            raise ValueError("limits.rate and limits.per go together")
        per = float(lim.per) if lim.per is not None else 0.0
        now = float(request.now)
        rows, damaged = self._run(
            self._limits_script("CLAIM_LIMITED"),
            request.worker, int(request.limit), _number(now, "now"), request.owner,
            request.token, _number(request.lease_until, "lease_until"),
            "" if lim.concurrency is None else int(lim.concurrency),
            "" if lim.rate is None else int(lim.rate),
            _number(now - per, "now - per"), "1" if lim.partitioned else "0",
            int(math.ceil(per)) + 3600,
        )  # fmt: skip
        for job_id, reason in zip(damaged[::2], damaged[1::2], strict=True):
            import logging

            logging.getLogger("exqueue").error("job %s is dead: %s", _text(job_id), _text(reason))
        return [_record(row) for row in rows]

    def pause(self, worker: str, paused: bool) -> None:
        if not isinstance(worker, str) or not worker:
            raise ValueError(f"a worker name must be a non-empty string, not {worker!r}")
        self._run(self._limits_script("PAUSE"), worker, "1" if paused else "0")

    def paused(self) -> frozenset[str]:
        return frozenset(m.decode() for m in self._client.smembers(self._prefix + "paused"))
