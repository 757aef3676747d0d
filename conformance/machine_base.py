"""What the state machines share: a backend and the model side by side, a clock and ids.

:class:`ModelledMachine` holds no rules, so a machine built on it draws exactly
the sequences its own rules make (see :mod:`conformance.machine` and
:mod:`conformance.machine_limits`).
"""

from __future__ import annotations

import uuid

from hypothesis.stateful import RuleBasedStateMachine

from conformance.model import Model
from conformance.session import T0, StorageSession, check_record
from exqueue.storage import JobRecord


class ModelledMachine(RuleBasedStateMachine):
    """A fresh storage of ``session`` and a :class:`~conformance.model.Model`, driven alike."""

    def __init__(self, session: StorageSession) -> None:
        super().__init__()
        self.session = session
        self.storage = session.fresh()
        self.capabilities = frozenset(self.storage.capabilities)
        self.model = Model()
        self.now = T0
        self.nonce = uuid.uuid4().hex[:8]
        self.counter = 0
        # (job id, token) of every claim so far: the current ones and the stale ones.
        self.issued: list[tuple[str, str]] = []
        # The backend's seq of each job, as first seen; it must never change.
        self.real_seq: dict[str, int] = {}

    def _next(self, kind: str) -> str:
        self.counter += 1
        # Real ids (uuid4) sort in no relation to enqueue order; scramble ours the
        # same way so a backend ordering by id instead of seq shows up at once.
        scrambled = (self.counter * 7919) % 10007
        return f"{kind}-{self.nonce}-{scrambled:05d}-{self.counter}"

    def _check(self, record: JobRecord) -> None:
        """``record`` equals the model's job, field by field, and keeps its seq."""
        check_record(self.model, self.real_seq, record)
