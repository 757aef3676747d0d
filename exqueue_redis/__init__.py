"""RedisStorage: redis-py backend with atomic Lua transitions."""
