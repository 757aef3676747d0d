"""Real worker processes: exactly-once across processes, SIGKILL and restart, the supervisor."""
