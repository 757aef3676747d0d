"""Like-for-like benchmarks of exqueue and its peers (Huey, RQ, Dramatiq, saq, arq, Celery,
procrastinate) on the same local servers. Entry point: ``python -m benchmarks.run``."""
