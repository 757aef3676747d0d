"""Area: listing and counts. What list_jobs, counts and get report, and how names match.

Rules (:meth:`Storage.list_jobs`, :meth:`Storage.counts`): ``list_jobs``
applies its state and worker filters (both at once when both are given) and
``seq > after_seq``, orders by ``seq``, and only then cuts at ``limit``;
``counts(now)`` gives, per worker name with any job, exactly how many are
runnable (``run_at <= now``), scheduled, running and dead. Worker and owner
names are exact strings: SQL pattern characters (``%``, ``_``), ``:``, case,
accents, normalization and spaces all count.
"""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import settings as Settings
from hypothesis import strategies as st

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    job,
    limited,
    opened,
    run_to,
    unique,
)
from exqueue.storage import DEAD, RUNNING, WAITING, Counts

AREA = "listing and counts"


def check_list_filters(factory: StorageFactory, settings: Settings) -> None:
    """list_jobs filters (state, worker, after_seq) first, orders by seq, then applies limit."""
    with opened(factory) as (_, storage):
        a, b = unique("list-a"), unique("list-b")
        # Many of b first, so a limit applied before the filter finds none of a.
        storage.enqueue([job(f"lb-{n}", b) for n in range(8)])
        storage.enqueue([job(f"la-{n}", a) for n in range(6)])
        claim(storage, a, 2)  # la-0, la-1 running
        token = run_to(storage, "lb-0", b)
        storage.bury("lb-0", token, error="x")
        rule = "list_jobs applies its filters and after_seq before its limit, in seq order"
        cases = {
            "worker=a, limit=3": (dict(worker=a, limit=3), ["la-0", "la-1", "la-2"]),
            "state=running, limit=2": (dict(state=RUNNING, limit=2), ["la-0", "la-1"]),
            "state=waiting, worker=a, limit=2": (
                dict(state=WAITING, worker=a, limit=2),
                ["la-2", "la-3"],
            ),
            "state=dead, worker=a": (dict(state=DEAD, worker=a), []),
            "state=dead, worker=b": (dict(state=DEAD, worker=b), ["lb-0"]),
            "limit=0": (dict(limit=0), []),
        }
        for what, (filters, want) in cases.items():
            found = ids(storage.list_jobs(**filters))  # type: ignore[arg-type]
            expect(found == want, rule, f"{what}: {found}, expected {want}")
        every = storage.list_jobs(limit=100)
        pivot = every[9]
        after = ids(storage.list_jobs(after_seq=pivot.seq, limit=100))
        expect(
            after == ids(every[10:]),
            "list_jobs(after_seq=s) lists exactly the jobs with seq > s",
            f"after {pivot.id}: {after}",
        )
        page = ids(storage.list_jobs(worker=a, after_seq=every[0].seq, limit=2))
        expect(page == ["la-0", "la-1"], rule, f"worker=a after the first job, limit=2: {page}")


PATTERN_NAMES = ("a_b", "aXb", "a%b", "a%%b", "ab", "a:b", "a", "b", "a:", ":b", "A_B", "a\\b")


def check_exact_names(factory: StorageFactory, settings: Settings) -> None:
    """Worker names are exact: %, _, :, \\ and case never match other names."""
    with opened(factory) as (_, storage):
        base = unique("names")
        names = [f"{base}.{name}" for name in PATTERN_NAMES] + [base]
        storage.enqueue([job(f"n-{n}", name) for n, name in enumerate(names)])
        storage.enqueue([job(f"n2-{n}", name) for n, name in enumerate(names[:3])])
        rule = "worker names are compared exactly (no pattern matching, case kept)"
        for n, name in enumerate(names):
            want = [f"n-{n}"] + ([f"n2-{n}"] if n < 3 else [])
            found = ids(storage.list_jobs(worker=name))
            expect(found == want, rule, f"list_jobs(worker={name!r}) gave {found}")
        counts = storage.counts(NOW)
        want_counts = {name: Counts(waiting=2 if n < 3 else 1) for n, name in enumerate(names)}
        expect(counts == want_counts, rule, f"counts gave {counts}")
        for n, name in enumerate(names):
            taken = claim(storage, name, 10, owner=name)
            want = [f"n-{n}"] + ([f"n2-{n}"] if n < 3 else [])
            expect(ids(taken) == want, rule, f"claim({name!r}) took {ids(taken)}")
            expect(all(r.lease_owner == name for r in taken), "lease_owner is stored exactly")


