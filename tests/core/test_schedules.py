"""Schedules in the core: DST in two zones, missed ticks, bad input, pause, removal.

The queue's clock is a :class:`FakeClock`; ``queue.fire_schedules()`` runs the
scheduler's pass that a worker thread runs, so no test sleeps.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from exqueue import Call, ConfigurationError, Queue
from exqueue.schedules import UnknownScheduleError
from exqueue_memory import MemoryStorage
from tests.support.clock import FakeClock
from tests.support.procapp import wait_until


def at(zone: str, *fields: int) -> float:
    return dt.datetime(*fields, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def walk(queue: Queue, clock: FakeClock, until: float, step: float = 600.0) -> list[float]:
    """Move the clock in steps, firing each time; the ticks of the jobs stored."""
    fired: list[float] = []
    while clock.now < until:
        clock.advance(step)
        if queue.fire_schedules():
            state = {s.name: s for s in queue.schedules()}
            fired.append(state["daily"].last_tick.timestamp())  # type: ignore[union-attr]
        queue.drain()
    return fired


@pytest.mark.parametrize(
    ("zone", "spring", "fall"),
    [
        ("Europe/Stockholm", (2026, 3, 29), (2026, 10, 25)),
        ("America/New_York", (2026, 3, 8), (2026, 11, 1)),
    ],
)
def test_daily_0230_runs_once_on_both_dst_changes(
    zone: str, spring: tuple[int, int, int], fall: tuple[int, int, int]
) -> None:
    for day in (spring, fall):
        local = _daily_around(zone, day)
        on_day = [d for d in local if (d.year, d.month, d.day) == day]
        assert len(on_day) == 1, f"{zone} {day}: {local}"
        assert len(local) == 3  # the day before, the day, the day after
        if day == spring:  # 02:30 does not exist: cron runs it when the clock jumps to 03:00
            assert (on_day[0].hour, on_day[0].minute) == (3, 0)
        else:  # 02:30 happens twice: only the first
            assert (on_day[0].hour, on_day[0].minute, on_day[0].fold) == (2, 30, 0)
        # Every other day at 02:30 local time, whatever the offset.
        assert all((d.hour, d.minute) == (2, 30) for d in local if d not in on_day)


def _daily_around(zone: str, day: tuple[int, int, int]) -> list[dt.datetime]:
    """The local times a 02:30 daily schedule fired at, from the day before to the day after."""
    clock = FakeClock(at(zone, *day, 0, 0) - 86400)  # the day before, at midnight
    queue = Queue(MemoryStorage(), clock=clock)
    runs: list[float] = []

    @queue.worker
    def job() -> None:
        runs.append(clock.now)

    queue.schedule("daily", "30 2 * * *", job.call(), tz=zone)
    queue.fire_schedules()  # the scheduler first looks at midnight the day before
    ticks = walk(queue, clock, at(zone, *day, 0, 0) + 2 * 86400)
    assert len(runs) == len(ticks)
    return [dt.datetime.fromtimestamp(t, ZoneInfo(zone)) for t in ticks]


def test_every_interval_fires_each_tick_once() -> None:
    clock = FakeClock(1_800_000_000.0)
    queue = Queue(MemoryStorage(), clock=clock)
    ran: list[float] = []

    @queue.periodic(every=dt.timedelta(seconds=10))
    def beat() -> None:
        ran.append(clock.now)

    assert queue.fire_schedules() == []  # nothing before the scheduler first looked
    for _ in range(30):
        clock.advance(1)
        queue.fire_schedules()
        queue.fire_schedules()  # a second pass at the same time fires nothing
    queue.drain()
    assert len(ran) == 3
    info = queue.schedules()[0]
    assert info.name == beat.name and info.expression == "every 10s" and info.registered
    assert info.last_tick == dt.datetime.fromtimestamp(1_800_000_030.0, dt.UTC)
    assert info.next_fire == dt.datetime.fromtimestamp(1_800_000_040.0, dt.UTC)


def test_missed_ticks_skip_runs_the_latest_once() -> None:
    clock = FakeClock(1_800_000_000.0)
    queue = Queue(MemoryStorage(), clock=clock)
    ran: list[float] = []

    @queue.periodic("* * * * *")  # every minute
    def minutely() -> None:
        ran.append(clock.now)

    queue.fire_schedules()
    clock.advance(60)
    assert len(queue.fire_schedules()) == 1
    clock.advance(3600)  # every node down for an hour: 60 ticks due
    assert len(queue.fire_schedules()) == 1  # one job, never a burst
    assert queue.fire_schedules() == []
    queue.drain()
    assert len(ran) == 2


def test_missed_ticks_run_once_carries_the_count() -> None:
    clock = FakeClock(1_800_000_000.0)
    queue = Queue(MemoryStorage(), clock=clock)
    counts: list[int] = []

    @queue.worker
    def report(region: str, missed: int = 0) -> None:
        counts.append(missed)

    queue.schedule("report", "*/5 * * * *", report.call("eu"), missed="run_once")
    queue.fire_schedules()
    clock.advance(300)
    queue.fire_schedules()
    clock.advance(3600)  # 12 ticks due: one job, 11 missed
    queue.fire_schedules()
    queue.drain()
    assert counts == [0, 11]


def test_new_schedule_does_not_fire_for_the_past() -> None:
    clock = FakeClock(at("UTC", 2026, 6, 1, 10, 0))
    queue = Queue(MemoryStorage(), clock=clock)

    @queue.periodic("30 2 * * *")
    def nightly() -> None:
        pass

    assert queue.fire_schedules() == []  # 02:30 today has passed; it is not due
    clock.advance(86400)
    assert len(queue.fire_schedules()) == 1


def test_pause_and_resume_cluster_wide() -> None:
    storage = MemoryStorage()
    clock = FakeClock(1_800_000_000.0)
    one, two = Queue(storage, clock=clock), Queue(storage, clock=clock)
    for queue in (one, two):
        queue.worker(name="tick")(lambda: None)
        queue.schedule("tick", dt.timedelta(seconds=1), queue.workers["tick"].call())
        queue.fire_schedules()
    one.pause_schedule("tick")
    assert two.schedules()[0].paused
    clock.advance(5)
    assert one.fire_schedules() == [] and two.fire_schedules() == []
    two.resume_schedule("tick")
    assert one.fire_schedules() == []  # the ticks passed while paused are not run
    clock.advance(1)
    assert len(one.fire_schedules()) + len(two.fire_schedules()) == 1
    with pytest.raises(UnknownScheduleError, match="no schedule named 'nope'"):
        one.pause_schedule("nope")


def test_removed_schedule_stops_and_shows_as_not_registered() -> None:
    storage = MemoryStorage()
    clock = FakeClock(1_800_000_000.0)
    old = Queue(storage, clock=clock)
    old.worker(name="w")(lambda: None)
    old.schedule("old-name", dt.timedelta(seconds=1), old.workers["w"].call())
    old.fire_schedules()
    clock.advance(1)
    assert len(old.fire_schedules()) == 1
    # The next release renamed the schedule: only the new name fires.
    new = Queue(storage, clock=clock)
    new.worker(name="w")(lambda: None)
    new.schedule("new-name", dt.timedelta(seconds=1), new.workers["w"].call())
    new.fire_schedules()
    clock.advance(1)
    assert len(new.fire_schedules()) == 1
    infos = {info.name: info for info in new.schedules()}
    assert infos["old-name"].registered is False and infos["old-name"].expression is None
    assert infos["new-name"].registered is True
    assert len(storage.list_jobs()) == 2


@pytest.mark.parametrize(
    ("when", "options", "message"),
    [
        ("61 * * * *", {}, "schedule 'bad': invalid cron expression '61 \\* \\* \\* \\*'"),
        ("* * *", {}, "schedule 'bad': invalid cron expression"),
        ("* * * * *", {"tz": "Mars/Olympus"}, "schedule 'bad': unknown time zone 'Mars/Olympus'"),
        (dt.timedelta(0), {}, "schedule 'bad': the interval must be above zero"),
        (None, {"every": -5}, "schedule 'bad': the interval must be above zero"),
        (None, {}, "schedule 'bad': give either a cron expression or every="),
        ("* * * * *", {"every": 5}, "schedule 'bad': give either a cron expression or every="),
        ("* * * * *", {"missed": "all"}, "schedule 'bad': missed must be one of skip, run_once"),
        ("* * * * *", {"missed": "run_once"}, "schedule 'bad': missed='run_once' passes"),
    ],
)
def test_bad_schedules_are_refused_naming_them(
    when: object, options: dict[str, object], message: str
) -> None:
    queue = Queue(MemoryStorage())
    worker = queue.worker(name="w")(lambda: None)
    with pytest.raises(ConfigurationError, match=message):
        queue.schedule("bad", when, worker.call(), **options)  # type: ignore[arg-type]
    assert queue.schedules() == []


def test_duplicate_schedule_names_are_refused() -> None:
    queue = Queue(MemoryStorage())

    @queue.periodic("* * * * *", name="dup")
    def first() -> None:
        pass

    with pytest.raises(ConfigurationError, match="schedule 'dup': a schedule of that name"):
        queue.schedule("dup", "*/5 * * * *", first.call())
    with pytest.raises(ConfigurationError, match="schedule 'x': no worker named 'ghost'"):
        queue.schedule("x", "* * * * *", Call("ghost", (), {}))


def test_a_running_queue_fires_from_its_scheduler_thread() -> None:
    clock = FakeClock(1_800_000_000.0)
    queue = Queue(MemoryStorage(), clock=clock, poll_interval=0.02)
    ran: list[float] = []

    @queue.periodic(every=1)
    def beat() -> None:
        ran.append(clock.now)

    queue.fire_schedules()  # the scheduler's first look, before the clock moves
    queue.start()
    try:
        for n in range(1, 6):
            clock.advance(1)
            wait_until(lambda n=n: len(ran) >= n, f"tick {n} ran", timeout=20)  # type: ignore[misc]
    finally:
        queue.stop()
    assert len(ran) == 5


def test_a_node_can_opt_out() -> None:
    clock = FakeClock(1_800_000_000.0)
    queue = Queue(MemoryStorage(), clock=clock, run_schedules=False)
    queue.periodic(every=1)(lambda: None)
    assert queue._node_config().scheduler is None


def test_tick_jobs_carry_the_schedule_in_meta_and_the_worker_defaults() -> None:
    clock = FakeClock(1_800_000_000.0)
    queue = Queue(MemoryStorage(), clock=clock)

    @queue.worker(priority=-5, meta={"team": "ops"})
    def sweep(area: str) -> None:
        pass

    queue.schedule("sweep", dt.timedelta(seconds=1), sweep.call("north"))
    queue.fire_schedules()
    clock.advance(3)
    (job_id,) = queue.fire_schedules()
    job = queue.get(job_id)
    assert job is not None and job.priority == -5 and tuple(job.args) == ("north",)
    assert job.meta == {
        "team": "ops",
        "exqueue.schedule": "sweep",
        "exqueue.tick": repr(1_800_000_003.0),
        "exqueue.missed": "2",
    }


def test_a_unique_scheduled_job_is_refused() -> None:
    queue = Queue(MemoryStorage())

    @queue.worker(unique=True)
    def once() -> None:
        pass

    with pytest.raises(ConfigurationError, match="schedule 'u': its job is unique"):
        queue.schedule("u", "* * * * *", once.call())
