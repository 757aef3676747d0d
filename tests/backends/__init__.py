"""Backend-specific behaviour only; the shared storage contract is proved by tests/conformance."""
