"""Area: metadata. meta and timeout come back exactly; list_jobs filters by a tag.

Rules (capability METADATA; :class:`~exqueue.storage.NewJob`,
:meth:`Storage.list_jobs`, :meth:`Storage.requeue`): ``meta`` (str to str, up
to :data:`~exqueue.storage.META_ENTRIES_LIMIT` entries and
:data:`~exqueue.storage.META_BYTES_LIMIT` UTF-8 bytes; empty and non-ASCII
strings included) and ``timeout`` are stored with the job and returned by
``get``, ``list_jobs`` and ``claim`` through every transition;
``list_jobs(tag=(key, value))`` keeps exactly the jobs whose ``meta[key] ==
value`` (case and pattern characters matter), with the other filters;
``requeue`` keeps ``priority``, ``meta``, ``timeout`` and ``unique_key`` and
clears ``expires_at``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings as Settings

from conformance.base import (
    NOW,
    Check,
    StorageFactory,
    claim,
    expect,
    got,
    ids,
    job,
    opened,
    unique,
)
from exqueue.storage import (
    DEAD,
    EXPIRY,
    META_BYTES_LIMIT,
    META_ENTRIES_LIMIT,
    METADATA,
    PRIORITY,
    UNIQUE,
    WAITING,
    JobRecord,
    Unique,
)

AREA = "metadata"

TRIP_RULE = "meta and timeout are stored with the job and come back exactly, in every state"


def _full_meta() -> dict[str, str]:
    """META_ENTRIES_LIMIT entries, non-ASCII, exactly META_BYTES_LIMIT UTF-8 bytes."""
    meta = {f"k{n:02d}·ключ": "" for n in range(META_ENTRIES_LIMIT - 1)}
    used = sum(len(k.encode()) for k in meta) + len(b"trace")
    room = META_BYTES_LIMIT - used
    meta["trace"] = "名" * (room // 3) + "x" * (room % 3)
    assert sum(len(k.encode()) + len(v.encode()) for k, v in meta.items()) == META_BYTES_LIMIT
    return meta


def check_meta_round_trip(factory: StorageFactory, settings: Settings) -> None:
    """METADATA: meta (unicode, empty strings, at the limits) and timeout round trip."""
    cases: dict[str, tuple[dict[str, str], float | None]] = {
        "empty": ({}, None),
        "plain": ({"tenant": "acme", "trace": "00-0af7651916cd43dd-01"}, 30.0),
        "unicode": ({"tenant": "ünï ✓ 名前", "emoji": "🚀", "tab": "\t"}, 0.25),
        "empty-value": ({"tenant": "", "spaces": "  x  ", "newline": "a\nb"}, 0.000001),
        "full": (_full_meta(), 86_400.5),
    }
    with opened(factory) as (_, storage):
        worker = unique("meta")
        storage.enqueue(
            [job(name, worker, meta=meta, timeout=t) for name, (meta, t) in cases.items()]
        )

        def same(record: JobRecord, where: str) -> None:
            meta, timeout = cases[record.id]
            expect(
                dict(record.meta) == meta and record.timeout == timeout,
                TRIP_RULE,
                f"{where} {record.id!r}: meta={dict(record.meta)!r} timeout={record.timeout!r}",
            )

        for name in cases:
            same(got(storage, name), "get")
        for record in storage.list_jobs(worker=worker):
            same(record, "list_jobs")
        token = unique("tok")
        taken = claim(storage, worker, 10, token=token)
        expect(len(taken) == len(cases), "claim takes every runnable job", ids(taken))
        for record in taken:
            same(record, "claim")
        storage.schedule_retry("plain", token, run_at=NOW, error="retry")
        storage.bury("unicode", token, error="dead")
        storage.release("full", token)
        for name in ("plain", "unicode", "full"):
            same(got(storage, name), "after retry, bury or release:")


def check_tag_filter(factory: StorageFactory, settings: Settings) -> None:
    """METADATA: list_jobs(tag=(key, value)) keeps exactly the jobs with meta[key] == value."""
    with opened(factory) as (_, storage):
        worker, other = unique("tag"), unique("tag-other")
        metas = {
            "acme-1": {"tenant": "acme"},
            "acme-2": {"tenant": "acme", "trace": ""},
            "Acme": {"tenant": "Acme"},
            "acme-space": {"tenant": "acme "},
            "pattern": {"tenant": "a%"},
            "untagged": {},
            "other-key": {"owner": "acme"},
            "empty-trace": {"trace": ""},
            "uni": {"tenant": "ünï ✓"},
        }
        storage.enqueue([job(name, worker, meta=meta) for name, meta in metas.items()])
        storage.enqueue([job("acme-elsewhere", other, meta={"tenant": "acme"})])
        rule = "list_jobs(tag=(key, value)) keeps exactly the jobs whose meta[key] == value"
        cases = [
            (("tenant", "acme"), None, ["acme-1", "acme-2", "acme-elsewhere"]),
            (("tenant", "acme"), worker, ["acme-1", "acme-2"]),
            (("tenant", "a%"), None, ["pattern"]),
            (("tenant", "a_me"), None, []),
            (("tenant", "ACME"), None, []),
            (("trace", ""), None, ["acme-2", "empty-trace"]),
            (("tenant", ""), None, []),
            (("tenant", "ünï ✓"), None, ["uni"]),
            (("missing", "acme"), None, []),
        ]
        for tag, only, expected in cases:
            seen = ids(storage.list_jobs(tag=tag, worker=only))
            expect(seen == expected, rule, f"tag={tag!r} worker={only!r}: {seen}")
        # With state, limit and after_seq: the filters all apply, limit last.
        token = unique("tok")
        taken = ids(claim(storage, worker, 1, token=token))
        expect(taken == ["acme-1"], "claim takes the oldest runnable job", taken)
        storage.bury("acme-1", token, error="dead")
        seen = ids(storage.list_jobs(tag=("tenant", "acme"), state=DEAD))
        expect(seen == ["acme-1"], rule + ", with state", seen)
        seen = ids(storage.list_jobs(tag=("tenant", "acme"), state=WAITING, limit=1))
        expect(seen == ["acme-2"], rule + ", with state and limit", seen)
        after = got(storage, "acme-2").seq
        seen = ids(storage.list_jobs(tag=("tenant", "acme"), after_seq=after))
        expect(seen == ["acme-elsewhere"], rule + ", with after_seq", seen)


def check_requeue_keeps_fields(factory: StorageFactory, settings: Settings) -> None:
    """METADATA: requeue keeps priority, meta, timeout and unique_key; clears expires_at."""
    with opened(factory) as (_, storage):
        caps = storage.capabilities
        worker = unique("requeue-v2")
        fields: dict[str, Any] = {"meta": {"tenant": "ünï", "trace": ""}, "timeout": 12.5}
        if PRIORITY in caps:
            fields["priority"] = -3
        if UNIQUE in caps:
            fields["unique"] = Unique(unique("key"))
        if EXPIRY in caps:
            fields["expires_at"] = NOW + 60.0
        storage.enqueue([job("r-1", worker, max_attempts=1, **fields)])
        before = got(storage, "r-1")
        token = unique("tok")
        expect(ids(claim(storage, worker, 1, token=token)) == ["r-1"], "claim takes the job")
        storage.bury("r-1", token, error="dead")
        expect(storage.requeue("r-1", "r-2", now=NOW + 1.0) == "requeued", "requeue")
        after = got(storage, "r-2")
        kept = (after.priority, dict(after.meta), after.timeout, after.unique_key)
        wanted = (before.priority, dict(before.meta), before.timeout, before.unique_key)
        rule = "requeue keeps priority, meta, timeout and unique_key, and clears expires_at"
        expect(kept == wanted, rule, f"(priority, meta, timeout, unique_key) {kept} != {wanted}")
        expect(after.expires_at is None, rule, f"expires_at={after.expires_at}")
        seen = ids(storage.list_jobs(tag=("tenant", "ünï")))
        expect(seen == ["r-2"], "a requeued job keeps its tags", seen)


CHECKS = [
    Check("meta_round_trip", METADATA, check_meta_round_trip, AREA),
    Check("tag_filter", METADATA, check_tag_filter, AREA),
    Check("requeue_keeps_fields", METADATA, check_requeue_keeps_fields, AREA),
]
