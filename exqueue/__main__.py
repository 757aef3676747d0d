"""``python -m exqueue``: the same as the ``exqueue`` command."""

from exqueue.cli import run

run()
