"""The Lua helpers every RedisStorage script starts with (:data:`PRELUDE`).

They hold what the scripts share: key names, the members of the waiting
indexes, the checks made before a script's first write, the damage rules, and
the moves between states that keep every index in step. The key layout is
documented in ``exqueue_redis/__init__.py``.
"""

from __future__ import annotations

import re

from exqueue.storage import ERRORS_KEPT

# ``smember`` builds the member of a scheduled set: the seq zero-padded to 16
# digits, then the id; equal scores (run_at) sort by member bytes, so by seq.
# ``rmember`` builds the member of a ready set: run_at as 8 order-preserving
# bytes, the seq as 16 digits, then the id. The ready set's score is the
# priority, and equal scores sort by member bytes: (priority, run_at, seq).
PRELUDE = (
    f"local KEEP = {ERRORS_KEPT}\n"
    + r"""
local P = KEYS[1]
local function jkey(id) return P .. 'job:' .. id end
local function smember(seq, id) return string.format('%016d', tonumber(seq)) .. id end

-- A double as 8 bytes whose byte order is the numbers' order: IEEE 754 big
-- endian with the sign bit flipped for positives and every bit for negatives.
local function enc_time(x)
  local s = struct.pack('>d', x)
  local first = string.byte(s, 1)
  if first < 128 then return string.char(first + 128) .. string.sub(s, 2) end
  local b = {string.byte(s, 1, 8)}
  for i = 1, 8 do b[i] = 255 - b[i] end
  return string.char(unpack(b))
end
local function rmember(run_at, seq, id)
  return enc_time(tonumber(run_at)) .. string.format('%016d', tonumber(seq)) .. id
end
-- The unique index of (worker, key): ids of stored jobs with that key. The
-- worker's length comes first so no (worker, key) pair reads as another.
local function ukey(worker, key) return P .. 'u:' .. #worker .. ':' .. worker .. ':' .. key end
local function dkey(worker, key) return P .. 'ud:' .. #worker .. ':' .. worker .. ':' .. key end

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
-- An optional stored number: absent is fine, present must read.
local function opt_num_ok(s) return s == nil or s == false or num(s) ~= nil end
local function prio_ok(s)
  if s == nil or s == false then return true end
  local x = int(s)
  return x ~= nil and x >= -2147483648 and x <= 2147483647
end
local function meta_ok(s)
  if s == nil or s == false then return true end
  local ok, m = pcall(cjson.decode, s)
  if not ok or type(m) ~= 'table' then return false end
  for k, v in pairs(m) do
    if type(k) ~= 'string' or type(v) ~= 'string' then return false end
  end
  return true
end

local FIELDS = {'id', 'worker', 'seq', 'attempt', 'max_attempts', 'run_at', 'enqueued_at',
  'errors', 'payload', 'state', 'priority', 'expires_at', 'timeout', 'unique_period'}
local STATES = {waiting = true, running = true, dead = true}

-- Why the stored job cannot be read or moved (a corrupt or hostile hash), or nil,
-- given its fields by name (``m``). Meta is checked by the reader in Python.
local function damage_of(id, m)
  -- The fast path, taken by every sound job: no tables, no closures.
  local seq, attempt, max, n = int(m.seq), int(m.attempt), int(m.max_attempts), int(m.errors)
  if m.id == id and m.worker and m.worker ~= '' and seq and seq >= 0 and attempt
      and attempt >= 0 and max and max >= 0 and n and num(m.run_at) and num(m.enqueued_at)
      and m.payload and STATES[m.state] and prio_ok(m.priority) and opt_num_ok(m.expires_at)
      and opt_num_ok(m.timeout) and opt_num_ok(m.unique_period)
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
  for _, name in ipairs({'expires_at', 'timeout', 'unique_period'}) do
    if not opt_num_ok(m[name]) then note(name, 'is not a finite number') end
  end
  if not prio_ok(m.priority) then note('priority', 'is not a 32-bit integer') end
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

-- The job's {state, token, worker, seq, unique_key, unique_period} when it is
-- running with this token.
local function held(id, token)
  local f = redis.call('HMGET', jkey(id), 'state', 'lease_token', 'worker', 'seq',
    'unique_key', 'unique_period')
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

-- Back to waiting: into the scheduled set (a claim promotes it when due) and,
-- with an expiry, into the expiry index.
local function to_waiting(id, worker, seq, run_at)
  redis.call('HSET', jkey(id), 'state', 'waiting', 'run_at', run_at)
  redis.call('ZADD', P .. 'sched:' .. worker, run_at, smember(seq, id))
  local expires = redis.call('HGET', jkey(id), 'expires_at')
  if expires then redis.call('ZADD', P .. 'expiry', expires, smember(seq, id)) end
end

local function to_dead(id, worker, seq)
  redis.call('HSET', jkey(id), 'state', 'dead')
  redis.call('ZADD', P .. 'dead:' .. worker, seq, id)
end

-- Take a waiting job out of every waiting index (a member that cannot be
-- built from damaged fields is left for the claims to drop as stale).
local function unwait(id, worker, seq, run_at)
  if type(seq) == 'number' then seq = string.format('%d', seq) end
  if int(seq) ~= nil and int(seq) >= 0 then
    redis.call('ZREM', P .. 'sched:' .. worker, smember(seq, id))
    if num(run_at) ~= nil then
      redis.call('ZREM', P .. 'ready:' .. worker, rmember(run_at, seq, id))
    end
    redis.call('ZREM', P .. 'expiry', smember(seq, id))
  end
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
  if hseq ~= nil and hseq >= 0 then redis.call('ZREM', P .. 'expiry', smember(hseq, id)) end
  if f[2] and f[2] ~= '' then redis.call('ZREM', P .. 'running:' .. f[2], id) end
  redis.call('ZREM', P .. 'running:' .. worker, id)
  redis.call('HSET', k, 'id', id, 'worker', worker, 'seq', seq, 'state', 'dead')
  for i, default in pairs({[4] = '0', [5] = '1', [8] = '0'}) do
    if int(f[i]) == nil or int(f[i]) < 0 then redis.call('HSET', k, FIELDS[i], default) end
  end
  for _, i in ipairs({6, 7}) do
    if num(f[i]) == nil then redis.call('HSET', k, FIELDS[i], when) end
  end
  if not prio_ok(f[11]) then redis.call('HSET', k, 'priority', '0') end
  for _, i in ipairs({12, 13, 14}) do
    if not opt_num_ok(f[i]) then redis.call('HDEL', k, FIELDS[i]) end
  end
  if not meta_ok(redis.call('HGET', k, 'meta')) then redis.call('HDEL', k, 'meta') end
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

-- Leave the job's unique index (a removed or renamed job no longer holds its key).
local function unhold(id, worker, key)
  if key and worker then redis.call('SREM', ukey(worker, key), id) end
end

-- Wake waiters: only when one armed the signal, so a busy queue publishes nothing.
local function signal()
  if redis.call('DEL', P .. 'armed') == 1 then
    redis.call('PUBLISH', P .. 'wake', '1')
  end
end
"""
)

