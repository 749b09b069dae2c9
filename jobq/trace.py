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
import enum
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["Event", "EventKind", "Trace"]


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
        record = json.loads(line)
        record["kind"] = EventKind(record["kind"])
        return cls(**record)


Listener = Callable[[Event], None]

_log = logging.getLogger("jobq.trace")


class Trace:
    """Events of one run, in the order they happened.

        trace = Trace()                            # keep events in memory
        trace = Trace(keep=False, path="run.jsonl")  # bounded memory: stream to a file
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

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(event)` for every event from now on (metrics use this)."""
        self._listeners.append(listener)

    def emit(
        self,
        t: float,
        kind: EventKind,
        job: int | None = None,
        worker: int | None = None,
        attempt: int | None = None,
        info: str | None = None,
        value: float | None = None,
    ) -> None:
        event = Event(self._seq, t, kind, job, worker, attempt, info, value)
        self._seq += 1
        if self.keep:
            self.events.append(event)
        if self._file is not None:
            try:
                self._file.write(event.to_json() + "\n")
            except Exception as exc:  # a full disk must not stop the pipeline
                self._sink_failed(exc)
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
        with open(path, "w", encoding="utf-8") as f:
            for event in self.events:
                f.write(event.to_json() + "\n")

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Trace:
        trace = cls()
        trace.events = list(events)
        trace._seq = len(trace.events)
        return trace

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Trace:
        with open(path, encoding="utf-8") as f:
            return cls.from_events(Event.from_json(line) for line in f if line.strip())

    def __repr__(self) -> str:
        return f"<Trace {self._seq} events{'' if self.keep else ' (not kept)'}>"
