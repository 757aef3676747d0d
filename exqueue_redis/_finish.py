"""The Lua text of FINISH: successes, then a claim, in one script (capability
``FINISH_AND_CLAIM``, see :mod:`exqueue.storage_next`).

A job thread that has just finished a job writes its success and claims its next
job in one round trip instead of two. The script is the ``COMPLETE`` and ``CLAIM``
scripts of :mod:`exqueue_redis._scripts` run unchanged, one after the other, each
as a local function whose parameter ``ARGV`` (its own arguments, cut from the
call's) hides the global: the claim sees the store as the successes left it (a
serial type's next head is claimable), and one script is atomic, so the claim can
never run before the successes, whatever the script cache holds. One key (the
namespace's hash tag), as every script: it runs on a Redis Cluster too.
"""

from __future__ import annotations

from exqueue_redis import _scripts

# ARGV: n (the number of successes), now (the completion time, '' for none), then n
# (id, token) pairs, then CLAIM's seven arguments. Returns {the ids completed (as
# COMPLETE), the claimed jobs, the damaged ones (as CLAIM)}.
FINISH = (
    "local function complete_part(ARGV)\n"
    + _scripts.COMPLETE
    + "end\nlocal function claim_part(ARGV)\n"
    + _scripts.CLAIM
    + r"""end
local n = tonumber(ARGV[1])
if n == nil or n < 0 or 2 * n + 9 ~= #ARGV then
  return redis.error_reply('FINISH: malformed arguments')
end
local done, claim = {ARGV[2]}, {}
for i = 3, 2 + 2 * n do done[#done + 1] = ARGV[i] end
for i = 3 + 2 * n, #ARGV do claim[#claim + 1] = ARGV[i] end
local completed = complete_part(done)
local taken = claim_part(claim)
return {completed, taken[1], taken[2]}
"""
)
