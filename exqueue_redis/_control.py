"""RedisStorage's cancellation and snooze (capabilities ``CANCEL`` and ``SNOOZE``).

Two fields of the job's own hash (``{ns}:job:<id>``), so they go with the job:

* ``cancel_token``: the lease token of the attempt a cancel marked. A mark dies
  with its attempt, since a new claim has a new token.
* ``snoozes``: how many times the job was snoozed.

Each call is one script, atomic on the server; every key is the namespace's
(one hash tag), so Cluster-safe like the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from exqueue.storage import (
    CANCELLED,
    CancelRequest,
    CancelResult,
    DeleteResult,
    SnoozeRequest,
    SnoozeResult,
)
from exqueue_redis._lazy import LazyScripts
from exqueue_redis._records import _number

# ARGV: id, delete ('1' or '0'), error. Returns cancelled, requested, finished,
# missing, or delete (the caller deletes it: a waiting or dead job).
CANCEL = r"""
local id = ARGV[1]
local f = redis.call('HMGET', jkey(id), 'state', 'lease_token', 'worker', 'seq', 'run_at')
if not f[1] then return 'missing' end
if f[1] == 'running' then
  redis.call('HSET', jkey(id), 'cancel_token', f[2] or '')
  return 'requested'
end
if ARGV[2] == '1' then return 'delete' end
if f[1] ~= 'waiting' then return 'finished' end
unwait(id, f[3], f[4], f[5])
local why = damage(id)
if why then
  bury_damaged(id, f[3] or '(unknown)', int(f[4]) or 0, '0', why .. '; then: ' .. ARGV[3])
else
  add_error(id, ARGV[3])
  to_dead(id, f[3], f[4])
end
return 'cancelled'
"""

# ARGV: token, ids... Returns the ids running with token and marked for it.
CANCEL_REQUESTED = r"""
local token, out = ARGV[1], {}
for i = 2, #ARGV do
  local f = redis.call('HMGET', jkey(ARGV[i]), 'state', 'lease_token', 'cancel_token')
  if f[1] == 'running' and f[2] == token and f[3] == token then out[#out + 1] = ARGV[i] end
end
return out
"""

# ARGV: id, token, run_at, max_snoozes. Returns snoozed, capped or lost.
SNOOZE = r"""
local id = ARGV[1]
local f = held(id, ARGV[2])
if not f then return 'lost' end
local run_at = need_num(ARGV[3], 'run_at')
local n = tonumber(redis.call('HGET', jkey(id), 'snoozes') or '0') or 0
if n >= tonumber(ARGV[4]) then return 'capped' end
local why = damage(id)
if why then bury_damaged(id, f[3] or '(unknown)', 0, '0', why) return 'lost' end
unlease(id, f[3])
redis.call('HINCRBY', jkey(id), 'attempt', -1)
redis.call('HSET', jkey(id), 'snoozes', n + 1)
redis.call('HDEL', jkey(id), 'cancel_token')
to_waiting(id, f[3], f[4], ARGV[3])
signal()
return 'snoozed'
"""

# ARGV: id. Returns the snooze count (0 for a missing job).
SNOOZES = r"""
return tonumber(redis.call('HGET', jkey(ARGV[1]), 'snoozes') or '0') or 0
"""

_SOURCES = {
    "CANCEL": CANCEL,
    "CANCEL_REQUESTED": CANCEL_REQUESTED,
    "SNOOZE": SNOOZE,
    "SNOOZES": SNOOZES,
}


class RedisControl(LazyScripts):
    """The cancel and snooze calls of ``RedisStorage`` (a base class of it)."""

    def delete(self, job_id: str) -> DeleteResult:
        raise NotImplementedError

    def _control(self, name: str) -> str:
        return self._lazy("CONTROL", _SOURCES, name)

    def cancel(self, request: CancelRequest) -> CancelResult:
        flag = "1" if request.delete else "0"
        for _ in range(3):
            found = self._run(self._control("CANCEL"), request.job_id, flag, CANCELLED).decode()
            if found != "delete":
                return cast(CancelResult, found)
            outcome = self.delete(request.job_id)
            if outcome != "running":  # claimed meanwhile: mark it instead
                return "missing" if outcome == "missing" else "deleted"
        return "requested"

    def cancel_requested(self, token: str, job_ids: Sequence[str]) -> list[str]:
        if not job_ids:
            return []
        found = self._run(self._control("CANCEL_REQUESTED"), token, *job_ids)
        return [item.decode() for item in found]

    def snooze(self, request: SnoozeRequest) -> SnoozeResult:
        found = self._run(
            self._control("SNOOZE"),
            request.job_id,
            request.token,
            _number(request.run_at, "run_at"),
            request.max_snoozes,
        )
        return cast(SnoozeResult, found.decode())

    def snoozes(self, job_id: str) -> int:
        return int(self._run(self._control("SNOOZES"), job_id))