def check_counts(factory: StorageFactory, settings: Settings) -> None:
    """counts(now): per worker with any job, exactly: runnable, scheduled, running, dead."""
    with opened(factory) as (_, storage):
        a, b, c = unique("count-a"), unique("count-b"), unique("count-c")
        storage.enqueue(
            [job(f"ca-{n}", a, run_at=NOW + (n - 2) * 0.5) for n in range(6)]  # -1.0 .. +1.5
            + [job(f"cb-{n}", b) for n in range(3)]
            + [job("cc-0", c)]
        )
        claim(storage, b, 2)
        token = run_to(storage, "cc-0", c)
        storage.bury("cc-0", token, error="x")
        token = run_to(storage, "cb-2", b)
        storage.bury("cb-2", token, error="x")
        rule = (
            "counts(now) gives every worker with any job (even only dead ones) its exact "
            "numbers: waiting = run_at <= now, scheduled = run_at > now, running, dead"
        )
        want = {
            a: Counts(waiting=3, scheduled=3),
            b: Counts(running=2, dead=1),
            c: Counts(dead=1),
        }
        found = storage.counts(NOW)
        expect(found == want, rule, f"counts(now) gave {found}")
        later = storage.counts(NOW + 1.5)
        expect(later[a] == Counts(waiting=6), rule, f"at run_at == now: {later.get(a)}")
        expect(storage.delete("cc-0") == "deleted", "delete removes a dead job")
        found = storage.counts(NOW)
        expect(c not in found, "a worker with no job left is not in counts", found)


NEAR_TWINS = (
    "café",
    "cafe",
    "CAFE",
    "Café",
    unicodedata.normalize("NFD", "café"),
    "cafe ",
    " cafe",
    "ｃａｆｅ",
    "café✓",
    "カフェ",
    "🧾.receipts",
)


def check_unicode_worker_names(factory: StorageFactory, settings: Settings) -> None:
    """Worker names are exact strings: case, accents, normalization and spaces all count."""
    rule = "any Unicode worker name round-trips, and names differing in any way stay distinct"
    with opened(factory) as (_, storage):
        storage.enqueue([job(f"twin-{n}", name) for n, name in enumerate(NEAR_TWINS)])
        counts = storage.counts(NOW)
        expect(counts == {name: Counts(waiting=1) for name in NEAR_TWINS}, rule, counts)
        for n, name in enumerate(NEAR_TWINS):
            listed = [(r.id, r.worker) for r in storage.list_jobs(worker=name)]
            expect(listed == [(f"twin-{n}", name)], rule, f"list_jobs({name!r}) gave {listed}")
            taken = claim(storage, name, 5, owner="ø", token=f"t{n}")
            expect(ids(taken) == [f"twin-{n}"], rule, f"claim({name!r}) took {ids(taken)}")
            expect(taken[0].worker == name and taken[0].lease_owner == "ø", rule, taken[0])
            expect(storage.complete(f"twin-{n}", f"t{n}"), "the holder completes its job")

        names = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)

        @limited(settings, 30)
        @given(name=names)
        def any_name(name: str) -> None:
            job_id = unique("u")
            storage.enqueue([job(job_id, name)])
            try:
                expect(got(storage, job_id).worker == name, rule, name)
                expect(storage.counts(NOW).get(name) == Counts(waiting=1), rule, name)
                taken = claim(storage, name, 2, owner=name, token=job_id)
                seen = [(r.id, r.worker, r.lease_owner) for r in taken]
                expect(seen == [(job_id, name, name)], rule, seen)
                expect(storage.complete(job_id, job_id), "the holder completes its job")
            finally:
                # Hypothesis replays a failing name: leave no job behind.
                if storage.get(job_id) is not None and not storage.complete(job_id, job_id):
                    storage.delete(job_id)

        any_name()


CHECKS = [
    Check("list_filters", None, check_list_filters, AREA),
    Check("exact_names", None, check_exact_names, AREA),
    Check("counts", None, check_counts, AREA),
    Check("unicode_worker_names", None, check_unicode_worker_names, AREA),
]
