"""RedisStorage's schedule states (capability ``SCHEDULES``), one Lua script per call.

Keys (same hash tag as every other key, so Cluster-safe: one slot per namespace):

=============================  ======  ===========================================
key                            type    holds
=============================  ======  ===========================================
``{ns}:schedule:<name>``       hash    ``last_tick`` (a Python ``repr`` float) and
                                       ``paused`` (``1`` or ``0``)
``{ns}:schedules``             set     the names of every stored schedule
=============================  ======  ===========================================

``FIRE`` is the ``ENQUEUE`` script of :mod:`._scripts` wrapped in a function,
between a head that checks the tick and a tail that records it: the job and
its tick are written by one script, so atomically, and never one without the
other. The schedule's own arguments come first and are taken off ``ARGV``
before the enqueue body reads it, so the body runs unchanged.
"""

from __future__ import annotations

from exqueue.storage import NewJob, ScheduleState
from exqueue_redis import _scripts
from exqueue_redis._lazy import LazyScripts
from exqueue_redis._records import _enqueue_args, _number

# ARGV: name, tick, then ENQUEUE's arguments for one job.
# Returns 1 (stored), 0 (an older tick, or paused) or {'dup', id} (nothing written).
_FIRE_HEAD = r"""
local sname, stick = ARGV[1], ARGV[2]
table.remove(ARGV, 1)
table.remove(ARGV, 1)
if sname == '' then refuse('schedule name must be non-empty') end
local tick = need_num(stick, 'tick')
local skey = P .. 'schedule:' .. sname
local state = redis.call('HMGET', skey, 'last_tick', 'paused')
local last = num(state[1])
if last ~= nil and tick <= last then return 0 end
local paused = state[2] == '1'
local function enqueue_job()
"""
_FIRE_TAIL = r"""
end
if not paused then
  local outcome = enqueue_job()
  if outcome[1] == 'dup' then return outcome end
end
redis.call('HSET', skey, 'last_tick', stick)
redis.call('SADD', P .. 'schedules', sname)
if paused then return 0 end
return 1
"""
FIRE = _FIRE_HEAD + _scripts.ENQUEUE + _FIRE_TAIL

# No ARGV. Returns {name, last_tick or false, paused, ...}.
SCHEDULES = r"""
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', P .. 'schedules')) do
  local f = redis.call('HMGET', P .. 'schedule:' .. name, 'last_tick', 'paused')
  out[#out + 1] = name
  out[#out + 1] = f[1] or ''
  out[#out + 1] = f[2] or '0'
end
return out
"""

# ARGV: name, paused ('1' or '0').
PAUSE = r"""
if ARGV[1] == '' then refuse('schedule name must be non-empty') end
redis.call('HSET', P .. 'schedule:' .. ARGV[1], 'paused', ARGV[2])
redis.call('SADD', P .. 'schedules', ARGV[1])
return 1
"""


_SOURCES = {"FIRE": FIRE, "SCHEDULES": SCHEDULES, "PAUSE": PAUSE}


class RedisSchedules(LazyScripts):
    """The schedule calls of ``RedisStorage`` (a base class of it)."""

    def _script(self, name: str) -> str:
        return self._lazy("SCHEDULES", _SOURCES, name)

    def fire(self, schedule: str, tick: float, job: NewJob) -> bool:
        result = self._run(
            self._script("FIRE"), schedule, _number(tick, "tick"), 1, *_enqueue_args(job)
        )
        if isinstance(result, list):
            raise ValueError(
                f"duplicate job id {result[1].decode()!r}; nothing was stored and no tick recorded"
            )
        return bool(result)

    def schedules(self) -> list[ScheduleState]:
        flat = self._run(self._script("SCHEDULES"))
        states = []
        for i in range(0, len(flat), 3):
            name, last, paused = flat[i].decode(), flat[i + 1], flat[i + 2]
            try:
                tick = float(last) if last else None
            except ValueError:
                tick = None  # a damaged value: the next fire records a good one
            states.append(ScheduleState(name, tick, paused == b"1"))
        return sorted(states, key=lambda state: state.name)

    def pause_schedule(self, schedule: str, paused: bool) -> None:
        self._run(self._script("PAUSE"), schedule, "1" if paused else "0")
