"""Side-by-side benchmarks of exqueue and its peers (Huey, RQ, Dramatiq, saq, Celery,
procrastinate) on the same local servers. Entry point: ``python -m benchmarks.run``."""
