"""One trace of everything that happened, in order.

The problem: a learner wants to *see* a run - who ran what when, where the producer waited,
what shutdown cut - and the metrics must agree with the pictures. So every stage reports
what it does as an `Event`, stamped with the loop's time (virtual seconds on a virtual clock)
and a sequence number, into one `Trace`. Plots and metrics are both computed from events;
a trace saved as JSONL and loaded back gives the same plots and the same numbers.

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

import enum
import json
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
        self._file: IO[str] | None = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115

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
            self._file.write(event.to_json() + "\n")
        for listener in self._listeners:
            listener(event)

    def close(self) -> None:
        """Flush and close the file sink, if any. Idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None

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
