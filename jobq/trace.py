"""One trace of everything that happened, in order.

The problem: a learner wants to *see* a run - who ran what when, where the producer waited,
what shutdown cut - and the metrics must agree with the pictures. So every stage reports
what it does as an `Event`, stamped with the loop's time (virtual seconds on a virtual clock)
and a sequence number, into one `Trace`. Plots and metrics are both computed from events;
a trace saved as JSONL and loaded back gives the same plots and the same numbers.

Observers never fail a job. A listener that raises, or a file sink that cannot be written (a
full disk), is the observer's problem, not the pipeline's: `emit` never raises. A failing
listener is counted and logged once (logger "jobq.trace"); a failing sink is closed and its
error kept; `problems()` lists both, and the pipeline's report carries them.

Memory: a trace that keeps its events grows with the job count. For big runs pass
`keep=False` (and optionally a `path` to stream events to a file as they happen): listeners,
such as the streaming metrics, still see every event.

The file describes itself: when a Pipeline starts it fills in the trace's `TraceHeader`
(workers, capacity, executor, real or virtual clock, seed, jobq version, start time), and a
JSONL file begins with it as its first line. So a file is enough to draw the run again:

    trace = Trace.from_jsonl("run.jsonl")   # files without a header (older ones) load too
    plotting.plot_dashboard(trace)          # workers, capacity and clock from the header

Event kinds and their fields (job, worker, attempt, info, value):

    ENQUEUED          job accepted into the queue   info=job kind   value=queue depth after
    PRODUCER_BLOCKED  a submit found the queue full (job)
    PRODUCER_RESUMED  ... and got its place         (job)
    DISPATCHED        job left the queue for a worker slot  worker   value=queue depth after
    STARTED           an attempt began               worker attempt
    ATTEMPT_FAILED    an attempt failed              worker attempt info=error
    RETRY_SCHEDULED   a retry will follow            worker attempt=next one value=backoff seconds
    SUCCEEDED         final: done                    worker attempt
    DEAD_LETTERED     final: every attempt failed    worker attempt info=last error
    CANCELLED         final: ended by shutdown       worker (or None) info=cancel reason
                                                      value=queue depth after, if it was queued
    PHASE             a shutdown phase began         info=phase name
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["Event", "EventKind", "Trace", "TraceHeader"]


class EventKind(enum.Enum):
    ENQUEUED = "enqueued"
    PRODUCER_BLOCKED = "producer-blocked"
    PRODUCER_RESUMED = "producer-resumed"
    DISPATCHED = "dispatched"
    STARTED = "started"
    ATTEMPT_FAILED = "attempt-failed"
    RETRY_SCHEDULED = "retry-scheduled"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead-lettered"
    CANCELLED = "cancelled"
    PHASE = "phase"

    # Members are singletons, so hashing by identity is right - and runs in C, where Enum's
    # own __hash__ is Python code. Events meet sets and dicts several times each.
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"EventKind.{self.name}"


FINAL_KINDS = frozenset({EventKind.SUCCEEDED, EventKind.DEAD_LETTERED, EventKind.CANCELLED})


@dataclass(slots=True)
class Event:
    seq: int
    t: float
    kind: EventKind
    job: int | None = None
    worker: int | None = None
    attempt: int | None = None
    info: str | None = None
    value: float | None = None

    def to_json(self) -> str:
        record: dict[str, Any] = {"seq": self.seq, "t": self.t, "kind": self.kind.value}
        for name in ("job", "worker", "attempt", "info", "value"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        return cls._from_record(json.loads(line))

    @classmethod
    def _from_record(cls, record: dict[str, Any]) -> Event:
        record["kind"] = EventKind(record["kind"])
        return cls(**record)


# The header line of a trace file carries this key (the value is the format's version); an
# event line never does - every event has a "kind".
_HEADER_KEY = "jobq_trace"
_HEADER_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class TraceHeader:
    """What a trace says about its run, so that the trace alone is enough to read it.

        TraceHeader(clock="virtual", t0=0.0, workers=4, capacity=10, executor="inline", ...)

    `clock` is "real" or "virtual": which seconds the events' `t` counts. `t0` is the loop
    time when the run started: on a real clock `t` is the loop's monotonic time (1668.0 s
    means nothing to a reader), so plots measure from `t0`. `seed` is the FailurePlan's
    seed (what makes random failures repeat), `started_at` the wall-clock start in UTC.
    Fields nobody filled in are None.
    """

    clock: Literal["real", "virtual"] | None = None
    t0: float | None = None
    workers: int | None = None
    capacity: int | None = None
    executor: str | None = None
    seed: int | None = None
    jobq_version: str | None = None
    started_at: str | None = None  # ISO 8601, UTC

    @property
    def virtual(self) -> bool | None:
        """True on the virtual clock, False on the real one, None if the header does not say."""
        return None if self.clock is None else self.clock == "virtual"

    def to_json(self) -> str:
        record: dict[str, Any] = {_HEADER_KEY: _HEADER_VERSION}
        record.update((k, v) for k, v in dataclasses.asdict(self).items() if v is not None)
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def _from_record(cls, record: dict[str, Any]) -> TraceHeader:
        # Fields a later jobq may add are skipped, not refused: the events still load.
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


Listener = Callable[[Event], None]

_log = logging.getLogger("jobq.trace")


class Trace:
    """Events of one run, in the order they happened.

        trace = Trace()                            # keep events in memory
        trace = Trace(keep=False, path="run.jsonl")  # bounded memory: stream to a file

    `header` describes the run (see TraceHeader): the Pipeline fills it in when it starts.
    """

    def __init__(self, *, keep: bool = True, path: str | Path | None = None) -> None:
        self.keep = keep
        self.events: list[Event] = []
        self._listeners: list[Listener] = []
        self._seq = 0
        self._path = path
        self._file: IO[str] | None = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115
        # What went wrong with observers: listener -> (times it raised, its first error),
        # and the error that stopped the file sink.
        # (Keyed by id(): a listener need not be hashable.)
        self._listener_errors: dict[int, tuple[Listener, int, str]] = {}
        self._sink_error: str | None = None
        self.header: TraceHeader | None = None

    def describe(
        self,
        *,
        clock: Literal["real", "virtual"] | None = None,
        t0: float | None = None,
        workers: int | None = None,
        capacity: int | None = None,
        executor: str | None = None,
        seed: int | None = None,
    ) -> TraceHeader:
        """Fill in the header: the fields given that it does not have yet (the Pipeline calls
        this when it starts; call it before, e.g. with a `seed` of yours, and yours stay).
        jobq's version and the wall-clock start are added the first time. A file sink gets
        the header as a line of its own. Returns the header in force."""
        from jobq import __version__  # here, not at the top: jobq imports this module

        old = self.header or TraceHeader(
            jobq_version=__version__,
            started_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        )
        new = TraceHeader(  # what the header had stays; what it lacked is filled in
            clock=old.clock if old.clock is not None else clock,
            t0=old.t0 if old.t0 is not None else t0,
            workers=old.workers if old.workers is not None else workers,
            capacity=old.capacity if old.capacity is not None else capacity,
            executor=old.executor if old.executor is not None else executor,
            seed=old.seed if old.seed is not None else seed,
            jobq_version=old.jobq_version,
            started_at=old.started_at,
        )
        if new != self.header:
            self.header = new
            if self._file is not None:
                # Each line is the whole header so far; a loader keeps the last one.
                try:
                    self._file.write(new.to_json() + "\n")
                except Exception as exc:  # like an event's write: the sink stops, the run goes on
                    self._sink_failed(exc)
        return self.header

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(event)` for every event from now on (metrics use this)."""
        self._listeners.append(listener)

    def emit(
        self,
        t: float,
        kind: EventKind,
        job: int | None = None,
        *,
        worker: int | None = None,
        attempt: int | None = None,
        info: str | None = None,
        value: float | None = None,
    ) -> None:
        """Record one event: `t` in loop seconds, then what happened and to which job; the
        other fields by name (which ones each kind carries: see the module docstring)."""
        event = Event(self._seq, t, kind, job, worker, attempt, info, value)
        self._seq += 1
        if self.keep:
            self.events.append(event)
        if self._file is not None:
            try:
                self._file.write(event.to_json() + "\n")
            except Exception as exc:  # a full disk must not stop the pipeline
                self._sink_failed(exc)
        if self._listeners:  # (most traces have none: no loop to set up per event)
            for listener in self._listeners:
                try:
                    listener(event)
                except BaseException as exc:  # the listener's problem, not the job's
                    self._listener_failed(listener, exc)

    def _listener_failed(self, listener: Listener, exc: BaseException) -> None:
        # A listener is user code called in the middle of a stage's bookkeeping: whatever it
        # raises (even SystemExit) must not unwind the stage, or a job would lose its status.
        _, count, first = self._listener_errors.get(id(listener), (listener, 0, ""))
        if count == 0:
            first = f"{type(exc).__name__}: {exc}"
            _log.error("trace listener %r raised %s; it stays subscribed, further errors "
                       "are only counted (Trace.problems())", listener, first,
                       exc_info=(type(exc), exc, exc.__traceback__))
        self._listener_errors[id(listener)] = (listener, count + 1, first)

    def _sink_failed(self, exc: Exception) -> None:
        self._sink_error = f"{type(exc).__name__}: {exc}"
        _log.error("trace file %s could not be written (%s); the file sink is stopped, the "
                   "run goes on", self._path, self._sink_error)
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(Exception):  # closing flushes, which fails again
                file.close()

    def problems(self) -> list[str]:
        """What went wrong with observers during the run, one line each (empty: nothing)."""
        lines = [f"trace listener {listener!r} raised {count} time(s), first: {first}"
                 for listener, count, first in self._listener_errors.values()]
        if self._sink_error is not None:
            lines.append(f"trace file {self._path} stopped: {self._sink_error}")
        return lines

    def close(self) -> None:
        """Flush and close the file sink, if any. Idempotent; never raises (a failure to
        flush is kept in problems())."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except Exception as exc:
                self._file = file
                self._sink_failed(exc)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def of_kind(self, *kinds: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]

    def for_job(self, job_id: int) -> list[Event]:
        return [e for e in self.events if e.job == job_id]

    # -- saving and loading -------------------------------------------------------------
    def to_jsonl(self, path: str | Path) -> None:
        """Save the header (if any) as the first line, then one line per event."""
        with open(path, "w", encoding="utf-8") as f:
            if self.header is not None:
                f.write(self.header.to_json() + "\n")
            for event in self.events:
                f.write(event.to_json() + "\n")

    @classmethod
    def from_events(cls, events: Iterable[Event], header: TraceHeader | None = None) -> Trace:
        trace = cls()
        trace.events = list(events)
        trace._seq = len(trace.events)
        trace.header = header
        return trace

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Trace:
        """Load a file written by `to_jsonl` or a file sink - with its header, or without one
        (files from before headers existed): then `header` is None."""
        header: TraceHeader | None = None
        events: list[Event] = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                record = json.loads(line)
                if _HEADER_KEY in record:  # the last one is the fullest (see describe())
                    header = TraceHeader._from_record(record)
                else:
                    events.append(Event._from_record(record))
        return cls.from_events(events, header)

    def __repr__(self) -> str:
        return f"<Trace {self._seq} events{'' if self.keep else ' (not kept)'}>"
