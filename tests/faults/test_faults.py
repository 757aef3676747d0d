"""Fault and crash tests on every persistent backend, with real worker processes.

SIGKILL mid-drain, a lost node, a paused (stale) holder, a storage outage, a job
that kills its own process, SIGTERM during long jobs, hostile payloads, and a
load run with random failures. The scenarios live in ``benchmarks/faults_harness.py``
and run here at moderate sizes; ``python benchmarks/reliability.py`` runs them
at full size and regenerates the table in ``docs/reliability.md``.

Run them alone with ``pytest -m faults``. The outage tests stop the shared
PostgreSQL and MariaDB servers for a few seconds (and always start them again);
Redis outages use a private redis-server on another port.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import os
import pickle
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exqueue
from benchmarks import faults_harness as fh
from exqueue.codec import JSONCodec
from tests.support import services

pytestmark = pytest.mark.faults


@pytest.fixture(params=fh.BACKENDS)
def target(request: Any, tmp_path: Path) -> Iterator[fh.Target]:
    name = request.param
    try:
        importlib.import_module(fh.MODULES[name])
    except ImportError as exc:
        pytest.skip(f"{fh.MODULES[name]} does not import: {exc}")
    if name != "sqlite":
        services.require(name)
    target = fh.make_target(name, tmp_path)
    yield target
    target.destroy()


def report(result: fh.Result) -> None:
    print(
        f"\n{result.scenario} on {result.backend}: {result.jobs} jobs, {result.lost} lost, "
        f"{result.duplicates} duplicates, {result.seconds:.1f}s; {result.note}"
    )


# -- 1-6 and 8: real processes -----------------------------------------------------------


def test_sigkill_three_times_loses_nothing_and_only_reruns_running_jobs(
    target: fh.Target,
) -> None:
    result = fh.crash(target, jobs=300, kills=3)
    report(result)
    assert result.lost == 0


def test_survivor_recovers_a_killed_nodes_jobs_after_the_lease(target: fh.Target) -> None:
    result = fh.node_loss(target, jobs=40, lease=1.5)
    report(result)
    assert result.lost == 0


def test_a_node_restarted_under_its_stable_name_reclaims_its_jobs_at_once(
    target: fh.Target,
) -> None:
    result = fh.stable_reclaim(target, jobs=10, lease=60.0)
    report(result)
    assert result.lost == 0


def test_a_paused_holders_late_success_and_failure_are_rejected(target: fh.Target) -> None:
    report(fh.stale_worker(target, lease=1.0))


def test_workers_ride_out_a_storage_outage_mid_drain(target: fh.Target) -> None:
    result = fh.outage(target, jobs=600, down=3.0)
    report(result)
    assert result.lost == 0


def test_a_job_that_kills_its_process_ends_dead_after_its_attempts(target: fh.Target) -> None:
    report(fh.poison(target, max_retries=2, others=10))


def test_sigterm_finishes_jobs_within_the_timeout_and_releases_the_rest(
    target: fh.Target,
) -> None:
    report(fh.graceful(target))


def test_load_with_random_failures_over_four_processes_counts_exactly(
    target: fh.Target,
) -> None:
    result = fh.load(target, jobs=2000, procs=4, timeout=300)
    report(result)
    assert result.lost == 0 and result.duplicates == 0


# -- 7. hostile input ----------------------------------------------------------------------

# Fixed-offset zones here; named (ZoneInfo) zones have a test of their own below.
FIXED_ZONES = st.none() | st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)
).map(dt.timezone)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=FIXED_ZONES)
    | st.dates()
    | st.times(timezones=FIXED_ZONES)
    | st.timedeltas()
    | st.decimals(allow_nan=False)
    | st.uuids()
)
HASHABLE = st.recursive(
    SCALARS.filter(lambda v: not isinstance(v, Decimal) or v.is_finite()),
    lambda inner: st.tuples(inner) | st.frozensets(inner, max_size=3),
    max_leaves=5,
)
VALUES = st.recursive(
    SCALARS | st.sampled_from([math.inf, -math.inf]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(HASHABLE, inner, max_size=3)
        | st.sets(HASHABLE, max_size=3)
        | st.frozensets(HASHABLE, max_size=3)
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with exactly the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, b[k2]) for k2 in b if k2 == k) for k, v in a.items()
        )
    if isinstance(a, set | frozenset):
        return a == b and all(any(same(x, y) for y in b if y == x) for x in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    return bool(a == b)


@settings(max_examples=150, deadline=None)
@given(args=st.lists(VALUES, max_size=4), kwargs=st.dictionaries(st.text(), VALUES, max_size=3))
def test_codec_round_trips_every_supported_value_with_exact_types(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    codec = JSONCodec()
    decoded_args, decoded_kwargs = codec.decode(codec.encode(tuple(args), kwargs))
    assert same(decoded_args, tuple(args)), (decoded_args, args)
    assert same(decoded_kwargs, kwargs), (decoded_kwargs, kwargs)


@settings(max_examples=50, deadline=None)
@given(
    value=st.datetimes(timezones=st.timezones()).filter(lambda v: type(v.tzinfo) is not dt.timezone)
    | st.times(timezones=st.timezones()).filter(lambda v: type(v.tzinfo) is not dt.timezone)
)
def test_codec_named_time_zones_round_trip_or_are_refused(value: Any) -> None:
    codec = JSONCodec()
    try:
        payload = codec.encode((value,), {})
    except exqueue.SerializationError:
        return
    (decoded,), _ = codec.decode(payload)
    assert same(decoded, value), (decoded, value)


class Opaque:
    pass


UNSUPPORTED = st.sampled_from(
    [
        Opaque(),
        object(),
        complex(1, 2),
        bytearray(b"x"),
        range(3),
        print,
        Path("/tmp"),
        type,
        NotImplemented,
        Ellipsis,
        memoryview(b"m"),
        dt.UTC,
    ]  # fmt: skip
)


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        UNSUPPORTED,
        lambda inner: (
            st.lists(inner, min_size=1, max_size=3)
            | st.dictionaries(st.text(max_size=3), inner, min_size=1, max_size=2)
            | st.tuples(inner, VALUES)
        ),
        max_leaves=4,
    ),
    as_kwarg=st.booleans(),
)
def test_codec_refuses_anything_else_with_serialization_error(value: Any, as_kwarg: bool) -> None:
    codec = JSONCodec()
    with pytest.raises(exqueue.SerializationError):
        codec.encode((), {"v": value}) if as_kwarg else codec.encode((value,), {})


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_codec_decode_of_random_bytes_returns_or_raises_serialization_error(data: bytes) -> None:
    try:
        args, kwargs = JSONCodec().decode(data)
    except exqueue.SerializationError:
        return
    assert type(args) is tuple and type(kwargs) is dict


def test_default_codec_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        payload = pickle.dumps(((fh.Evil(marker),), {}), protocol=protocol)
        with pytest.raises(exqueue.SerializationError):
            JSONCodec().decode(payload)
    assert not marker.exists()
    # The payload really does have a side effect when unpickled (so the test can fail).
    pickle.loads(payload)
    assert marker.exists()


def test_hostile_payloads_die_with_a_reason_and_never_stop_the_worker(
    target: fh.Target, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    result = fh.hostile(target, fh.hostile_payloads(marker, count=30), marker)
    report(result)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads=st.lists(st.binary(max_size=48), min_size=1, max_size=12))
def test_hypothesis_payload_bytes_stored_directly_die_or_run(
    target: fh.Target, tmp_path: Path, payloads: list[bytes]
) -> None:
    marker = tmp_path / f"never-{uuid.uuid4().hex}"
    fh.hostile(target, payloads, marker)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_job_buffered_next_to_a_poison_job_does_not_die_unrun(
    backend: str, tmp_path: Path
) -> None:
    target = fh.make_target(backend, tmp_path)
    fh.bystander(target)
