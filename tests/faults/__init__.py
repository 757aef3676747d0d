"""Crash, outage and hostile-input tests (marker ``faults``): they kill processes, stop servers."""
