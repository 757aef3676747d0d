"""The exqueue backend conformance suite."""
