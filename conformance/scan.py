"""Area: bounded listing. ``scan_jobs`` reads at most its budget and skips no match.

Rules (capability JOB_SCAN, :mod:`exqueue.storage_scan`): the candidates of a
call are the jobs passing its ``state`` and ``worker`` filters with ``seq >
after_seq``. A call returns, in ``seq`` order and at most ``limit`` of them,
exactly the candidates matching its ``tag`` among those with ``seq <=
next_after`` (all of them when ``next_after`` is None); those candidates are at
most ``budget``; ``next_after``, when not None, is past ``after_seq``. So
following ``next_after`` lists exactly what ``list_jobs`` lists, however small
the budget, and no call reads more than its budget.
"""

from __future__ import annotations

from hypothesis import settings as Settings

from conformance.base import (
    Check,
    StorageFactory,
    claim,
    expect,
    ids,
    implements,
    job,
    opened,
    unique,
)
from exqueue.storage import DEAD, METADATA, RUNNING, WAITING, JobRecord, JobState, Storage
from exqueue.storage_scan import JOB_SCAN, JobScan, SupportsJobScan

AREA = "bounded listing"

_RULE = (
    "scan_jobs returns exactly the matching candidates up to next_after (at most "
    "limit), reads at most budget candidates, and next_after moves past after_seq"
)


def _follow(
    storage: Storage,
    state: JobState | None,
    worker: str | None,
    tag: tuple[str, str] | None,
    limit: int,
    budget: int,
) -> None:
    """Follow the cursors from the start; check each call against list_jobs."""
    everything = storage.list_jobs(state=state, worker=worker, limit=10_000)
    candidates = [r.seq for r in everything]
    matching = [r for r in everything if tag is None or r.meta.get(tag[0]) == tag[1]]
    what = (
        f"state={state} worker={'set' if worker else None} tag={tag} limit={limit} budget={budget}"
    )
    after: int | None = None
    listed: list[JobRecord] = []
    for _ in range(len(candidates) + 2):
        scanner = implements(
            storage, SupportsJobScan, "a backend declaring job_scan implements SupportsJobScan"
        )
        page = scanner.scan_jobs(
            JobScan(
                state=state, worker=worker, tag=tag, after_seq=after, limit=limit, budget=budget
            )
        )
        end = page.next_after
        low = -1 if after is None else after
        covered = [s for s in candidates if s > low and (end is None or s <= end)]
        want = [r for r in matching if r.seq > low and (end is None or r.seq <= end)]
        where = f"{what}, after_seq={after}: got {ids(page.jobs)} next_after={end}"
        expect(len(page.jobs) <= limit, _RULE, f"{where}: more than limit")
        expect(ids(page.jobs) == ids(want), _RULE, f"{where}: expected {ids(want)}")
        expect(len(covered) <= budget, _RULE, f"{where}: {len(covered)} candidates read")
        expect(end is None or end > low, _RULE, f"{where}: the cursor did not move")
        listed.extend(page.jobs)
        if end is None:
            break
        after = end
    else:
        expect(False, _RULE, f"{what}: next_after never became None")
    expect(ids(listed) == ids(matching), _RULE, f"{what}: pages {ids(listed)}")


def check_scan_pages(factory: StorageFactory, settings: Settings) -> None:
    """JOB_SCAN: scan_jobs pages, followed, list every match and each reads <= budget."""
    with opened(factory) as (_, storage):
        a, b = unique("scan-a"), unique("scan-b")
        tagged = METADATA in storage.capabilities
        # Interleaved workers; the tag on few jobs, some of them dead or running.
        new = []
        for n in range(24):
            meta = {"team": "red" if n % 5 == 0 else "blue"} if tagged else {}
            new.append(job(f"s-{n}", a if n % 3 else b, meta=meta))
        storage.enqueue(new)
        token = unique("tok")
        for record in claim(storage, a, 4, token=token):
            if record.id in ("s-1", "s-2"):
                storage.bury(record.id, token, error="dead")
        tags: list[tuple[str, str] | None] = [None]
        if tagged:
            tags += [("team", "red"), ("team", "none")]
        for state in (None, WAITING, DEAD, RUNNING):
            for worker in (None, a):
                for tag in tags:
                    for limit, budget in ((2, 3), (50, 5), (50, 100)):
                        _follow(storage, state, worker, tag, limit, budget)


CHECKS = [Check("scan_pages", JOB_SCAN, check_scan_pages, AREA)]
