"""The exqueue storage conformance suite: prove a backend keeps the job contract.

Any storage backend, ours or a third party's, runs the same checks: for every
rule of the protocol a targeted check that always exercises its edge (explicit
examples, plus a small property), one module per area (``enqueue_order``,
``claims``, ``failures``, ``dead_jobs``, ``listing``, ``persistence``,
``capabilities``, ``races``, and protocol 2's ``priority``, ``unique``,
``expiry``, ``metadata``, and ``limits`` with its own state machine and
races); a Hypothesis state machine that drives the backend and an executable
reference model side by side (enqueue, claim, succeed, fail, release, extend,
clock advance, lease expiry, recover, stale holders, delete, retry-dead,
close-and-reopen) and compares every observable result after every
step; and real races between threads and between processes. A failing check
says which rule was broken, in words. Checks that need a capability
(``persistent``, ``multi_process``, ``wakeup``, ``transactional_enqueue``,
``complete_many``, ``server_clock``, ``priority``, ``unique``, ``expiry``,
``metadata``) run when the backend declares it in ``capabilities`` and are
skipped otherwise.

Install with ``pip install "exqueue[conformance]"`` and write, in your tests::

    import functools

    import pytest
    from conformance import StorageConformance

    from my_backend import MyStorage


    class TestMyStorage(StorageConformance):
        @pytest.fixture
        def make_storage(self, tmp_path):
            # Each call opens a new storage object over the same, initially empty
            # location; picklable, so processes can open it too.
            return functools.partial(MyStorage, f"mydb://{tmp_path}/jobs")

Then run ``pytest`` (thorough: ``pytest --conformance-profile=ci`` or
``EXQUEUE_CONFORMANCE_PROFILE=ci pytest``). See ``docs/conformance.md``.

Without pytest, :func:`run_suite` runs the checks and returns the failures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.checks import CHECKS, run_suite
    from conformance.model import Model
    from conformance.suite import StorageConformance

__all__ = ["CHECKS", "Model", "StorageConformance", "run_suite"]

_WHERE = {
    "CHECKS": "conformance.checks",
    "run_suite": "conformance.checks",
    "Model": "conformance.model",
    "StorageConformance": "conformance.suite",
}


def __getattr__(name: str) -> Any:
    # Lazy, because pytest imports this package for the plugin in every run, and
    # Hypothesis (an optional extra) must only be imported when the suite is used.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'conformance' has no attribute {name!r}")
