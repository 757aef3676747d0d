"""The README's quick start and the examples run as written."""
