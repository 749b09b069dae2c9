"""A worker process of jobq's distributed mode: jobs from a Redis stream, at most N at once.

    python -m jobq worker --redis redis://HOST:6379/0 --queue emails --workers 8 \\
        --import app.jobs

The same stages as the one-process pipeline, with Redis in the middle:

    XREADGROUP (at most the free slots) --> N slots run jobs --> final script (batch)
       ^  XAUTOCLAIM of entries idle > visibility timeout      |  XACK + XDEL + result
       |  (their worker died, or gave them back)                  + counters + events
       heartbeat: XCLAIM ... JUSTID of every entry we hold, every visibility_timeout / 3

Who holds what:
* `_held` maps each entry this worker has read (or reclaimed) and not yet made final to its
  slot and task. An entry stays in the group's pending list - owned by our consumer name -
  until the final script acknowledges it, so a worker that dies (kill -9, the machine
  goes) loses nothing: once the heartbeat stops, the entry goes idle, and after the
  visibility timeout another worker's XAUTOCLAIM takes it. A job that runs longer than the
  visibility timeout is not stolen from a live worker: the heartbeat refreshes it.
* A slot is free again the moment its job's work ends; the entry stays held (and
  heartbeated) until its final is written - the reader never reads more than the free slots.
* Finished jobs wait in `_finals` for the flusher, which writes everything that finished
  meanwhile in one script call: one round trip per batch, not per job.

Delivery is at least once: a job whose worker stalled past the visibility timeout (a frozen
VM, a stopped process) is run again elsewhere. Its final is recorded once - the final script
deletes the entry, and a second final finds it gone and counts a duplicate delivery - but
its *work* ran twice: your functions should be idempotent.

Retries: each delivery runs up to `retry.max_attempts` attempts, with backoff, like the
local pipeline; past them the job is dead-lettered with every attempt's error. A job that
keeps killing its worker never gets that far: past `max_deliveries` deliveries it is
dead-lettered without running again.

Stopping (SIGTERM/SIGINT via the CLI, or `stop()`): stop reading; let running jobs finish
for `drain_timeout` seconds; cut what is left and *give it back* (XCLAIM with a large IDLE:
any other worker's next XAUTOCLAIM takes it at once, no visibility timeout to wait out);
write the finals; leave. `cut()` gives back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from jobq import validation as check
from jobq.broker import GROUP, RAN, Broker, check_target, run_script
from jobq.errors import InvalidConfigError, InvalidJobError, JobTimeoutError
from jobq.http import HttpClient, HttpLimits
from jobq.jobs import (
    AsyncIo,
    Blocking,
    Call,
    CpuBound,
    Delayed,
    Job,
    JobResult,
    ResultStatus,
)
from jobq.offload import CpuOffload, ExecutorKind
from jobq.pipeline import format_rows
from jobq.retry import Attempt, RetryPolicy
from jobq.trace import EventKind
from jobq.wire import (
    MAX_ENTRY_BYTES,
    WireError,
    WireJob,
    decode_job,
    encode_result,
    encode_success,
)

__all__ = ["RedisWorker", "WorkerReport"]

_log = logging.getLogger("jobq.redis_worker")

# A producer's name becomes part of a key (its results stream): only these characters.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
# Events alone are written at least this often (finals take them along sooner).
_EVENTS_EVERY = 0.05
# How long a given-back entry looks idle: longer than any visibility timeout.
_GIVEN_BACK_IDLE_MS = 10**12


@dataclass(frozen=True)
class WorkerReport:
    """What one worker process did, printed when it exits."""

    process: str
    slots: int
    read: int  # new entries read
    reclaimed: int  # entries taken over from a worker that died or gave them back
    succeeded: int
    dead_lettered: int
    failed_attempts: int
    given_back: int  # held at the drain deadline: handed back for another worker
    duplicates: int  # finals for jobs that had ended already (a redelivered job, twice)
    drained: bool  # every job it held ended before the deadline

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("entries read", self.read),
            ("reclaimed (redelivered)", self.reclaimed),
            ("succeeded", self.succeeded),
            ("dead-lettered", self.dead_lettered),
            ("failed attempts", self.failed_attempts),
            ("given back", self.given_back),
            ("duplicate finals", self.duplicates),
        ]

    def __str__(self) -> str:
        return format_rows(self.rows())


@dataclass(eq=False)
class _Held:
    """One entry this worker holds: read or reclaimed, not yet final."""

    entry: bytes  # the stream entry id, as Redis sent it
    slot: int
    deliveries: int
    raw: bytes = b""  # the entry's JSON, kept for a dead letter (inspect, resubmit)
    job: Job | None = None
    task: asyncio.Task[None] | None = None
    finished: bool = False  # its final is waiting for the flusher (or written)


@dataclass
class _Final:
    entry: bytes
    status: str  # "s" succeeded, "d" dead-lettered
    results_key: str
    record: bytes


@dataclass
class _Counts:
    read: int = 0
    reclaimed: int = 0
    succeeded: int = 0
    dead: int = 0
    failed_attempts: int = 0
    given_back: int = 0
    duplicates: int = 0
    events: list[tuple[Any, ...]] = field(default_factory=list)


class RedisWorker:
    """One worker process's jobs: `await RedisWorker(url, "emails", ...).run()` until
    `stop()`. Returns a WorkerReport.

    Arguments (keyword-only after `queue`):
        workers             slots: at most this many jobs at once
        imports             modules whose functions Call/Blocking jobs may name (only
                            those: see jobq.wire); imported at start-up
        visibility_timeout  seconds an entry may go without a heartbeat before another
                            worker takes it over
        drain_timeout       on stop(): seconds to let running jobs finish, then give back
        retry               RetryPolicy for each delivery's attempts
        max_deliveries      past this many deliveries a job is dead-lettered unrun
        executor            where CpuBound and Blocking work runs (see jobq.offload)
        events              write events for the merged trace (off: a little faster)
    """

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        workers: int = 4,
        imports: Sequence[str] = (),
        visibility_timeout: float = 30.0,
        drain_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_deliveries: int = 5,
        executor: ExecutorKind | Executor = "process",
        http: HttpLimits | None = None,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        connect_timeout: float = 5.0,
        reconnect_timeout: float = 30.0,
        events: bool = True,
        name: str | None = None,
    ) -> None:
        check.count("RedisWorker.workers", workers)
        check.seconds("RedisWorker.visibility_timeout", visibility_timeout, positive=True)
        check.seconds("RedisWorker.drain_timeout", drain_timeout)
        check.count("RedisWorker.max_deliveries", max_deliveries)
        check.count("RedisWorker.max_entry_bytes", max_entry_bytes)
        check.flag("RedisWorker.events", events)
        check.instance("RedisWorker.retry", retry, RetryPolicy, allow_none=True)
        check.instance("RedisWorker.http", http, HttpLimits, allow_none=True)
        check.instance("RedisWorker.name", name, str, allow_none=True)
        # A string is a sequence too - of one-letter module names: say so instead.
        if isinstance(imports, str) or not all(isinstance(m, str) for m in imports):
            raise InvalidConfigError(
                f"RedisWorker.imports must be a list of module names, got {imports!r}")
        check_target("RedisWorker", url, queue, connect_timeout, reconnect_timeout)
        self._url = url
        self._queue = queue
        self.workers = workers
        self.imports = tuple(imports)
        self.visibility_timeout = visibility_timeout
        self.drain_timeout = drain_timeout
        self.retry = retry or RetryPolicy()
        self.max_deliveries = max_deliveries
        self._max_bytes = max_entry_bytes
        self._connect_timeout = connect_timeout
        self._reconnect_timeout = reconnect_timeout
        self._events_on = events
        # The consumer name: unique per process start (a restarted worker is a new
        # consumer; what the old one held is reclaimed like any dead worker's).
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._labels = [f"{self.name}/{slot}" for slot in range(workers)]  # in results
        self._result_keys: dict[str, str] = {}  # producer -> its results stream
        self._offload = CpuOffload(executor, max_workers=workers)
        self._http_limits = http or HttpLimits()
        self._http: HttpClient | None = None
        self._broker: Broker | None = None
        self._held: dict[bytes, _Held] = {}
        self._free = list(range(workers - 1, -1, -1))  # free slots; pop() takes the lowest
        self._slot_freed = asyncio.Event()
        self._finals: list[_Final] = []
        self._flush_wanted = asyncio.Event()  # a final is waiting to be written
        self._pending = asyncio.Event()  # anything (a final or an event) is waiting
        self._flush_lock = asyncio.Lock()  # one flush at a time: the last one waits
        self._stopping = asyncio.Event()
        self._cutting = False
        self._seq = 0
        self._c = _Counts()
        self._reclaim_cursor = "0-0"
        self._next_reclaim = 0.0
        self._report: WorkerReport | None = None

    # -- control ----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop gracefully: read nothing more, drain for `drain_timeout`, give back the
        rest. Safe to call from a signal handler's loop callback, and more than once."""
        self._stopping.set()
        self._slot_freed.set()

    def cut(self) -> None:
        """Stop now: running jobs are cut and given back (a second Ctrl-C)."""
        self._cutting = True
        self.stop()

    @property
    def running(self) -> int:
        return self.workers - len(self._free)

    def statistics(self) -> dict[str, int]:
        c = self._c
        return {"running": self.running, "read": c.read, "reclaimed": c.reclaimed,
                "succeeded": c.succeeded, "dead_lettered": c.dead}

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> WorkerReport:
        """Connect, import, work until stop(), drain, give back; return the report.
        Raises BrokerUnavailableError / BrokerAuthError if the server cannot be reached."""
        for module in self.imports:  # a module that fails to import fails the start
            __import__(module)
        broker = self._broker = await Broker.connect(
            self._url, self._queue, connect_timeout=self._connect_timeout,
            reconnect_timeout=self._reconnect_timeout)
        self._emit(EventKind.PHASE, info="worker-started", value=self.workers)
        helpers = [asyncio.create_task(self._heartbeat(), name="jobq-heartbeat"),
                   asyncio.create_task(self._flusher(), name="jobq-flusher")]
        stop = asyncio.create_task(self._stopping.wait())
        drained = True
        try:
            reader = asyncio.create_task(self._reader(), name="jobq-reader")
            await asyncio.wait({reader, stop, *helpers}, return_when=asyncio.FIRST_COMPLETED)
            self.stop()
            for helper in helpers:  # a helper that ended early failed: raise its error
                if helper.done():
                    helper.result()
            await reader  # ends after its current read (at most ~1 s): never cut mid-read
            drained = await self._drain()
            self._emit(EventKind.PHASE, info="worker-stopped")
            await self._flush_all()
            await self._leave()
        finally:
            for task in (*helpers, stop):
                task.cancel()
            await asyncio.gather(*helpers, stop, return_exceptions=True)
            for held in list(self._held.values()):
                if held.task is not None:
                    held.task.cancel()
            if self._http is not None:
                await self._http.aclose()
            await asyncio.get_running_loop().run_in_executor(None, self._offload.close)
            await broker.aclose()
        c = self._c
        self._report = WorkerReport(
            process=self.name, slots=self.workers, read=c.read, reclaimed=c.reclaimed,
            succeeded=c.succeeded, dead_lettered=c.dead, failed_attempts=c.failed_attempts,
            given_back=c.given_back, duplicates=c.duplicates, drained=drained)
        return self._report

    async def _reader(self) -> None:
        """Read at most as many entries as there are free slots; reclaim idle ones now and
        then. Never cancelled: a cancelled XREADGROUP may already have moved entries to our
        pending list, and we would not know them (they would wait out the visibility
        timeout). So it runs to the end of its read and then looks at `_stopping`."""
        broker = self._broker
        assert broker is not None
        keys = broker.keys
        block_ms = int(min(1.0, self.visibility_timeout / 4) * 1000) or 1
        reclaim_every = min(5.0, max(0.05, self.visibility_timeout / 4))
        while not self._stopping.is_set():
            free = len(self._free)
            if free == 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                # One pass of the loop: slots freed in this same pass (short jobs end
                # together) are read for in one call, not one call each.
                await asyncio.sleep(0)
                continue
            now = time.monotonic()
            if now >= self._next_reclaim:
                self._next_reclaim = now + reclaim_every
                claimed = await self._reclaim(free)
                if claimed:
                    continue
            read = functools.partial(broker.redis.xreadgroup, GROUP, self.name,
                                     {keys.jobs: ">"}, count=free, block=block_ms)
            reply = await broker.call("reading jobs", read)
            if not reply:
                # Nothing new: look for entries to take over right away - jobs another
                # worker gave back when it stopped wait for nobody's visibility timeout.
                self._next_reclaim = 0.0
            for _stream, entries in reply or ():
                self._c.read += len(entries)
                for entry, flat in entries:
                    self._take(entry, flat, deliveries=1)

    async def _reclaim(self, count: int) -> int:
        broker = self._broker
        assert broker is not None
        keys = broker.keys
        ms = int(self.visibility_timeout * 1000)
        reply = await broker.call("reclaiming idle jobs", lambda: run_script(
            broker.reclaim_script, [keys.jobs, keys.stats],
            [GROUP, self.name, ms, self._reclaim_cursor, count]))
        cursor, *entries = reply
        self._reclaim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        for entry, flat, deliveries in entries:
            if entry in self._held:
                continue  # ours already (given back, then reclaimed by ourselves): running
            self._c.reclaimed += 1
            self._take(entry, flat, deliveries=int(deliveries))
        return len(entries)

    def _take(self, entry: bytes, flat: list[bytes], deliveries: int) -> None:
        """An entry is ours now: give it a slot and start it (or dead-letter it). `flat` is
        the entry's fields as Redis sends them, [name, value, ...] (see Broker: no dict is
        built per entry); jobq writes one field, j = the job's JSON."""
        if self._stopping.is_set():
            # Read in the step stop() came: hand it straight back, untouched.
            self._held[entry] = _Held(entry, -1, deliveries)
            return
        slot = self._free.pop()
        held = self._held[entry] = _Held(entry, slot, deliveries)
        data = flat[1] if len(flat) == 2 and flat[0] == b"j" else None
        try:
            if data is None:  # not what jobq writes: say what it is
                fields = dict(zip(flat[::2], flat[1::2], strict=False))
                size = sum(len(k) + len(v) for k, v in fields.items())
                if size > self._max_bytes:
                    raise WireError(f"the entry is {size:,} bytes, over the limit of "
                                    f"{self._max_bytes:,}")
                if b"j" not in fields:
                    names = ", ".join(repr(k[:50].decode(errors="replace"))
                                      for k in list(fields)[:5])
                    raise WireError(f"the entry has no 'j' field (not written by jobq); its "
                                    f"fields: {names}")
                data = fields[b"j"]
            wire = decode_job(data, modules=self.imports, limit=self._max_bytes)
        except WireError as exc:
            self._dead_on_arrival(held, data or b"", f"WireError: {exc}")
            return
        held.job, held.raw = wire.job, data
        if deliveries > self.max_deliveries:
            self._dead_on_arrival(
                held, data, f"delivered {deliveries} times, more than max_deliveries="
                f"{self.max_deliveries}: the workers that took it died or stalled each time",
                wire=wire)
            return
        held.task = asyncio.create_task(self._run(held, wire))

    def _dead_on_arrival(self, held: _Held, raw: bytes, error: str,
                         wire: WireJob | None = None) -> None:
        """A bad entry (or one delivered too often): dead-lettered without running."""
        job_id, producer, submitted_at, kind = _salvage(raw) if wire is None else (
            wire.job.id, wire.producer, wire.submitted_at, wire.job.kind)
        shown = raw[:500].decode(errors="replace")
        now = time.time()
        attempt = Attempt(0, now, now, error, error.partition(":")[0])
        result = JobResult(job_id, 0.0, ResultStatus.DEAD_LETTERED, kind=kind, attempts=0,
                           submitted_at=submitted_at, finished_at=now, error=error)
        _log.warning("entry %s dead-lettered unrun: %s", held.entry.decode(), error)
        self._emit(EventKind.DEAD_LETTERED, job_id, slot=held.slot, info=error)
        record = encode_result(result, [attempt], worker=self._label(held.slot),
                               limit=10 * self._max_bytes, job_text=shown,
                               entry=held.entry.decode())
        self._finish(held, _Final(held.entry, "d", self._results_key(producer), record))

    async def _run(self, held: _Held, wire: WireJob) -> None:
        """One job, attempt by attempt (as jobq.worker.Worker does in one process). A cut
        (CancelledError at the drain deadline) leaves the entry held, for _drain to give
        back; every other exception of the job's code is a failed attempt."""
        job = wire.job
        slot = held.slot
        loop_start = time.time()
        attempts: list[Attempt] = []
        first_start: float | None = None
        number = 0
        try:
            for number in range(1, self.retry.max_attempts + 1):
                start = time.time()
                first_start = first_start or start
                # Where the STARTED event sits in the unflushed events, so that a job that
                # ends before the next flush (most do) is written as one "ran" event.
                events = self._c.events
                started_at_index = len(events)
                self._emit(EventKind.STARTED, job.id, slot=slot, attempt=number,
                           info=job.kind, t=start)
                try:
                    if job.timeout is None:
                        value = await self._attempt(job, isolated=bool(attempts))
                    else:
                        value = await self._timed_attempt(job, number, job.timeout)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # the job's failure, whatever it is
                    end = time.time()
                    error = f"{type(exc).__name__}: {exc}"
                    attempts.append(Attempt(number, start, end, error, type(exc).__name__))
                    self._c.failed_attempts += 1
                    self._emit(EventKind.ATTEMPT_FAILED, job.id, slot=slot,
                               attempt=number, info=error)
                    if number < self.retry.max_attempts:
                        pause = self.retry.delay(number, job.id)
                        self._emit(EventKind.RETRY_SCHEDULED, job.id, slot=slot,
                                   attempt=number + 1, value=pause)
                        await asyncio.sleep(pause)
                    continue
                end = time.time()
                try:
                    if attempts:  # it failed before: the record carries those attempts
                        record = encode_result(JobResult(
                            job.id, end - first_start, ResultStatus.SUCCEEDED, kind=job.kind,
                            attempts=number, submitted_at=wire.submitted_at,
                            started_at=first_start, finished_at=end, value=value,
                        ), attempts, worker=self._labels[slot], limit=self._max_bytes)
                    else:  # the usual case, without building a JobResult first
                        record = encode_success(
                            job, worker=self._labels[slot], attempts=1,
                            submitted_at=wire.submitted_at, started_at=start,
                            finished_at=end, value=value, limit=self._max_bytes)
                except InvalidJobError as exc:  # not JSON, or too large: no retry helps
                    attempts.append(Attempt(number, start, end, f"{type(exc).__name__}: {exc}",
                                            type(exc).__name__))
                    break
                if self._events_on and self._c.events is events:  # not flushed yet
                    seq = events[started_at_index][0]
                    events[started_at_index] = (seq, start, RAN, job.id, slot, number,
                                                job.kind, end)
                else:
                    self._emit(EventKind.SUCCEEDED, job.id, slot=slot, attempt=number, t=end)
                self._c.succeeded += 1  # (corrected if the final turns out a duplicate)
                self._finish(held, _Final(held.entry, "s", self._results_key(wire.producer),
                                          record))
                return
        except asyncio.CancelledError:
            # Cut at the drain deadline: no final - the entry is given back (see _drain).
            self._emit(EventKind.ATTEMPT_FAILED, job.id, slot=slot, attempt=number,
                       info="given back: the worker stopped")
            raise
        # Every attempt failed: a dead letter, with each attempt's error.
        last = attempts[-1]
        result = JobResult(job.id, last.ended_at - (first_start or loop_start),
                           ResultStatus.DEAD_LETTERED, kind=job.kind, attempts=len(attempts),
                           submitted_at=wire.submitted_at, started_at=first_start,
                           finished_at=last.ended_at, error=last.error)
        _log.warning("job %s (%s) dead-lettered after %d attempt(s); last error: %s",
                     job.id, job.kind, len(attempts), last.error)
        self._emit(EventKind.DEAD_LETTERED, job.id, slot=slot, attempt=last.number,
                   info=last.error)
        record = encode_result(result, attempts, worker=self._labels[slot],
                               limit=10 * self._max_bytes, entry=held.entry.decode(),
                               job_text=held.raw.decode(errors="replace"))
        self._finish(held, _Final(held.entry, "d", self._results_key(wire.producer), record))

    async def _timed_attempt(self, job: Job, number: int, limit: float) -> Any:
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await self._attempt(job, isolated=True)
        except TimeoutError:
            if deadline.expired():
                raise JobTimeoutError(f"attempt {number} of job {job.id} ran longer than its "
                                      f"timeout of {limit:g} s") from None
            raise

    async def _attempt(self, job: Job, isolated: bool) -> Any:
        """One try at `job` - the same work as jobq.worker.Worker._attempt."""
        kind = job.job_type
        if isinstance(kind, Call):
            return await kind.fn(*kind.args, **kind.kwargs)
        if isinstance(kind, Blocking):
            function = functools.partial(kind.fn, **kind.kwargs) if kind.kwargs else kind.fn
            return await self._offload.run(function, *kind.args, isolated=isolated,
                                           job_id=job.id)
        if isinstance(kind, Delayed):
            await asyncio.sleep(kind.delay)
            return len(job.payload)
        if isinstance(kind, CpuBound):
            return await self._offload.run_cpu(kind.iterations, job.payload,
                                               isolated=isolated, job_id=job.id)
        assert isinstance(kind, AsyncIo)
        if self._http is None:
            self._http = HttpClient(self._http_limits)
        return await self._http.fetch(kind.url)

    def _finish(self, held: _Held, final: _Final) -> None:
        """The job's work has ended: free its slot now, write its final soon (batched)."""
        held.finished = True
        if final.status == "d":
            self._c.dead += 1
        self._finals.append(final)
        self._flush_wanted.set()
        self._pending.set()
        if held.slot >= 0:
            self._free.append(held.slot)
            held.slot = -1
            self._slot_freed.set()

    # -- writing finals and events ------------------------------------------------------
    async def _flusher(self) -> None:
        """Finals are written as soon as there are any; events alone (a job started) wait
        up to _EVENTS_EVERY seconds for company - they are observability, not accounting."""
        while True:
            if not self._c.events and not self._finals:
                # Nothing to write: sleep until something comes. (Waiting for a final only
                # would leave a long job's STARTED unwritten until some job ends - and lost
                # with the process if it is killed: the merged trace would not show who
                # held the job.)
                self._pending.clear()
                await self._pending.wait()
                continue
            if self._c.events and not self._finals:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_EVENTS_EVERY):
                        await self._flush_wanted.wait()
            else:
                await self._flush_wanted.wait()
            # Two passes of the loop first: jobs that end in this same pass (many short ones
            # do) join this batch instead of waiting for the next round trip; and the
            # reader, woken by the same jobs' slots, sends its XREADGROUP first - Redis
            # serves it before this (longer) script, and the next jobs run while Redis
            # writes these finals.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            await self._flush()

    async def _flush(self) -> None:
        """Write every final and event gathered so far in one script call."""
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        self._flush_wanted.clear()
        finals, self._finals = self._finals, []
        events, self._c.events = self._c.events, []
        if not finals and not events:
            return
        broker = self._broker
        assert broker is not None
        keys = broker.keys
        # Each results stream is sent once, and each final names it by its place in the
        # list (see broker.FINAL): fewer bytes to pack and send than a key per job.
        streams: dict[str, int] = {}
        codes: list[Any] = []
        for final in finals:
            key = final.results_key
            place = (streams.setdefault(key, len(streams) + 1)) if key else 0
            codes += [final.entry, f"{final.status}{place}", final.record]
        args: list[Any] = [GROUP, _events_json(self.workers, events) if events else "",
                           self.name, len(streams), *streams, *codes]
        try:
            duplicates = await broker.call("writing finals", lambda: run_script(
                broker.final_script, [keys.jobs, keys.stats, keys.dead, keys.events], args))
        except BaseException:
            # Not written (the server is gone for good, or we are being cancelled): put
            # them back, so that a last flush can try again - and, if none can, the entries
            # stay pending in Redis and are redelivered: nothing is lost either way.
            self._finals[:0] = finals
            self._c.events[:0] = events
            raise
        for entry in duplicates:
            status = next(f.status for f in finals if f.entry == entry)
            self._c.duplicates += 1
            if status == "s":
                self._c.succeeded -= 1
            else:
                self._c.dead -= 1
        for final in finals:
            self._held.pop(final.entry, None)

    async def _flush_all(self) -> None:
        while self._finals or self._c.events:
            await self._flush()

    def _emit(self, kind: EventKind, job: int | None = None, *, slot: int | None = None,
              attempt: int | None = None, info: str | None = None,
              value: float | None = None, t: float | None = None) -> None:
        """Record an event for the merged trace; written with the next flush."""
        if self._events_on:
            self._c.events.append((self._seq, time.time() if t is None else t, kind.value,
                                   job, slot, attempt, info, value))
            self._seq += 1
            self._pending.set()

    # -- the heartbeat --------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Refresh the claim on every entry we hold, so none looks idle while we live.
        XCLAIM ... JUSTID resets an entry's idle time and leaves its delivery count alone."""
        broker = self._broker
        assert broker is not None
        keys = broker.keys
        while True:
            await asyncio.sleep(self.visibility_timeout / 3)
            entries = list(self._held)
            for start in range(0, len(entries), 1000):
                chunk: list[Any] = entries[start:start + 1000]
                claim = functools.partial(broker.redis.xclaim, keys.jobs, GROUP, self.name, 0,
                                          chunk, justid=True)
                await broker.call("heartbeat", claim)

    # -- stopping -------------------------------------------------------------------------
    async def _drain(self) -> bool:
        """Let running jobs finish for drain_timeout (0 after cut()); give back the rest."""
        tasks = {h.task for h in self._held.values()
                 if h.task is not None and not h.task.done()}
        if tasks and not self._cutting:
            # Waiting in a loop, so that a cut() arriving during the drain ends it.
            deadline = time.monotonic() + self.drain_timeout
            while tasks and not self._cutting and time.monotonic() < deadline:
                _done, tasks = await asyncio.wait(
                    tasks, timeout=min(0.1, max(0.0, deadline - time.monotonic())))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        unfinished = [h.entry for h in self._held.values() if not h.finished]
        if unfinished:
            await self._give_back(unfinished)
        return not tasks

    async def _give_back(self, entries: list[bytes]) -> None:
        """Make entries look idle for ages: the next XAUTOCLAIM of any worker takes them."""
        broker = self._broker
        assert broker is not None
        keys = broker.keys
        ids: list[Any] = list(entries)
        claim = functools.partial(broker.redis.xclaim, keys.jobs, GROUP, self.name, 0, ids,
                                  idle=_GIVEN_BACK_IDLE_MS, justid=True)
        await broker.call("giving jobs back", claim)
        self._c.given_back += len(entries)
        for entry in entries:
            self._held.pop(entry, None)
        _log.info("gave back %d job(s) for other workers", len(entries))

    async def _leave(self) -> None:
        broker = self._broker
        assert broker is not None
        with contextlib.suppress(Exception):  # tidiness only: a consumer left is harmless
            await run_script(broker.leave_script, [broker.keys.jobs], [GROUP, self.name])

    # -- small helpers --------------------------------------------------------------------
    def _label(self, slot: int) -> str:
        return f"{self.name}/{slot}"

    def _results_key(self, producer: str) -> str:
        key = self._result_keys.get(producer)
        if key is None:  # checked once per producer, not once per job
            assert self._broker is not None
            key = (self._broker.keys.results(producer)
                   if producer and _SAFE_NAME.match(producer) else "")
            if len(self._result_keys) > 10_000:  # producers come and go: stay bounded
                self._result_keys.clear()
            self._result_keys[producer] = key
        return key

    def __repr__(self) -> str:
        state = "stopping" if self._stopping.is_set() else "running"
        return f"<RedisWorker {state} slots={self.workers} running={self.running}>"


def _events_json(slots: int, events: list[tuple[Any, ...]]) -> str:
    return json.dumps({"slots": slots, "ev": events}, separators=(",", ":"))


def _salvage(raw: bytes) -> tuple[int, str, float, str]:
    """(job id, producer, submitted at, kind) of a bad entry, as far as they can be read:
    the producer should still learn that its job was dead-lettered."""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return -1, "", 0.0, "?"
    if not isinstance(record, dict):
        return -1, "", 0.0, "?"
    job_id = record.get("id")
    producer = record.get("r")
    at = record.get("at")
    kind = record.get("fn") or record.get("t")
    return (job_id if isinstance(job_id, int) and not isinstance(job_id, bool) else -1,
            producer if isinstance(producer, str) else "",
            float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else 0.0,
            str(kind).rpartition(":")[2] if isinstance(kind, str) else "?")

