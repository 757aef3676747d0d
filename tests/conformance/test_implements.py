"""``conformance.base.implements``: a storage narrowed to an optional protocol, or the rule."""

from __future__ import annotations

import pytest

from conformance.base import RuleBroken, implements
from exqueue.storage import SupportsCancel, SupportsPause
from exqueue_memory import MemoryStorage


def test_a_storage_with_the_methods_is_returned_as_it_is() -> None:
    storage = MemoryStorage()
    try:
        assert implements(storage, SupportsCancel, "cancel rule") is storage
        assert implements(storage, SupportsPause, "pause rule") is storage
    finally:
        storage.close()


def test_a_storage_without_them_breaks_the_rule_given() -> None:
    class NoCancel:
        capabilities = frozenset({"cancel"})

    with pytest.raises(RuleBroken, match=r"^rule broken: a cancel rule -- NoCancel$"):
        implements(NoCancel(), SupportsCancel, "a cancel rule")
