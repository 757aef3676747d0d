"""RedisStorage only: URLs, Lua scripts, pools, cluster, wake-ups."""
