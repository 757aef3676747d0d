"""RedisStorage's live nodes and outcome history (capabilities ``NODES`` and ``HISTORY``).

Keys (same hash tag as every other key, so Cluster-safe: one slot per namespace):

=================================  ======  =========================================
key                                type    holds
=================================  ======  =========================================
``{ns}:nodes``                     hash    node name -> the node as a JSON object
``{ns}:nodes:seen``                zset    node name, scored by its ``seen_at``
``{ns}:history:<minute>``          hash    ``s:<worker>``, ``f:<worker>``,
                                           ``d:<worker>`` (ints) and ``t:<worker>``
                                           (run-time seconds) of that minute
``{ns}:history:minutes``           zset    the minutes with a hash, scored by minute
=================================  ======  =========================================

Each call is one script, so a heartbeat or a batch of counts is applied whole;
counts are added with ``HINCRBY``/``HINCRBYFLOAT``, so nodes writing one
minute at once never lose one another's counts. A row always has its four
fields (zeros included), so a minute's rows are its hash length over four.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from exqueue.storage import (
    HistoryCount,
    NodeInfo,
    history_problem,
    node_problem,
    schedules_as_json,
    schedules_from_json,
    types_as_json,
    types_from_json,
)
from exqueue_redis._lazy import LazyScripts

# ARGV: name, the node as JSON, seen_at.
BEAT = r"""
redis.call('HSET', KEYS[1] .. 'nodes', ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1] .. 'nodes:seen', ARGV[3], ARGV[1])
return 1
"""

# ARGV: before ('' for none), name ('' for none). Returns the names removed.
DROP = r"""
local P = KEYS[1]
local gone = {}
if ARGV[1] ~= '' then
  gone = redis.call('ZRANGEBYSCORE', P .. 'nodes:seen', '-inf', '(' .. ARGV[1])
end
if ARGV[2] ~= '' and redis.call('HEXISTS', P .. 'nodes', ARGV[2]) == 1 then
  local seen = false
  for _, name in ipairs(gone) do if name == ARGV[2] then seen = true end end
  if not seen then gone[#gone + 1] = ARGV[2] end
end
for _, name in ipairs(gone) do
  redis.call('HDEL', P .. 'nodes', name)
  redis.call('ZREM', P .. 'nodes:seen', name)
end
return gone
"""

# ARGV: worker, minute, succeeded, failed, dead, run_time; repeated.
ADD = r"""
local P = KEYS[1]
for i = 1, #ARGV, 6 do
  local w, minute = ARGV[i], ARGV[i + 1]
  local key = P .. 'history:' .. minute
  redis.call('HINCRBY', key, 's:' .. w, ARGV[i + 2])
  redis.call('HINCRBY', key, 'f:' .. w, ARGV[i + 3])
  redis.call('HINCRBY', key, 'd:' .. w, ARGV[i + 4])
  redis.call('HINCRBYFLOAT', key, 't:' .. w, ARGV[i + 5])
  redis.call('ZADD', P .. 'history:minutes', minute, minute)
end
return 1
"""

# ARGV: since. Returns {minute, {field, value, ...}, ...}.
READ = r"""
local P = KEYS[1]
local out = {}
for _, minute in ipairs(redis.call('ZRANGEBYSCORE', P .. 'history:minutes', ARGV[1], '+inf')) do
  out[#out + 1] = minute
  out[#out + 1] = redis.call('HGETALL', P .. 'history:' .. minute)
end
return out
"""

# ARGV: before. Returns how many rows were removed.
PRUNE = r"""
local P = KEYS[1]
local removed = 0
local old = redis.call('ZRANGEBYSCORE', P .. 'history:minutes', '-inf', '(' .. ARGV[1])
for _, minute in ipairs(old) do
  removed = removed + redis.call('HLEN', P .. 'history:' .. minute) / 4
  redis.call('DEL', P .. 'history:' .. minute)
  redis.call('ZREM', P .. 'history:minutes', minute)
end
return removed
"""

_SOURCES = {"BEAT": BEAT, "DROP": DROP, "ADD": ADD, "READ": READ, "PRUNE": PRUNE}


class RedisObserve(LazyScripts):
    """The node and history calls of ``RedisStorage`` (a base class of it)."""

    def _observe_script(self, name: str) -> str:
        # These scripts stand alone: they use none of the prelude.
        return self._lazy("OBSERVE", _SOURCES, name, prelude=False)

    def beat_node(self, node: NodeInfo) -> None:
        problem = node_problem(node)
        if problem is not None:
            raise ValueError(f"{problem}; nothing was stored")
        body = json.dumps(
            {
                "host": node.host,
                "pid": node.pid,
                "started_at": float(node.started_at),
                "seen_at": float(node.seen_at),
                "workers": dict(node.workers),
                "running": node.running,
                "types": types_as_json(node.types),
                "schedules": schedules_as_json(node.schedules),
            }
        )
        self._run(self._observe_script("BEAT"), node.name, body, repr(float(node.seen_at)))

    def nodes(self) -> list[NodeInfo]:
        flat = self._client.hgetall(self._prefix_key("nodes"))
        found = []
        for name, raw in flat.items():
            data = json.loads(raw)
            found.append(
                NodeInfo(
                    name.decode(),
                    data["host"],
                    int(data["pid"]),
                    float(data["started_at"]),
                    float(data["seen_at"]),
                    {str(k): int(v) for k, v in data["workers"].items()},
                    int(data["running"]),
                    # A node stored before types were published has none.
                    types_from_json(data.get("types")),
                    schedules_from_json(data.get("schedules")),
                )
            )
        return sorted(found, key=lambda node: node.name)

    def _prefix_key(self, name: str) -> str:
        prefix: str = self.__dict__["_prefix"]
        return prefix + name

    def drop_nodes(self, *, before: float | None = None, name: str | None = None) -> list[str]:
        if before is None and name is None:
            return []
        gone = self._run(
            self._observe_script("DROP"),
            "" if before is None else repr(float(before)),
            name or "",
        )
        return sorted(item.decode() for item in gone)

    def add_history(self, counts: Sequence[HistoryCount]) -> None:
        for count in counts:
            problem = history_problem(count)
            if problem is not None:
                raise ValueError(f"{problem}; nothing was stored")
        if not counts:
            return
        args: list[str | int] = []
        for c in counts:
            args += [c.worker, c.minute, c.succeeded, c.failed, c.dead, repr(float(c.run_time))]
        self._run(self._observe_script("ADD"), *args)

    def history(self, *, since: int, worker: str | None = None) -> list[HistoryCount]:
        flat = self._run(self._observe_script("READ"), int(since))
        rows: list[HistoryCount] = []
        for i in range(0, len(flat), 2):
            minute = int(flat[i])
            fields = flat[i + 1]
            values: dict[str, dict[str, bytes]] = {}
            for j in range(0, len(fields), 2):
                kind, _, name = fields[j].decode().partition(":")
                values.setdefault(name, {})[kind] = fields[j + 1]
            for name in sorted(values):
                if worker is not None and name != worker:
                    continue
                v = values[name]
                rows.append(
                    HistoryCount(
                        name,
                        minute,
                        int(v.get("s", 0)),
                        int(v.get("f", 0)),
                        int(v.get("d", 0)),
                        float(v.get("t", 0.0)),
                    )
                )
        return rows

    def prune_history(self, before: int) -> int:
        return int(self._run(self._observe_script("PRUNE"), int(before)))
