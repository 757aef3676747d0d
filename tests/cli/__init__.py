"""The ``exqueue`` command line, run in child processes as an operator would."""
