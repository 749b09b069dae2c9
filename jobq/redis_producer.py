"""The producer side of jobq's distributed mode: the Pipeline API, with Redis in the middle.

    async with RedisPipeline("redis://HOST:6379/0", "emails", capacity=1000) as pipe:
        handle = await pipe.submit(Call(send_email, "ann@example.com"))   # waits for room
        await pipe.submit_many(Job(i, b"", Blocking(resize, i)) for i in range(10_000))
        print(await handle)                                 # the value, from some worker
    print(pipe.report)                                      # lost == 0, computed from Redis

and, on any machine that reaches the server, workers: `python -m jobq worker --redis URL
--queue emails --workers 8 --import app.jobs` (see jobq.redis_worker).

    submit ---accept script---> jobs stream ---> workers ---final script---> results:P
      ^ waits while this producer's           (consumer group)                |
      | accepted-but-unfinished >= capacity        <--- results reader (XREAD) +

Backpressure: `submit` waits while this producer has `capacity` jobs accepted and not yet
final - the same promise as the local queue, counted where the producer can see it without
polling (its own results). Never MAXLEN: trimming the jobs stream would delete jobs.

Exact accounting: a job is accepted when the accept script has added it (one atomic step),
and ends when its one result arrives - a second result for the same job (a redelivered job
whose first final went through twice, say) is counted in `duplicates`, never as a second
status. At shutdown `lost` is computed from Redis: a job with no result whose entry is
still in the jobs stream is `still_open` (workers will finish it; we just stopped waiting);
one whose entry is gone *and* has no result is lost - and must be 0.

What the local Pipeline has and this one does not (yet): cancelling a job through its
handle (`handle.cancel()` returns False), `replay`, a progress bar. Results and dead
letters carry wall-clock times (time.time()) of the machines involved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import json
import os
import time
import weakref
from collections import deque
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, overload

from jobq import validation as check
from jobq.accounting import IdSet
from jobq.broker import RAN, Broker, check_target, run_script
from jobq.errors import (
    DuplicateJobError,
    InvalidJobError,
    PipelineClosedError,
    ReportNotReadyError,
)
from jobq.handles import JobHandle, ResultStream
from jobq.jobs import (
    AsyncIo,
    Blocking,
    Call,
    CpuBound,
    Delayed,
    Job,
    JobResult,
    JobType,
    ResultStatus,
)
from jobq.pipeline import format_rows
from jobq.retry import DeadLetter, DeadLetterQueue
from jobq.trace import Event, EventKind, Trace, TraceHeader
from jobq.wire import MAX_ENTRY_BYTES, WireError, decode_result, encode_job

__all__ = [
    "MergedTrace",
    "RedisPipeline",
    "RedisShutdownReport",
    "merged_trace",
    "read_dead_letters",
]

T = TypeVar("T")
_TRIM_EVERY = 5000  # results read between two trims of our results stream
_JOB_TYPES = (CpuBound, AsyncIo, Delayed, Call, Blocking)


@dataclass(frozen=True)
class RedisShutdownReport:
    """How this producer's jobs ended, and what Redis counted for the whole queue.

    `lost` (must be 0): jobs accepted whose entry is gone from Redis with no result.
    `still_open`: accepted, not final at the drain deadline, still in Redis - workers will
    finish them; this producer stopped waiting (and will not see their results).
    `duplicates`: second results for a job that had ended already (not a second status).
    `redeliveries` and `duplicate_finals` are the queue's counters in Redis, all producers'
    jobs together: entries taken over from a worker that died, stalled or gave them back;
    finals that found their job ended already."""

    submitted: int
    succeeded: int
    dead_lettered: int
    still_open: int
    lost: int
    duplicates: int
    failed_attempts: int
    redeliveries: int
    duplicate_finals: int
    drained: bool

    @property
    def ended(self) -> int:
        return self.succeeded + self.dead_lettered

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("submitted", self.submitted),
            ("succeeded", self.succeeded),
            ("dead-lettered", self.dead_lettered),
            ("still open in Redis", self.still_open),
            ("lost", self.lost),
            ("failed attempts", self.failed_attempts),
            ("redeliveries (queue)", self.redeliveries),
            ("duplicate finals (queue)", self.duplicate_finals),
        ]

    def __str__(self) -> str:
        return format_rows(self.rows())


@dataclass(eq=False, slots=True)
class _Open:
    """A job this producer submitted that has not ended: accepted (or being accepted)."""

    job: Job
    handle: weakref.ref[JobHandle[Any]] | None
    entry: str | None = None  # the stream entry id, once the accept script answered


class RedisPipeline:
    """A producer: jobs into Redis, results back, the local Pipeline's API.

    Arguments (keyword-only after `queue`):
        capacity           at most this many of this producer's jobs accepted and not yet
                           final; `submit` waits beyond (backpressure)
        drain_timeout      default for shutdown(): seconds to wait for the jobs to end
                           (None: until they do)
        keep_results       keep every JobResult in `results` (False for huge runs)
        batch              at most this many jobs per accept call in submit_many
        events             write ENQUEUED events for the merged trace
        max_entry_bytes    a job larger than this as JSON is refused (EntryTooLargeError)
        connect_timeout    seconds to reach the server at start (then BrokerUnavailableError)
        reconnect_timeout  seconds to keep retrying through a lost connection
    """

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        capacity: int = 1000,
        drain_timeout: float | None = None,
        keep_results: bool = True,
        batch: int = 500,
        events: bool = True,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 30.0,
    ) -> None:
        check.count("RedisPipeline.capacity", capacity)
        check.count("RedisPipeline.batch", batch)
        check.seconds("RedisPipeline.drain_timeout", drain_timeout, allow_none=True)
        check.count("RedisPipeline.max_entry_bytes", max_entry_bytes)
        check.flag("RedisPipeline.keep_results", keep_results)
        check.flag("RedisPipeline.events", events)
        check_target("RedisPipeline", url, queue, connect_timeout, reconnect_timeout)
        self.capacity = capacity
        self.drain_timeout = drain_timeout
        self._url = url
        self._queue_name = queue
        self._keep_results = keep_results
        self._batch = batch
        self._events_on = events
        self._max_bytes = max_entry_bytes
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        # Our name: where workers send our results (jobq:{queue}:results:NAME).
        self.name = f"p{os.getpid()}-{os.urandom(4).hex()}"
        self._broker: Broker | None = None
        self._open: dict[int, _Open] = {}
        self._ids = IdSet()
        self._next_id = 0
        self._room = asyncio.Event()  # set when a result frees room (or shutdown begins)
        self._drained = asyncio.Event()
        self._streams: list[ResultStream] = []
        self._results: deque[JobResult] = deque()
        self.dead_letters = DeadLetterQueue()
        self._closed = False
        self._accepting = 0  # accept calls in flight
        self._accepted = asyncio.Event()  # set when one ends
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: BaseException | None = None
        self._last_result = "0-0"
        self._seq = 0
        self._counts = {"submitted": 0, "succeeded": 0, "dead": 0, "duplicates": 0,
                        "failed_attempts": 0}
        self._report: RedisShutdownReport | None = None
        self._shutdown_task: asyncio.Task[RedisShutdownReport] | None = None

    # -- starting -------------------------------------------------------------------------
    async def start(self) -> RedisPipeline:
        """Connect (BrokerUnavailableError / BrokerAuthError within connect_timeout) and
        start reading results. `async with` does it. Idempotent."""
        if self._broker is None:
            self._broker = await Broker.connect(
                self._url, self._queue_name, connect_timeout=self._connect_timeout,
                reconnect_timeout=self._reconnect_timeout)
            self._reader = asyncio.create_task(self._read_results(), name="jobq-results")
        return self

    async def __aenter__(self) -> RedisPipeline:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None or issubclass(exc_type, Exception):
            await self.shutdown()
        else:  # cancelled or interrupted: stop waiting now (the jobs stay in Redis)
            await self.shutdown(drain_timeout=0.0)

    # -- submitting -------------------------------------------------------------------------
    def _admit(self, job: Job | JobType, timeout: float | None) -> tuple[Job, bytes]:
        if isinstance(job, _JOB_TYPES):
            job = Job(self._free_id(), b"", job, timeout)
        elif not isinstance(job, Job):
            raise InvalidJobError(
                f"submit() takes a Job or a job type (Call, Blocking, CpuBound, AsyncIo, "
                f"Delayed), got {type(job).__name__} {check.shown(job)}")
        elif timeout is not None:
            job = dataclasses.replace(job, timeout=timeout)
        if self._closed:
            raise PipelineClosedError(f"the pipeline is shutting down; job {job.id} was not "
                                      "accepted")
        if job.id in self._ids:
            raise DuplicateJobError(f"Job.id {job.id} was already submitted to this pipeline")
        data = encode_job(job, producer=self.name, submitted_at=time.time(),
                          limit=self._max_bytes)
        self._ids.add(job.id)
        return job, data

    def _free_id(self) -> int:
        while self._next_id in self._ids:
            self._next_id += 1
        return self._next_id

    def _has_room(self, wanted: int = 1) -> bool:
        return len(self._open) + wanted <= self.capacity and not any(
            s.full for s in self._streams)

    async def _wait_for_room(self, wanted: int = 1) -> None:
        """Wait until `wanted` more jobs fit (submit_many asks for a batch's worth, so that
        it sends batches, not a job per result that came back)."""
        while not self._has_room(wanted):
            if self._closed:
                return
            if self._reader_error is not None:
                raise self._reader_error
            self._room.clear()
            await self._room.wait()

    def _wake(self) -> None:
        self._room.set()

    async def _accept(self, batch: list[tuple[Job, bytes]], handles: bool) -> list[Any]:
        """Accept `batch` in one script call. Reserved in `_open` before the call, so a
        result that arrives before the reply finds its job."""
        if self._broker is None:
            await self.start()
        broker = self._broker
        assert broker is not None
        if self._closed:
            for job, _ in batch:
                self._ids.discard(job.id)
            raise PipelineClosedError(f"the pipeline is shutting down; job {batch[0][0].id} "
                                      "was not accepted")
        made: list[Any] = []
        opened: list[_Open] = []
        now = time.time()
        events: list[list[Any]] = []
        for job, _ in batch:
            handle: JobHandle[Any] | None = JobHandle(job.id, _no_cancel) if handles else None
            made.append(handle)
            opened.append(_Open(job, None if handle is None else weakref.ref(handle)))
            self._open[job.id] = opened[-1]
            if self._events_on:
                events.append([self._seq, now, EventKind.ENQUEUED.value, job.id, None, None,
                               job.kind, len(self._open)])
                self._seq += 1
        keys = broker.keys
        args: list[Any] = [json.dumps({"slots": 0, "ev": events}, separators=(",", ":"))
                           if events else "", self.name, *(data for _, data in batch)]
        self._accepting += 1
        try:
            ids = await broker.call("submitting jobs", functools.partial(
                run_script, broker.accept_script, [keys.jobs, keys.stats, keys.events], args))
        except BaseException:
            for job, _ in batch:  # not accepted: forget them (their ids are free again)
                self._open.pop(job.id, None)
                self._ids.discard(job.id)
            raise
        finally:
            self._accepting -= 1
            self._accepted.set()
        for item, entry in zip(opened, ids, strict=True):
            item.entry = entry.decode()
        self._counts["submitted"] += len(batch)
        return made

    @overload
    async def submit(self, job: Call[T] | Blocking[T], *,
                     timeout: float | None = None) -> JobHandle[T]: ...  # noqa: ASYNC109
    @overload
    async def submit(self, job: Job | CpuBound | AsyncIo | Delayed, *,
                     timeout: float | None = None) -> JobHandle[Any]: ...  # noqa: ASYNC109

    async def submit(self, job: Job | JobType, *,
                     timeout: float | None = None) -> JobHandle[Any]:  # noqa: ASYNC109
        """Submit one job, waiting while this producer has `capacity` jobs open; return
        its handle (`await handle` gives the value). Raises InvalidJobError (not JSON,
        EntryTooLargeError, a function a worker cannot import) before anything is sent,
        PipelineClosedError once shutdown began."""
        admitted = self._admit(job, timeout)
        try:
            await self._wait_for_room()
            handles = await self._accept([admitted], handles=True)
        except BaseException:
            self._ids.discard(admitted[0].id)
            raise
        handle: JobHandle[Any] = handles[0]
        return handle

    async def submit_many(
        self, jobs: Iterable[Job | JobType] | AsyncIterable[Job | JobType]
    ) -> int:
        """Submit every job, in batches of up to `batch` per round trip (each waits for
        room as submit does). Returns how many were accepted. No handles: read the results
        with as_completed(), or from `results` after shutdown."""
        count = 0
        pending: list[tuple[Job, bytes]] = []

        async def flush() -> None:
            nonlocal count
            while pending:
                await self._wait_for_room(min(len(pending), max(1, self.capacity // 4)))
                room = max(1, self.capacity - len(self._open))
                chunk, pending[:] = pending[:room], pending[room:]
                await self._accept(chunk, handles=False)
                count += len(chunk)

        try:
            if isinstance(jobs, AsyncIterable):
                async for job in jobs:
                    pending.append(self._admit(job, None))
                    if len(pending) >= self._batch:
                        await flush()
            else:
                for job in jobs:
                    pending.append(self._admit(job, None))
                    if len(pending) >= self._batch:
                        await flush()
            await flush()
        finally:
            for job, _ in pending:  # admitted, never sent: their ids are free again
                self._ids.discard(job.id)
        return count

    # -- results ----------------------------------------------------------------------------
    async def _read_results(self) -> None:
        """Our results stream, as it fills. Cancel-safe (XREAD, no group: nothing moves in
        Redis when we read); trimmed behind us, so it holds only what we have not read."""
        broker = self._broker
        assert broker is not None
        key = broker.keys.results(self.name)
        unread_trimmed = 0  # results read since the stream was last trimmed
        try:
            while True:
                read = functools.partial(broker.redis.xread, {key: self._last_result},
                                         count=1000, block=1000)
                reply = await broker.call("reading results", read)
                self._take_results(reply)
                unread_trimmed += sum(len(entries) for _stream, entries in reply or ())
                if unread_trimmed >= _TRIM_EVERY:  # a round trip, so not after every read
                    unread_trimmed = 0
                    trim = functools.partial(broker.redis.xtrim, key, minid=self._last_result,
                                             approximate=True)
                    await broker.call("trimming results", trim)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the server is gone for good: submitters must hear
            self._reader_error = exc
            self._wake()
            self._drained.set()

    def _take_results(self, reply: Any) -> None:
        for _stream, entries in reply or ():
            for entry_id, flat in entries:  # [b"r", record] (see Broker: as Redis sent it)
                self._last_result = entry_id.decode()
                data = flat[1] if len(flat) == 2 and flat[0] == b"r" else None
                try:
                    result, attempts, _worker = decode_result(data or b"")
                except WireError:
                    continue  # not written by a jobq worker: nothing of ours ended
                self._ended(result, attempts)
        if not self._open:
            self._drained.set()

    def _ended(self, result: JobResult, attempts: tuple[Any, ...]) -> None:
        item = self._open.pop(result.job_id, None)
        if item is None:
            self._counts["duplicates"] += 1  # ended already: never a second status
            return
        if result.status is ResultStatus.SUCCEEDED:
            self._counts["succeeded"] += 1
            self._counts["failed_attempts"] += result.attempts - 1
        else:
            self._counts["dead"] += 1
            self._counts["failed_attempts"] += len(attempts)
        letter = None
        if result.status is ResultStatus.DEAD_LETTERED:
            letter = DeadLetter(item.job, tuple(attempts))
            self.dead_letters.add(letter)
        handle = None if item.handle is None else item.handle()
        if handle is not None:
            handle._resolve(result, letter)
        if self._keep_results:
            self._results.append(result)
        for stream in self._streams:
            stream._put(result)
        self._wake()

    def as_completed(self, *, maxsize: int | None = None) -> ResultStream:
        """Results as they arrive, until shutdown has finished (see Pipeline.as_completed):
        bounded, and while it is full, submit waits."""
        size = self.capacity if maxsize is None else maxsize
        check.count("as_completed.maxsize", size)
        stream = ResultStream(size, self._wake, self._stream_closed)
        if self._report is not None:
            stream._end()
        else:
            self._streams.append(stream)
        return stream

    def _stream_closed(self, stream: ResultStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    @property
    def results(self) -> list[JobResult]:
        return list(self._results)

    @property
    def open(self) -> int:
        """This producer's jobs accepted (or being accepted) and not yet final."""
        return len(self._open)

    async def wait_drained(self) -> None:
        """Wait until every job submitted so far has ended."""
        while self._open and self._reader_error is None:
            self._drained.clear()
            await self._drained.wait()
        if self._reader_error is not None:
            raise self._reader_error

    # -- shutting down ----------------------------------------------------------------------
    async def shutdown(self, *, drain_timeout: float | None = None) -> RedisShutdownReport:
        """Close intake, wait for every accepted job to end (at most `drain_timeout`
        seconds; default: the pipeline's), compute the report from Redis. Safe twice."""
        check.seconds("RedisPipeline.shutdown(drain_timeout=...)", drain_timeout,
                      allow_none=True)
        self._closed = True
        self._wake()
        if self._shutdown_task is None:
            timeout = self.drain_timeout if drain_timeout is None else drain_timeout
            self._shutdown_task = asyncio.create_task(self._shutdown(timeout))
        return await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, limit: float | None) -> RedisShutdownReport:
        broker = self._broker
        if broker is None:  # never started: nothing was sent
            self._report = self._make_report(0, 0, {}, drained=True)
            self._end_streams()
            return self._report
        try:
            while self._accepting:  # an accept in flight: its jobs are ours to count
                self._accepted.clear()
                await self._accepted.wait()
            drained = True
            if self._open and self._reader_error is None:
                try:
                    async with asyncio.timeout(limit):
                        await self.wait_drained()
                except TimeoutError:
                    drained = False
            if self._reader is not None:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            still_open, lost = await self._count_unfinished(broker)
            stats = await broker.stats()
            key = broker.keys.results(self.name)
            if still_open:  # results may still come: keep them a day, then let Redis drop them
                await broker.call("closing", functools.partial(broker.redis.expire, key, 86400))
            else:
                await broker.call("closing", functools.partial(broker.redis.delete, key))
            self._report = self._make_report(still_open, lost, stats, drained=drained)
        finally:
            self._end_streams()
            await broker.aclose()
        return self._report

    async def _count_unfinished(self, broker: Broker) -> tuple[int, int]:
        """(still open, lost) of the jobs without a result - asked of Redis. An entry that
        is gone was made final (the final script deletes it and adds the result in one
        step), so its result is read first; only an entry gone *without* a result is lost."""
        if not self._open:
            return 0, 0
        keys = broker.keys
        waiting = list(self._open.values())

        async def exists() -> list[Any]:
            async with broker.redis.pipeline(transaction=False) as pipe:
                for item in waiting:
                    pipe.xrange(keys.jobs, item.entry or "-", item.entry or "+", count=1)
                return await pipe.execute()

        present = await broker.call("counting open jobs", exists)
        gone = {item.job.id for item, found in zip(waiting, present, strict=True) if not found}
        if gone:  # their results were written with their deletion: read them now
            key = keys.results(self.name)
            read = functools.partial(broker.redis.xread, {key: self._last_result}, count=None)
            self._take_results(await broker.call("reading results", read))
        lost = sum(1 for job_id in gone if job_id in self._open)
        return len(self._open) - lost, lost

    def _make_report(self, still_open: int, lost: int, stats: dict[str, int],
                     drained: bool) -> RedisShutdownReport:
        c = self._counts
        return RedisShutdownReport(
            submitted=c["submitted"], succeeded=c["succeeded"], dead_lettered=c["dead"],
            still_open=still_open, lost=lost, duplicates=c["duplicates"],
            failed_attempts=c["failed_attempts"], redeliveries=stats.get("redelivered", 0),
            duplicate_finals=stats.get("duplicates", 0), drained=drained and not still_open)

    def _end_streams(self) -> None:
        streams, self._streams = self._streams, []
        for stream in streams:
            stream._end()

    @property
    def report(self) -> RedisShutdownReport:
        if self._report is None:
            raise ReportNotReadyError("the report exists once shutdown has finished (leave "
                                      "`async with`, or `await pipe.shutdown()`)")
        return self._report

    async def merged_trace(self) -> MergedTrace:
        """The events of every process on this queue, merged (see `merged_trace`)."""
        return await merged_trace(self._url, self._queue_name)

    def __repr__(self) -> str:
        state = "stopped" if self._report else "closing" if self._closed else "running"
        return f"<RedisPipeline {state} queue={self._queue_name!r} open={len(self._open)}>"


