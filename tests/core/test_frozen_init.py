"""The cheaper ``__init__`` of the per-job dataclasses (exqueue/_frozen.py) acts as the old one."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from exqueue._frozen import cheap_init
from exqueue.job import Call, Job, JobContext
from exqueue.options import Resolved
from exqueue.storage import JobRecord, NewJob, Unique


@dataclass(frozen=True, slots=True)
class _Plain:
    a: int
    b: str = "x"
    c: dict[str, str] = field(default_factory=dict)


@cheap_init
@dataclass(frozen=True, slots=True)
class _Cheap:
    a: int
    b: str = "x"
    c: dict[str, str] = field(default_factory=dict)


@pytest.mark.parametrize("cls", [NewJob, JobRecord, Call, JobContext, Job, Resolved])
def test_the_signature_is_the_dataclass_signature(cls: type) -> None:
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"  # the cheap one is in place
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty


def test_values_defaults_and_fresh_factories() -> None:
    job = NewJob("id", "w", b"p", 1.0, 2.0, 3, priority=4, unique=Unique("k"))
    assert (job.id, job.worker, job.payload, job.run_at) == ("id", "w", b"p", 1.0)
    assert job.enqueued_at == 2.0
    assert (job.max_attempts, job.priority, job.unique, job.timeout) == (3, 4, Unique("k"), None)
    other = NewJob("id", "w", b"p", 1.0, 2.0, 3, priority=4, unique=Unique("k"))
    assert job == other and job.meta == {} and job.meta is not other.meta
    assert type(job) is NewJob
    assert _Cheap(1) == _Cheap(1, "x", {})
    assert repr(_Cheap(1)).endswith("_Cheap(a=1, b='x', c={})")
    assert _Cheap(1).c is not _Cheap(1).c
    assert _Cheap(a=2, c={"k": "v"}).c == {"k": "v"}
    with pytest.raises(TypeError):
        _Cheap()  # type: ignore[call-arg]
    assert dataclasses.astuple(_Cheap(5, "y")) == dataclasses.astuple(_Plain(5, "y"))


def test_post_init_still_runs_and_started_at_is_not_compared() -> None:
    record = JobRecord("i", 1, "w", b"", "dead", 0, 1, 1.0, 1.0, ("a", "b"))
    assert record.error_count == 2  # raised to len(errors) by __post_init__
    later = dataclasses.replace(record, started_at=5.0)
    assert later == record and later.started_at == 5.0


@pytest.mark.parametrize(
    "instance",
    [
        NewJob("id", "w", b"", 1.0, 1.0, 3, meta={"k": "v"}),
        JobRecord("i", 1, "w", b"", "waiting", 0, 1, 1.0, 1.0),
        Call("w", (1,), {"x": 2}),
        JobContext("i", "w", 1, 2),
    ],
)
def test_frozen_pickles_copies_and_replaces(instance: Any) -> None:
    name = dataclasses.fields(instance)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, name, "other")
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(instance, name)
    assert pickle.loads(pickle.dumps(instance)) == instance
    assert copy.deepcopy(instance) == instance and copy.copy(instance) == instance
    assert dataclasses.replace(instance) == instance
    names = [f.name for f in dataclasses.fields(instance)]
    assert dataclasses.asdict(instance) == {n: getattr(instance, n) for n in names}


def test_a_subclass_gets_the_generated_init() -> None:
    @dataclass(frozen=True)
    class Tagged(Call):
        tag: str = "t"

    tagged = Tagged("w", (1,), tag="u")
    assert type(tagged) is Tagged and tagged.tag == "u" and tagged.args == (1,)

    class Same(Call):
        pass

    same = Same("w")
    assert type(same) is Same and same.kwargs == {} and same == Same("w")
