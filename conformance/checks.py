"""Every check of the suite, by area, as a plain function ``check(factory, settings)``.

:data:`CHECKS` maps a check's name to its :class:`~conformance.base.Check`: the
function, its area, and the capability it needs (None: every backend).
:class:`conformance.StorageConformance` turns each into a pytest test;
:func:`run_suite` runs them without pytest (the suite's own power tests use it
to prove it catches broken backends).

The areas, one module each, so a backend author can read one at a time:
enqueue and ordering (:mod:`conformance.enqueue_order`), claims and leases
(:mod:`conformance.claims`), failure paths (:mod:`conformance.failures`), dead
jobs and requeue (:mod:`conformance.dead_jobs`), listing and counts
(:mod:`conformance.listing`), persistence (:mod:`conformance.persistence`),
capabilities (:mod:`conformance.capabilities`), and protocol 2's priority
(:mod:`conformance.priority`), unique jobs (:mod:`conformance.unique`), expiry
(:mod:`conformance.expiry`) and metadata (:mod:`conformance.metadata`), each
run only when the backend declares its capability; races
(:mod:`conformance.races`, :mod:`conformance.unique_races`); schedules
(:mod:`conformance.schedules`); live nodes and outcome history
(:mod:`conformance.observe`); cancellation and snooze
(:mod:`conformance.control`); limits and pause (:mod:`conformance.limits`,
:mod:`conformance.limit_races`, :mod:`conformance.machine_limits`); and the
model-based state machine (:mod:`conformance.machine`, with
:mod:`conformance.machine_v2`) that explores how they interact, and its
variant with cancel and snooze (:mod:`conformance.machine_control`).

Each check empties the store first (with the backend's own ``recover`` and
``delete``) and closes what it opened. Targeted checks come first and are
deterministic: their edge cases are explicit, so a backend that breaks a rule
fails on every run, whatever the Hypothesis seed.
"""

from __future__ import annotations

from hypothesis import settings as Settings

from conformance import (
    capabilities,
    claims,
    control,
    dead_jobs,
    enqueue_order,
    error_history,
    expiry,
    failures,
    limits,
    listing,
    metadata,
    observe,
    persistence,
    priority,
    races,
    scan,
    schedules,
    unique,
)
from conformance.base import Check, RuleBroken, StorageFactory
from conformance.machine import run_state_machine
from conformance.machine_control import run_control_machine
from exqueue.storage import CANCEL, SNOOZE

MODEL = "state machine"


def check_state_machine(factory: StorageFactory, settings: Settings) -> None:
    """Random operation sequences agree with the reference model at every step."""
    try:
        run_state_machine(factory, settings)
    except AssertionError as exc:
        raise RuleBroken(
            "rule broken: every result and every observable record matches the reference "
            f"model (conformance/model.py) after each step -- {exc}"
        ) from exc


def check_control_machine(factory: StorageFactory, settings: Settings) -> None:
    """Random operation sequences with cancel and snooze agree with the model at every step."""
    try:
        run_control_machine(factory, settings)
    except AssertionError as exc:
        raise RuleBroken(
            "rule broken: with cancel and snooze among the operations, every result, every "
            "observable record, cancellation mark and snooze count matches the reference "
            f"model (conformance/machine_control.py) after each step -- {exc}"
        ) from exc


CHECKS: dict[str, Check] = {
    check.name: check
    for check in (
        *capabilities.CHECKS[:1],  # protocol: everything else assumes it
        *enqueue_order.CHECKS,
        *claims.CHECKS,
        *failures.CHECKS,
        Check("error_bound", None, error_history.check_error_history, failures.AREA),
        *dead_jobs.CHECKS,
        *listing.CHECKS,
        *persistence.CHECKS,
        *capabilities.CHECKS[1:],
        *priority.CHECKS,
        *unique.CHECKS,
        *expiry.CHECKS,
        *metadata.CHECKS,
        *scan.CHECKS,
        Check("state_machine", None, check_state_machine, MODEL),
        # Both: a backend with one of the two has the targeted checks of control.py.
        Check("control_machine", (CANCEL, SNOOZE), check_control_machine, MODEL),
        *races.CHECKS,
        *unique.RACE_CHECKS,
        *schedules.CHECKS,
        *observe.CHECKS,
        *control.CHECKS,
        *limits.CHECKS,
    )
}


def capabilities_of(factory: StorageFactory) -> frozenset[str]:
    """What the backend declares (opens one storage to ask)."""
    storage = factory()
    try:
        return frozenset(storage.capabilities)
    finally:
        storage.close()


def run_suite(
    factory: StorageFactory,
    settings: Settings,
    only: list[str] | None = None,
    *,
    stop_at_first: bool = False,
) -> dict[str, BaseException]:
    """Run every applicable check; the failures by check name (empty: the backend conforms).

    ``stop_at_first`` returns as soon as one check failed (a quick verdict).
    """
    declared = capabilities_of(factory)
    failures_: dict[str, BaseException] = {}
    for check in CHECKS.values():
        if only is not None and check.name not in only:
            continue
        if check.missing(declared) is not None:
            continue
        try:
            check.run(factory, settings)
        except Exception as exc:
            failures_[check.name] = exc
            if stop_at_first:
                break
    return failures_


__all__ = ["CHECKS", "Check", "StorageFactory", "capabilities_of", "run_suite"]