def _no_cancel(job_id: int) -> bool:
    return False  # a job in Redis cannot be cancelled from its handle (yet)


# -- the merged trace -----------------------------------------------------------------------


@dataclass(frozen=True)
class MergedTrace:
    """Every process's events on one queue as one jobq Trace.

    `trace.events` are in wall-clock order, `t` in seconds since the first event; each
    worker slot of each process is one `worker` number (`workers[n]` = (process, slot)), so
    jobq's plots and `metrics_from_trace(trace, slots)` read it as one pool of `slots`.
    A job whose worker died shows its unfinished attempt ended (ATTEMPT_FAILED, "its worker
    stopped answering") where another worker started it again; the work of a duplicate
    delivery (at least once: a job run twice) ends as ATTEMPT_FAILED, not as a second final.
    (Job ids are the producers' ids: give jobs of several producers distinct ids.)"""

    trace: Trace
    workers: dict[int, tuple[str, int]]
    processes: tuple[str, ...]

    @property
    def slots(self) -> int:
        return len(self.workers)


async def merged_trace(url: str, queue: str) -> MergedTrace:
    """Read the queue's events stream and merge it (see MergedTrace)."""
    broker = await Broker.connect(url, queue)
    batches: list[tuple[str, dict[str, Any]]] = []
    try:
        start = "-"
        while True:
            read = functools.partial(broker.redis.xrange, broker.keys.events, start, "+",
                                     count=1000)
            entries = await broker.call("reading events", read)
            for _entry, fields in entries:
                batches.append((fields[b"p"].decode(), json.loads(fields[b"e"])))
            if len(entries) < 1000:
                break
            start = "(" + entries[-1][0].decode()
    finally:
        await broker.aclose()
    return _merge(batches)


