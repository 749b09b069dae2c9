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

Memory and speed: one record per job, not four objects. Most jobs live the simple life -
ENQUEUED, DISPATCHED, STARTED, SUCCEEDED, one attempt - and for those the pipeline does not
build `Event` objects at all: it fills in a `JobRecord` (a few fields) while the job is open
and packs it into `JobRows` (flat arrays of numbers, ~120 bytes a job) when it ends. The
events are rebuilt *on demand*, in exact sequence order, when someone reads `trace.events`
(plots, JSONL, tests). A job whose life is not simple (a failed attempt, a retry, a cut, a
dead letter) keeps its events as `Event` objects - the rare case may cost more. A trace
with listeners or a file sink builds every event as it happens (they must see it at once).

For big runs pass `keep=False` (and optionally a `path` to stream events to a file as they
happen): nothing is kept, and the pipeline folds the records into its metrics in batches.

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
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from jobq.errors import InvalidConfigError

__all__ = ["Event", "EventKind", "JobRecord", "JobRows", "Trace", "TraceHeader"]


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


_ENQUEUED, _DISPATCHED = EventKind.ENQUEUED, EventKind.DISPATCHED
_STARTED, _SUCCEEDED = EventKind.STARTED, EventKind.SUCCEEDED


class JobRecord:
    """One open job's events, as fields: what the simple life needs, and no more.

    The simple life is ENQUEUED -> DISPATCHED -> STARTED -> SUCCEEDED, one attempt, on one
    worker. While a job lives it, its events are these fields (a `seq_*` of -1: that event has
    not happened yet). The moment it leaves that life - an attempt fails, it is cut, a listener
    must see every event - `events` becomes the list of its `Event`s so far, and every later
    event is appended there instead.
    """

    __slots__ = ("attempt", "depth_disp", "depth_enq", "events", "job", "kind", "seq_disp",
                 "seq_enq", "seq_start", "t_disp", "t_enq", "t_start", "worker")

    def __init__(self, job: int, kind: str, t_enq: float, seq_enq: int, depth_enq: int) -> None:
        self.job = job
        self.kind = kind
        self.t_enq = t_enq
        self.seq_enq = seq_enq
        self.depth_enq = depth_enq
        self.t_disp = self.t_start = 0.0
        self.seq_disp = self.seq_start = -1
        self.depth_disp = self.worker = self.attempt = 0
        self.events: list[Event] | None = None

    def to_events(self) -> list[Event]:
        """This job's events so far (a new list of new Events for a simple one)."""
        if self.events is not None:
            return list(self.events)
        return _simple_life(self.job, self.kind, self.t_enq, self.seq_enq, self.depth_enq,
                            self.t_disp, self.seq_disp, self.depth_disp, self.worker,
                            self.t_start, self.seq_start, self.attempt)

    def __repr__(self) -> str:
        life = "simple" if self.events is None else f"{len(self.events)} events"
        return f"<JobRecord job={self.job} {self.kind} {life}>"


def _simple_life(job: int, kind: str, t_enq: float, seq_enq: int, depth_enq: int,
                 t_disp: float, seq_disp: int, depth_disp: int, worker: int, t_start: float,
                 seq_start: int, attempt: int, t_end: float = 0.0,
                 seq_end: int = -1) -> list[Event]:
    """The Events of a simple life, as far as it got (a seq of -1: not happened yet) - for
    an open JobRecord and for an ended job's row alike."""
    out = [Event(seq_enq, t_enq, _ENQUEUED, job, info=kind, value=depth_enq)]
    if seq_disp >= 0:
        out.append(Event(seq_disp, t_disp, _DISPATCHED, job, worker, value=depth_disp))
    if seq_start >= 0:
        out.append(Event(seq_start, t_start, _STARTED, job, worker, attempt))
    if seq_end >= 0:
        out.append(Event(seq_end, t_end, _SUCCEEDED, job, worker, attempt))
    return out


# A job id that fits an int64 array cell; bigger ids (uuid-like ints) take the Event path.
_I64 = 2**63


