"""The one contract check: the conformance suite on every backend, and its power tests."""