def _merge(batches: list[tuple[str, dict[str, Any]]]) -> MergedTrace:
    slots: dict[str, int] = {}
    raw: list[tuple[float, int, int, list[Any]]] = []  # (t, process order, seq, event)
    for process, batch in batches:
        order = list(slots).index(process) if process in slots else len(slots)
        slots[process] = max(slots.get(process, 0), int(batch.get("slots", 0)))
        for event in batch.get("ev", []):
            raw.append((float(event[1]), order, int(event[0]), [process, *event]))
    workers: dict[int, tuple[str, int]] = {}
    offset: dict[str, int] = {}
    for process, count in slots.items():
        offset[process] = len(workers)
        for slot in range(count):
            workers[len(workers)] = (process, slot)
    t0 = min((item[0] for item in raw), default=0.0)
    events: list[Event] = []
    running: dict[int, int | None] = {}  # job -> worker of its attempt in progress
    ended: set[int] = set()

    def add(t: float, kind: EventKind, job: int | None, worker: int | None,
            attempt: int | None, info: str | None, value: float | None) -> None:
        events.append(Event(len(events), t, kind, job, worker, attempt, info, value))

    expanded: list[tuple[float, int, int, list[Any]]] = []
    for item in raw:  # a "ran" event is an attempt that started and succeeded: two events
        process, seq, start, kind_name, job, slot, attempt, kind_info, end = item[3]
        if kind_name != RAN:
            expanded.append(item)
            continue
        expanded.append((start, item[1], seq, [process, seq, start, EventKind.STARTED.value,
                                               job, slot, attempt, kind_info, None]))
        expanded.append((end, item[1], seq, [process, seq, end, EventKind.SUCCEEDED.value,
                                             job, slot, attempt, None, None]))
    raw = sorted(expanded, key=lambda item: (item[0], item[1], item[2]))
    for wall, _order, _seq, (process, _s, _t, kind_name, job, slot, attempt, info, value) in raw:
        kind = EventKind(kind_name)
        if kind is EventKind.PHASE:
            continue  # a worker's start and stop, not the pipeline's shutdown phases
        t = wall - t0
        worker = offset[process] + slot if isinstance(slot, int) and slot >= 0 else None
        if kind is EventKind.STARTED and job in running and running[job] != worker:
            add(t, EventKind.ATTEMPT_FAILED, job, running[job], None,
                "its worker stopped answering; redelivered", None)
        if kind is EventKind.STARTED:
            running[job] = worker
        elif kind in (EventKind.ATTEMPT_FAILED, EventKind.SUCCEEDED, EventKind.DEAD_LETTERED):
            running.pop(job, None)
        if kind in (EventKind.SUCCEEDED, EventKind.DEAD_LETTERED):
            if job in ended:  # the work of a duplicate delivery: its final did not count
                kind, info = EventKind.ATTEMPT_FAILED, "duplicate delivery: ended already"
            ended.add(job)
        add(t, kind, job, worker, attempt, info, value)
    header = TraceHeader(clock="real", t0=0.0, workers=len(workers), executor="redis",
                         started_at=None if not raw else _iso(t0))
    return MergedTrace(Trace.from_events(events, header), workers, tuple(slots))


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="milliseconds")


async def read_dead_letters(url: str, queue: str) -> list[dict[str, Any]]:
    """Every dead letter of the queue, oldest first, as its JSON record: "id", "k" (kind),
    "err" (last error), "att" (each attempt: number, start, end, error, type), "job" (the
    entry as read - for a bad entry, what it held), "w" (worker), "e" (entry id)."""
    broker = await Broker.connect(url, queue)
    try:
        read = functools.partial(broker.redis.xrange, broker.keys.dead, "-", "+")
        entries = await broker.call("reading dead letters", read)
    finally:
        await broker.aclose()
    return [json.loads(fields[b"r"]) for _entry, fields in entries]
