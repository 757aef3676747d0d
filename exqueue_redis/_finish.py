"""The Lua text of FINISH: successes, then a claim, in one script (capability
``FINISH_AND_CLAIM``, see :mod:`exqueue.storage_next`).

A job thread that has just finished a job writes its success and claims its next
job in one round trip instead of two. The script is the ``COMPLETE_PART`` and
``CLAIM_BODY`` texts of :mod:`exqueue_redis._scripts` and
:mod:`exqueue_redis._claim_script` run unchanged, one after the
other, each in a block of its own reading the locals it expects: the claim sees
the store as the successes left it (a serial type's next head is claimable), and
one script is atomic, so the claim can never run before the successes, whatever
the script cache holds. The workers-set upkeep of the successes (``UNLIST``) runs
last, skipping the claimed type, which the claim has just shown to still have
jobs. One key (the namespace's hash tag), as every script: it runs on a Redis
Cluster too.
"""

from __future__ import annotations

from exqueue_redis import _claim_script, _scripts

# ARGV: n (the number of successes), now (the completion and claim time), then n
# (id, token) pairs, then CLAIM's arguments but now: worker, limit, owner, token,
# lease_until, serial. Returns CLAIM's flat list, then the ids completed (as
# COMPLETE). Every argument is checked before the first write.
FINISH = (
    r"""
local n = ARGV[1] == '1' and 1 or tonumber(ARGV[1])  -- one success: no parse
if n == nil or n < 0 or 2 * n + 8 ~= #ARGV then
  return redis.error_reply('FINISH: malformed arguments')
end
local c, now = 3 + 2 * n, ARGV[2]
local first, last, worker = 3, c - 1, ARGV[c]
local limit = ARGV[c + 1] == '1' and 1 or need_int(ARGV[c + 1], 'claim limit', 0)
local now_n = need_num(now, 'now')
local owner, token, lease_until, serial = ARGV[c + 2], ARGV[c + 3], ARGV[c + 4], ARGV[c + 5] == '1'
need_num(lease_until, 'lease_until')
-- The two parts as text in blocks of their own, not functions: a closure over
-- the prelude's helpers costs the server about as much as a call to make.
local completed, unlisted
do
"""
    + _scripts.COMPLETE_PART
    + r"""completed, unlisted = out, by_worker
end
local reply
repeat
"""
    + _claim_script.CLAIM_BODY
    + r"""until true
local by_worker = unlisted
-- A type the claim just took a job of still has jobs: no need to count them.
if reply[2] > 0 then by_worker[worker] = nil end
"""
    + _scripts.UNLIST
    + r"""local m = #reply
for i = 1, #completed do reply[m + i] = completed[i] end
return reply
"""
)