_DEFINES = re.compile(r"^local (?:function (\w+)|([\w, ]+?) =)", re.MULTILINE)
_NAME = re.compile(r"[A-Za-z_]\w*")


def _chunks(prelude: str) -> list[tuple[set[str], set[str], str]]:
    """The prelude's top-level statements: (names defined, names used, text), in order.

    A statement starts at a column-0 ``local``, with the comment lines above it.
    """
    chunks: list[list[str]] = []
    pending: list[str] = []
    for line in prelude.splitlines(keepends=True):
        if line.startswith("local "):
            chunks.append([*pending, line])
            pending = []
        elif line.startswith("--") or not line.strip() or not chunks:
            pending.append(line)
        else:
            chunks[-1].extend([*pending, line])
            pending = []
    out = []
    for lines in chunks:
        text = "".join(lines)
        head = next(line for line in lines if line.startswith("local "))
        match = _DEFINES.match(head)
        assert match is not None, head
        names = (
            {match.group(1)} if match.group(1) else set(match.group(2).replace(" ", "").split(","))
        )
        out.append((names, set(_NAME.findall(text)), text))
    return out


def _needed(chunks: list[tuple[set[str], set[str], str]], wanted: set[str]) -> list[bool]:
    """Which chunks define a name in ``wanted``, closed over what those use."""
    changed = True
    while changed:
        changed = False
        for names, uses, _ in chunks:
            if names & wanted and not uses <= wanted:
                wanted |= uses
                changed = True
    return [bool(names & wanted) for names, _, _ in chunks]


def prelude_for(body: str, prelude: str = PRELUDE) -> str:
    """The statements of ``prelude`` that ``body`` needs (directly or through them).

    Redis runs a script's whole text on every call, and defining every helper
    for every script costs about as much as a small script's own work; each
    script gets only its own helpers.
    """
    chunks = _chunks(prelude)
    needed = _needed(chunks, set(_NAME.findall(body)))
    return "".join(text for (_, _, text), keep in zip(chunks, needed, strict=True) if keep)


#: In a script body, a region the script seldom runs (a damaged job, a serial
#: claim, due scheduled jobs, a unique key...) between these two lines, each in
#: a place where a statement may start and inside one block (see with_prelude).
RARE_START, RARE_END = "--[[rare]]\n", "--[[/rare]]\n"
_RARE = re.compile(re.escape(RARE_START) + "(.*?)" + re.escape(RARE_END), re.DOTALL)


_COMMENT = re.compile(r"--[^\n]*")


def _names(code: str) -> set[str]:
    """The names ``code`` uses, its comments left out (their words are no uses)."""
    return set(_NAME.findall(_COMMENT.sub("", code)))


def with_prelude(body: str, prelude: str = PRELUDE) -> str:
    """``body`` with the helpers it needs in front of it.

    The helpers that only its rare regions (``RARE_START`` .. ``RARE_END``, not
    nested) need are defined at the start of each region that needs them, not up
    front, so a run that never enters one does not make their closures (a
    closure costs the server more the more locals are in scope: the claim's
    whole prelude cost about 22,000 instructions per call, and the rarely used
    helpers of FINISH about 4,500, callgrind).
    """
    if RARE_START not in body:
        return prelude_for(body, prelude) + body
    chunks = _chunks(prelude)
    texts = [text for _, _, text in chunks]
    outer = _needed(chunks, _names(_RARE.sub("", body)))
    head = "".join(text for text, keep in zip(texts, outer, strict=True) if keep)

    def region(match: re.Match[str]) -> str:
        inner = _needed(chunks, _names(match.group(1)))
        return "".join(
            text for text, keep, out in zip(texts, inner, outer, strict=True) if keep and not out
        ) + match.group(1)

    return head + _RARE.sub(region, body)
