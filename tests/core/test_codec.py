"""The default codec round-trips plain data exactly and refuses everything else."""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exqueue import JSONCodec, PickleCodec, SerializationError
from exqueue.codec import get_codec

codec = JSONCodec()

SAMPLES: list[Any] = [
    None,
    True,
    0,
    -(2**80),
    1.5,
    float("inf"),
    "päivää ✓",
    b"\x00\xffbytes",
    [1, [2, (3, 4)]],
    (1, "a"),
    {"a": 1, "b": [1, 2]},
    {1: "int key", (1, 2): "tuple key"},
    {"$": "looks like a tag", "v": 1},
    {1, 2, 3},
    frozenset({"x"}),
    dt.datetime(2026, 11, 27, 12, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 27, 12, 30),
    dt.datetime(2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(microseconds=1))),
    dt.datetime(2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2), "CEST")),
    dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
    dt.time(1, 2, tzinfo=ZoneInfo("Europe/Helsinki")),
    dt.date(2026, 1, 2),
    dt.time(3, 4, 5, 6),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    Decimal("1.10"),
    uuid.UUID(int=42),
]


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_plain_values_round_trip_with_their_exact_types(value: Any) -> None:
    args, kwargs = codec.decode(codec.encode((value,), {"k": value}))
    assert args == (value,) and kwargs == {"k": value}
    tzinfo = getattr(value, "tzinfo", None)
    if tzinfo is not None:
        assert args[0].tzinfo == tzinfo and args[0].tzname() == value.tzname()
        assert args[0].fold == value.fold
    assert type(args[0]) is type(value) and type(kwargs["k"]) is type(value)


def test_nan_round_trips() -> None:
    (value,), _ = codec.decode(codec.encode((float("nan"),), {}))
    assert math.isnan(value)


@pytest.mark.parametrize("value", [object(), lambda: 1, {1: object()}, [1, {2}, object()]])
def test_unsupported_values_raise_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError):
        codec.encode((value,), {})


def test_pickled_payload_is_refused_not_unpickled() -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (exec, ("raise SystemExit('unpickled!')",))

    payload = pickle.dumps(((Boom(),), {}))
    with pytest.raises(SerializationError, match="never unpickles"):
        codec.decode(payload)


@pytest.mark.parametrize(
    "payload", [b"", b"{", b"[1,2]", b'[[],{"a":{"$":"nope","v":1}}]', b"\xff\xfe", b"[[{}],[]]"]
)
def test_corrupt_payloads_raise_serialization_error(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        codec.decode(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"[[1],{}] x",
        b"[[1],{}][[2],{}]",
        b"[[1],{}],[[2],{}]",
        b"[[1",
        b"[[NaNx],{}]",
        b" ",
    ],
)
def test_a_payload_that_is_not_exactly_one_json_value_is_refused(payload: bytes) -> None:
    # Extra data after the value (or a value cut short) must never decode as its first part.
    with pytest.raises(SerializationError, match="not valid JSON"):
        codec.decode(payload)


@pytest.mark.parametrize(
    "payload", [b" [[1],{}]", b"[[1],{}]\n", b'\t[["a"], {"b": 2}] ', b"[[NaN, -Infinity],{}]"]
)
def test_a_payload_from_another_json_writer_decodes_as_json_loads_would(payload: bytes) -> None:
    args, kwargs = codec.decode(payload)
    assert json.dumps([list(args), kwargs]) == json.dumps(json.loads(payload))  # NaN too


def test_pickle_codec_is_opt_in_by_name() -> None:
    assert isinstance(get_codec("json"), JSONCodec)
    pickler = get_codec("pickle")
    assert isinstance(pickler, PickleCodec)
    value = {"when": dt.date(2020, 1, 1), "obj": Decimal(3)}
    assert pickler.decode(pickler.encode((value,), {})) == ((value,), {})
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("yaml")
