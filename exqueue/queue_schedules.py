"""The schedule half of the public ``Queue``: registering, listing and pausing schedules.

:class:`ScheduleMethods` is a base class of :class:`exqueue.Queue`; it keeps the
queue's :class:`~exqueue.schedules.Schedule` objects and hands the runtime a
:class:`~exqueue.runtime.scheduler.Scheduler` that fires them (see
:mod:`exqueue.schedules` for ticks, DST and missed ticks).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from exqueue.errors import ConfigurationError
from exqueue.job import Call
from exqueue.schedules import (
    Published,
    Schedule,
    ScheduleInfo,
    UnknownScheduleError,
    as_datetime,
    build_schedule,
    published_schedules,
    upcoming,
)
from exqueue.storage import (
    META_ENTRIES_LIMIT,
    METADATA,
    NODES,
    SCHEDULES,
    NewJob,
    SupportsSchedules,
)

if TYPE_CHECKING:
    from exqueue.codec import Codec
    from exqueue.queue import WorkerType
    from exqueue.runtime import Runtime
    from exqueue.runtime.scheduler import Scheduler
    from exqueue.storage import Storage


class ScheduleMethods:
    """Schedules of a queue. ``Queue`` provides the attributes declared here."""

    storage: Storage
    workers: dict[str, WorkerType[Any, Any]]
    codec: Codec
    clock: Callable[[], float]
    _runtime: Runtime | None
    #: Fire this queue's schedules in its worker runtime (``exqueue worker --no-schedules``).
    run_schedules: bool
    _schedules: dict[str, Schedule]
    _scheduler: Scheduler | None

    def schedule(
        self,
        name: str,
        when: str | dt.timedelta | None = None,
        call: Call | None = None,
        *,
        every: dt.timedelta | float | None = None,
        tz: str | ZoneInfo = "UTC",
        missed: str = "skip",
    ) -> Schedule:
        """Enqueue ``call`` on every tick of ``when``: a cron expression or a timedelta.

        ``every=`` gives the interval instead; ``tz`` is the zone a cron
        expression is read in; ``missed`` is ``"skip"`` (default) or
        ``"run_once"`` (see :mod:`exqueue.schedules`). Exactly one job is stored
        per tick however many nodes run. Bad input raises ``ConfigurationError``
        naming the schedule, and nothing is registered.
        """
        label = f"schedule {name!r}"
        if not isinstance(call, Call):
            raise ConfigurationError(
                f"{label}: give the job to run as a Call, e.g. my_worker.call(1, x=2), "
                f"not {call!r}; nothing was registered"
            )
        worker = self.workers.get(call.worker)
        if worker is None:
            raise ConfigurationError(
                f"{label}: no worker named {call.worker!r} is registered on this queue; "
                "nothing was registered"
            )
        if call.run_at is not None or call.delay:
            raise ConfigurationError(f"{label}: a scheduled call takes no run_at or delay")
        built = build_schedule(
            name,
            when,
            every=every,
            worker=worker.name,
            fn=worker.fn,
            args=call.args,
            kwargs=call.kwargs,
            tz=tz,
            missed=missed,
            options=call.options,
        )
        if name in self._schedules:
            raise ConfigurationError(f"{label}: a schedule of that name is already registered")
        if SCHEDULES not in self.storage.capabilities or not isinstance(
            self.storage, SupportsSchedules
        ):
            raise ConfigurationError(
                f"{label}: {type(self.storage).__name__} cannot record schedule ticks "
                f"(it lacks the {SCHEDULES!r} capability)"
            )
        # A job built now: arguments the codec refuses and options the store
        # cannot honour fail here, not at the first tick.
        sample = self._tick_job(built, 0.0, 0, self.clock())
        if sample.unique is not None:
            raise ConfigurationError(
                f"{label}: its job is unique (an option or the worker's default); a "
                "schedule stores exactly one job per tick and takes no unique option"
            )
        self._schedules[name] = built
        return built

    def periodic(
        self,
        when: str | dt.timedelta | None = None,
        *,
        every: dt.timedelta | float | None = None,
        tz: str | ZoneInfo = "UTC",
        missed: str = "skip",
        name: str | None = None,
    ) -> Callable[[Any], Any]:
        """Decorator: run a worker type (or a plain function, registered with the
        defaults) with no arguments on every tick. The schedule is named after
        the worker unless ``name`` is given. See :meth:`schedule`."""

        def register(target: Any) -> Any:
            from exqueue.queue import WorkerType

            worker = target
            if not isinstance(target, WorkerType):
                worker = self.worker(target)  # type: ignore[attr-defined]
            self.schedule(
                name or worker.name, when, worker.call(), every=every, tz=tz, missed=missed
            )
            return worker

        return register

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule registered here, stored, or published by a live node, by name
        (see :class:`ScheduleInfo`)."""
        stored = {state.name: state for state in self._schedule_store().schedules()}
        now = self.clock()
        live: dict[str, tuple[Published, ...]] | None = None
        silent: tuple[str, ...] = ()
        if NODES in self.storage.capabilities:
            nodes = self.nodes()  # type: ignore[attr-defined]
            live = published_schedules(nodes)
            # A node of an exqueue from before settings were published publishes no
            # worker type settings either: it may fire schedules nobody sees.
            silent = tuple(n.name for n in nodes if n.workers and not n.types)
        infos = []
        for name in sorted(set(stored) | set(self._schedules) | set(live or ())):
            state = stored.get(name)
            last = state.last_tick if state is not None else None
            paused = bool(state and state.paused)
            variants = live.get(name, ()) if live is not None else ()
            mine = self._schedules.get(name)
            firing = [p.schedule(name) for p in variants] or ([mine] if mine else [])
            shown = mine or (firing[0] if firing else None)
            is_live = None if live is None else bool(variants)
            unseen = () if variants else silent
            if shown is None:
                infos.append(
                    ScheduleInfo(
                        name,
                        None,
                        None,
                        None,
                        None,
                        as_datetime(last),
                        paused,
                        False,
                        None,
                        is_live,
                        variants,
                        unseen,
                    )  # fmt: skip
                )
                continue
            fire = min(upcoming(schedule, last, now) for schedule in firing)
            infos.append(
                ScheduleInfo(
                    name,
                    shown.expression,
                    shown.zone.key,
                    shown.missed,
                    as_datetime(fire, shown.zone),
                    as_datetime(last, shown.zone),
                    paused,
                    mine is not None,
                    shown.worker,
                    is_live,
                    variants,
                    unseen,
                )
            )
        return infos

    def pause_schedule(self, name: str) -> None:
        """Pause a schedule on every node: its ticks pass without jobs until resumed."""
        self._set_paused(name, True)

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule: the next tick after now fires (paused ticks are not run)."""
        self._set_paused(name, False)

    def fire_schedules(self) -> list[str]:
        """Fire the due ticks now, as a worker's scheduler does; the ids of the jobs stored.

        For tests driving the queue's clock, and for a process that enqueues
        periodic jobs without running workers.
        """
        scheduler = self._get_scheduler()
        if scheduler is None:
            return []
        fired, _ = scheduler.run_pass()
        if fired and self._runtime is not None:
            self._runtime.wake()
        return fired

    # -- internals -------------------------------------------------------------

    def _set_paused(self, name: str, paused: bool) -> None:
        store = self._schedule_store()
        if name not in self._schedules and name not in {s.name for s in store.schedules()}:
            known = ", ".join(sorted(self._schedules)) or "none"
            raise UnknownScheduleError(
                f"no schedule named {name!r} is registered on this queue (registered: {known}) "
                "or stored"
            )
        store.pause_schedule(name, paused)

    def _schedule_store(self) -> SupportsSchedules:
        if SCHEDULES not in self.storage.capabilities or not isinstance(
            self.storage, SupportsSchedules
        ):
            raise ConfigurationError(
                f"{type(self.storage).__name__} keeps no schedules "
                f"(it lacks the {SCHEDULES!r} capability)"
            )
        return self.storage

    def _get_scheduler(self) -> Scheduler | None:
        """The queue's scheduler (one per queue: it remembers when it first looked)."""
        if not self._schedules:
            return None
        if self._scheduler is None:
            from exqueue.runtime.scheduler import Scheduler

            self._scheduler = Scheduler(
                self._schedule_store(), self._schedules, self._tick_job, self.clock
            )
        return self._scheduler

    def _tick_job(self, schedule: Schedule, tick: float, missed: int, now: float) -> NewJob:
        """The job of one tick: the call's arguments and options, and the worker's defaults."""
        kwargs = dict(schedule.kwargs)
        if schedule.pass_missed:
            kwargs["missed"] = missed
        job: NewJob = self._new_job(  # type: ignore[attr-defined]
            schedule.worker, schedule.args, kwargs, None, 0.0, now, False, schedule.options
        )
        hooks = getattr(self, "hooks", None)
        if hooks:  # the middlewares' enqueue hook (tracing context); see exqueue.middleware
            job = hooks.enqueue(job)
        if METADATA not in self.storage.capabilities:
            return job
        tag = {"exqueue.schedule": schedule.name, "exqueue.tick": repr(tick)}
        if missed:
            tag["exqueue.missed"] = str(missed)
        # The schedule's entries go in only where the job's own meta leaves room.
        meta = dict(job.meta)
        for key, value in tag.items():
            if key not in meta and len(meta) < META_ENTRIES_LIMIT:
                meta[key] = value
        return replace(job, meta=meta)