class JobRows:
    """Ended jobs, one row each, in the order they ended - flat arrays, no objects per job.

    A simple job's row is 4 times (enqueued, dispatched, started, ended) in `times` and 10
    integers in `ints`: job, seq_enq, depth_enq, seq_disp, depth_disp, worker, seq_start,
    attempt, seq_end, and the index of its kind in `kinds`. A job whose life was not simple
    has kind index -1, and its `job` cell is the index of its event list in `complex`.
    (8 bytes a number: ~112 bytes a job, where four Event objects took ~600.)
    """

    TIMES, INTS = 4, 10

    __slots__ = ("_kind_index", "complex", "ints", "kinds", "times")

    def __init__(self) -> None:
        self.times = array("d")
        self.ints = array("q")
        self.complex: list[list[Event]] = []
        self.kinds: list[str] = []
        self._kind_index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ints) // self.INTS

    def add_simple(self, rec: JobRecord, t_end: float, seq_end: int) -> bool:
        """Pack a simple job that just succeeded; False if it does not fit (a huge id)."""
        job = rec.job
        if not -_I64 <= job < _I64:
            return False
        kind = self._kind_index.get(rec.kind)
        if kind is None:
            kind = self._kind_index[rec.kind] = len(self.kinds)
            self.kinds.append(rec.kind)
        self.times.extend((rec.t_enq, rec.t_disp, rec.t_start, t_end))
        self.ints.extend((job, rec.seq_enq, rec.depth_enq, rec.seq_disp, rec.depth_disp,
                          rec.worker, rec.seq_start, rec.attempt, seq_end, kind))
        return True

    def add_complex(self, events: list[Event]) -> None:
        self.times.extend((0.0, 0.0, 0.0, 0.0))
        self.ints.extend((len(self.complex), 0, 0, 0, 0, 0, 0, 0, 0, -1))
        self.complex.append(events)

    def clear(self) -> None:
        del self.times[:], self.ints[:]
        self.complex.clear()

    def events(self, row: int) -> list[Event]:
        """The events of the job in `row`, rebuilt in their order."""
        i = row * self.INTS
        job, seq_enq, depth_enq, seq_disp, depth_disp, worker, seq_start, attempt, seq_end, \
            kind = self.ints[i:i + self.INTS]
        if kind < 0:
            return self.complex[job]
        t_enq, t_disp, t_start, t_end = self.times[row * 4:row * 4 + 4]
        return _simple_life(job, self.kinds[kind], t_enq, seq_enq, depth_enq, t_disp, seq_disp,
                            depth_disp, worker, t_start, seq_start, attempt, t_end, seq_end)


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
        # Where the events are (see the module docstring): open jobs' records, ended jobs'
        # rows, and `_extras` - events of no job record (phases, producer waits, and whatever
        # emit() was given). `events` puts them back together, in sequence order.
        self.open: dict[int, JobRecord] = {}
        self.rows = JobRows()
        self._extras: list[Event] = []
        self._cache: list[Event] | None = None
        self._cache_seq = -1
        # Who folds ended rows away in bounded memory (the pipeline's metrics), and when.
        self._folder: Callable[[], None] | None = None
        self._fold_every = 0
        self._retain = keep  # keep rows and extras (until folded, if not `keep`)
        self._owner: weakref.ref[object] | None = None  # the running pipeline (see attach)

    def attach(self, owner: object) -> None:
        """`owner` (a Pipeline that starts) records into this trace until `detach`. One at a
        time: open jobs' records are found by job id, and two pipelines' job 5 would be one
        record - a job could lose its ending. Raises InvalidConfigError for a second one."""
        current = None if self._owner is None else self._owner()
        if current is not None and current is not owner:
            raise InvalidConfigError(
                "Pipeline.trace: this Trace is recording another pipeline that has not "
                "stopped yet; give each pipeline a Trace of its own (one after the other "
                "may share one)")
        self._owner = weakref.ref(owner)

    def detach(self, owner: object) -> None:
        """`owner` has stopped: another pipeline may record into this trace now."""
        if self._owner is not None and self._owner() is owner:
            self._owner = None

    def _fold_with(self, folder: Callable[[], None], every: int = 4096) -> None:
        """The pipeline's, for a trace that keeps nothing: keep ended rows and extras until
        there are `every` of them, then call `folder()` - which reads them (`rows`,
        `extras()`) and calls `_drop()`. This is how a bounded run still has exact metrics.
        (Private: a folder that raised, or a drop at the wrong time, would cost a job its
        ending or its kept result - so only the pipeline's own metrics do this.)"""
        self._folder, self._fold_every, self._retain = folder, every, True

    def extras(self) -> list[Event]:
        """Events that belong to no job record, in order (phases, producer waits, ...)."""
        return self._extras

    def _drop(self) -> None:
        """Forget the rows and extras kept so far (after folding them: see _fold_with)."""
        self.rows.clear()
        self._extras.clear()

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
        """Call `listener(event)` for every event from now on."""
        self._listeners.append(listener)
        for rec in self.open.values():  # open jobs' next events must be built as they happen
            self._complicate(rec)

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
        """Record one event that belongs to no job record - a phase, a producer's wait, or an
        event of your own: `t` in loop seconds, then what happened and to which job; the
        other fields by name (which ones each kind carries: see the module docstring)."""
        event = Event(self._seq, t, kind, job, worker, attempt, info, value)
        self._seq += 1
        if self._retain:
            self._extras.append(event)
            if self._folder is not None and len(self._extras) >= self._fold_every:
                self._folder()
        if self._file is not None or self._listeners:
            self._publish(event)

    # -- the job records: the pipeline's hot path ------------------------------------------
    def enqueued(self, t: float, job: int, kind: str, depth: int) -> JobRecord:
        """Job `job` was accepted at `t`; the queue holds `depth` jobs now. Its record."""
        seq = self._seq
        self._seq = seq + 1
        rec = self.open[job] = JobRecord(job, kind, t, seq, depth)
        if self._file is not None or self._listeners:
            self._complicate(rec)
            self._publish(rec.events[0])  # type: ignore[index]
        return rec

    def dispatched(self, rec: JobRecord, t: float, worker: int, depth: int) -> None:
        seq = self._seq
        self._seq = seq + 1
        if rec.events is None and rec.seq_disp < 0:
            rec.t_disp, rec.seq_disp, rec.worker, rec.depth_disp = t, seq, worker, depth
        else:
            self._add(rec, Event(seq, t, _DISPATCHED, rec.job, worker, value=depth))

    def started(self, rec: JobRecord, t: float, worker: int, attempt: int) -> None:
        seq = self._seq
        self._seq = seq + 1
        if rec.events is None and rec.seq_start < 0 and rec.seq_disp >= 0 and (
                rec.worker == worker):
            rec.t_start, rec.seq_start, rec.attempt = t, seq, attempt
        else:
            self._add(rec, Event(seq, t, _STARTED, rec.job, worker, attempt))

    def succeeded(self, rec: JobRecord, t: float, worker: int, attempt: int) -> None:
        """The job's final event, SUCCEEDED: its record becomes a row."""
        seq = self._seq
        self._seq = seq + 1
        del self.open[rec.job]
        simple = rec.events is None and rec.seq_start >= 0 and rec.worker == worker and (
            rec.attempt == attempt)
        if simple and (not self._retain or self.rows.add_simple(rec, t, seq)):
            self._row_added()
            return
        self._add(rec, Event(seq, t, _SUCCEEDED, rec.job, worker, attempt))
        self._ended(rec)

    def job_event(self, rec: JobRecord, t: float, kind: EventKind, *,
                  worker: int | None = None, attempt: int | None = None,
                  info: str | None = None, value: float | None = None) -> None:
        """Any other event of an accepted job: a failed attempt, a retry, a cut, a dead
        letter. The job leaves the simple life; a final kind ends its record."""
        seq = self._seq
        self._seq = seq + 1
        self._add(rec, Event(seq, t, kind, rec.job, worker, attempt, info, value))
        if kind in FINAL_KINDS:
            del self.open[rec.job]
            self._ended(rec)

    def _complicate(self, rec: JobRecord) -> None:
        if rec.events is None:
            rec.events = rec.to_events()

    def _add(self, rec: JobRecord, event: Event) -> None:
        # (`self._file is not None or self._listeners`, here and in enqueued and emit:
        # someone must see each event as it happens, so it is built and published now.)
        self._complicate(rec)
        rec.events.append(event)  # type: ignore[union-attr]
        if self._file is not None or self._listeners:
            self._publish(event)

    def _ended(self, rec: JobRecord) -> None:
        if self._retain:
            assert rec.events is not None
            self.rows.add_complex(rec.events)
        self._row_added()

    def _row_added(self) -> None:
        if self._folder is not None and len(self.rows) >= self._fold_every:
            self._folder()

    def _publish(self, event: Event) -> None:
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

    @property
    def events(self) -> list[Event]:
        """Every event kept, in sequence order - rebuilt from the records when the trace has
        changed since the last call (so read it once into a variable in a loop)."""
        if not self.keep:
            return []
        if self._cache is not None and self._cache_seq == self._seq:
            return self._cache
        # A loaded trace, or emit() only, is kept as given; records are rebuilt.
        events = self._rebuild() if len(self.rows) or self.open else list(self._extras)
        self._cache, self._cache_seq = events, self._seq
        return events

    @events.setter
    def events(self, events: list[Event]) -> None:
        """Replace every event (a loaded or edited trace). Not while a pipeline records into
        this trace: its open jobs' records are here."""
        if self._owner is not None and self._owner() is not None:
            raise InvalidConfigError(
                "Trace.events cannot be replaced while a pipeline records into this trace; "
                "replace them once it has stopped")
        # New objects, not cleared ones: a stopped pipeline's kept results are read from the
        # rows it was given (see jobq.collector), and they stay as they were.
        self.rows = JobRows()
        self.open = {}
        self._extras = list(events)
        self._cache = None

    def _rebuild(self) -> list[Event]:
        parts: list[Event] = list(self._extras)
        rows = self.rows
        for row in range(len(rows)):
            parts.extend(rows.events(row))
        for rec in self.open.values():
            parts.extend(rec.to_events())
        # Every event has its own seq, so each goes to its own place: no sort needed. (A
        # trace that mixes loaded events with new ones may not number them 0..n-1: sort.)
        slots: list[Event | None] = [None] * self._seq
        for event in parts:
            seq = event.seq
            if not 0 <= seq < len(slots) or slots[seq] is not None:
                return sorted(parts, key=lambda e: e.seq)
            slots[seq] = event
        return [e for e in slots if e is not None]

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
        trace._seq = len(trace._extras)
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
