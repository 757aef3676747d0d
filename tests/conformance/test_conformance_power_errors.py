"""The conformance suite must catch a backend that gets the bounded error history wrong.

Two broken backends, each MemoryStorage with its own error history kept beside
it: one keeps every error (the bound forgotten), one keeps the last
``ERRORS_KEPT + 1`` (the first error dropped). Both count every error and clip
each text as the contract says, so only the kept errors are wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from conformance import run_suite
from exqueue.storage import (
    ERRORS_KEPT,
    EXPIRED,
    DeleteResult,
    JobRecord,
    JobState,
    Recovered,
    RequeueResult,
    Storage,
    clip_error,
)
from exqueue_memory import MemoryStorage
from tests.conformance.broken_backends import Wrapper
from tests.conformance.test_conformance_power import POWER


class KeepsEveryError(Wrapper):
    """Records every error of a job and shows them all: the history is never trimmed."""

    def __init__(self, inner: MemoryStorage | None = None) -> None:
        super().__init__(inner)
        self.history: dict[str, list[str]] = {}

    def kept(self, errors: list[str]) -> tuple[str, ...]:
        return tuple(errors)

    def _shown(self, record: JobRecord) -> JobRecord:
        errors = self.history.get(record.id, [])
        return replace(record, errors=self.kept(errors), error_count=len(errors))

    def _add(self, job_id: str, error: str) -> None:
        self.history.setdefault(job_id, []).append(clip_error(error))

    def claim(
        self,
        worker: str,
        limit: int,
        *,
        now: float,
        owner: str,
        token: str,
        lease_until: float,
        serial: bool = False,
    ) -> list[JobRecord]:
        got = super().claim(
            worker, limit, now=now, owner=owner, token=token, lease_until=lease_until, serial=serial
        )
        return [self._shown(r) for r in got]

    def schedule_retry(self, job_id: str, token: str, *, run_at: float, error: str) -> bool:
        done = super().schedule_retry(job_id, token, run_at=run_at, error=error)
        if done:
            self._add(job_id, error)
        return done

    def bury(self, job_id: str, token: str, *, error: str) -> bool:
        done = super().bury(job_id, token, error=error)
        if done:
            self._add(job_id, error)
        return done

    def recover(self, now: float, *, owner: str | None = None, error: str) -> Recovered:
        got = super().recover(now, owner=owner, error=error)
        for job_id in got.waiting + got.dead:
            self._add(job_id, error)
        return got

    def expire(self, now: float, *, limit: int = 1000) -> list[str]:
        expired = super().expire(now, limit=limit)
        for job_id in expired:
            self._add(job_id, EXPIRED)
        return expired

    def requeue(self, job_id: str, new_id: str, *, now: float) -> RequeueResult:
        result = super().requeue(job_id, new_id, now=now)
        if result == "requeued":
            self.history.pop(job_id, None)
        return result

    def delete(self, job_id: str) -> DeleteResult:
        result = super().delete(job_id)
        if result == "deleted":
            self.history.pop(job_id, None)
        return result

    def get(self, job_id: str) -> JobRecord | None:
        record = super().get(job_id)
        return None if record is None else self._shown(record)

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        worker: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[JobRecord]:
        found = super().list_jobs(
            state=state, worker=worker, limit=limit, after_seq=after_seq, tag=tag
        )
        return [self._shown(r) for r in found]


class DropsFirstError(KeepsEveryError):
    """Keeps the last ``ERRORS_KEPT + 1`` errors: the first one is lost."""

    def kept(self, errors: list[str]) -> tuple[str, ...]:
        return tuple(errors[-(ERRORS_KEPT + 1) :])


class KeepsTheRule(KeepsEveryError):
    """The same machinery with the right rule: the suite must pass it."""

    def kept(self, errors: list[str]) -> tuple[str, ...]:
        if len(errors) <= ERRORS_KEPT + 1:
            return tuple(errors)
        return (errors[0], *errors[-ERRORS_KEPT:])


BROKEN: dict[str, Callable[[], Storage]] = {
    "error history never trimmed": KeepsEveryError,
    "first error dropped": DropsFirstError,
}


@pytest.mark.parametrize("bug", list(BROKEN))
@pytest.mark.parametrize("check", ["error_bound", "state_machine"])
def test_each_error_history_check_finds_the_bug(bug: str, check: str) -> None:
    failures = run_suite(BROKEN[bug], POWER, only=[check])
    assert check in failures, f"the {check} check passed a backend with this bug: {bug}"


def test_the_history_machinery_itself_passes() -> None:
    # The bugs above are only their rule: the same wrapper with the right rule conforms.
    failures = run_suite(KeepsTheRule, POWER)
    assert not failures, "\n\n".join(f"{name}: {exc}" for name, exc in failures.items())
