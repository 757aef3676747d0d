"""The conformance suite must fail on broken backends, every run: a test of the tests.

Each backend of :data:`tests.conformance.broken_backends.BROKEN` (and of
``broken_backends_v2.BROKEN_V2``, the protocol-2 rules) is a correct
backend with one realistic contract violation. With the ``ci`` profile (the one
a backend's CI runs, randomized as it is there) the suite must reject each;
the targeted check named for it must reject it on its own, with a message that
states the rule; the state machine must still find the original fourteen by
itself; and the same suite must pass correct backends built the same ways, so
a suite that fails everything proves nothing.

``benchmarks/conformance_catch.py`` runs this module ten times with different
``--hypothesis-seed`` values to measure the catch table in ``docs/conformance.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, settings

from conformance import run_suite
from conformance.base import RuleBroken
from conformance.profiles import get_settings
from exqueue.storage import Storage
from tests.conformance.broken_backends import BROKEN as BROKEN_V1
from tests.conformance.broken_backends import CORRECT
from tests.conformance.broken_backends import MODEL_FINDS as MODEL_FINDS_V1
from tests.conformance.broken_backends_v2 import BROKEN_V2, MODEL_FINDS_V2

BROKEN = {**BROKEN_V1, **BROKEN_V2}
MODEL_FINDS = (*MODEL_FINDS_V1, *MODEL_FINDS_V2)

CI = get_settings("ci")

#: The state machine alone, derandomized: a fixed seed, the same examples every run.
POWER = settings(
    max_examples=200,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)

AREAS = sorted({bug.area for bug in BROKEN.values()})


def test_enough_broken_backends_in_every_area() -> None:
    assert len(BROKEN) >= 45
    for area in AREAS:
        assert sum(bug.area == area for bug in BROKEN.values()) >= 2, area


@pytest.mark.parametrize("bug", list(BROKEN))
def test_suite_fails_on_broken_backend(bug: str) -> None:
    failures = run_suite(BROKEN[bug].make(), CI, stop_at_first=True)
    assert failures, f"the conformance suite (ci profile) passed a backend with this bug: {bug}"


@pytest.mark.parametrize("bug", list(BROKEN))
def test_targeted_check_finds_the_bug(bug: str) -> None:
    check = BROKEN[bug].check
    failures = run_suite(BROKEN[bug].make(), CI, only=[check])
    assert check in failures, f"the targeted check {check!r} missed: {bug}"
    # The message states the broken rule in words, for the backend's author.
    assert isinstance(failures[check], RuleBroken), repr(failures[check])
    assert str(failures[check]).startswith("rule broken: ")


@pytest.mark.parametrize("bug", MODEL_FINDS)
def test_state_machine_alone_finds_the_bug(bug: str) -> None:
    # The model is the heart of the suite: it must catch every one of these on its own.
    failures = run_suite(BROKEN[bug].make(), POWER, only=["state_machine"])
    assert "state_machine" in failures, f"the state machine missed: {bug}"


@pytest.mark.parametrize("make", list(CORRECT.values()), ids=list(CORRECT))
def test_suite_passes_correct_backends(make: Callable[[], Callable[[], Storage]]) -> None:
    failures = run_suite(make(), CI)
    assert not failures, "\n\n".join(f"{name}: {exc}" for name, exc in failures.items())
