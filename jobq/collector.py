"""The collector: receives every final result, keeps the books, reports progress.

The problem: results arrive from N workers in any order, and someone has to turn them into
"how far along are we" and "is anything missing". In the tokio original the collector is a
task reading a results channel, so that the books are only ever written by one task, in
one order.

In asyncio we get that for free: every stage runs on one thread, the loop's, and a call
that does not `await` runs to its end before any other task runs - it is atomic. So
`deliver()` records the result *at once*, in the worker's own step: no results queue, no
collector task, no wake-up per job (which cost more than the bookkeeping itself), and the
books are still written in one order, the order in which jobs ended.

For each result it: closes the job's entry in the `Ledger` (a second result for the same job
raises AccountingError - never a silent double count), keeps the result if asked (a big run
keeps none: memory must not grow with the job count), advances the progress bar, hands the
result to the job's handle and to result streams, and wakes anyone waiting in
`wait_drained()` once no accepted job is still open.

The usual ending - a job that succeeded at its first attempt - comes without a `JobResult`
(`succeeded()`): most jobs' results are never looked at one by one, so the object is built
only for a handle someone still holds or a result stream. When the trace keeps a row for
every job (see jobq.trace), the kept result of such a job is just its value: `results`
rebuilds the `JobResult` from the row when asked.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from jobq.accounting import Ledger
from jobq.jobs import JobResult, ResultStatus
from jobq.progress import Progress
from jobq.retry import DeadLetterQueue
from jobq.trace import JobRecord, JobRows

if TYPE_CHECKING:
    from jobq.handles import JobHandle, ResultStream

__all__ = ["Collector"]

_SUCCEEDED = ResultStatus.SUCCEEDED


class Collector:
    def __init__(
        self,
        ledger: Ledger,
        progress: Progress,
        *,
        keep_results: bool | int = True,
        handles: dict[int, weakref.ref[JobHandle[Any]]] | None = None,
        streams: list[ResultStream] | None = None,
        dead_letters: DeadLetterQueue | None = None,
        rows: JobRows | None = None,
    ) -> None:
        self.ledger = ledger
        self.progress = progress
        self.keep_results = keep_results
        # Handles, weakly (a handle nobody holds is collected), and the open result streams:
        # the pipeline's own dict and list, which it changes in place.
        self._handles = {} if handles is None else handles
        self._streams = [] if streams is None else streams
        self._letters = dead_letters
        # True: every result; False: none; N: the last N (a service's memory stays bounded,
        # while handles and result streams still get every result).
        maxlen = None if keep_results is True else int(keep_results)
        self._results: deque[JobResult] = deque(maxlen=maxlen)
        self._keep = keep_results is not False
        # Results as rows: `rows` is a trace's JobRows holding one row per job we deliver, in
        # the order we deliver them. Then we keep per job only its value (its row has the
        # rest), or the whole JobResult when its row is not a simple one.
        self._rows = rows if keep_results is True else None
        self._values: list[Any] = []
        self._whole: dict[int, JobResult] = {}  # index in _values -> the result itself
        self._built: list[JobResult] | None = None  # the last `results` rebuilt
        self._drained: list[asyncio.Future[None]] = []

    @property
    def results(self) -> list[JobResult]:
        if self._rows is None:
            return list(self._results)
        if self._built is not None and len(self._built) == len(self._values):
            return list(self._built)  # nothing ended since the last call
        rows, whole = self._rows, self._whole
        width = rows.INTS
        times, ints, kinds = rows.times, rows.ints, rows.kinds
        # Column by column (C slices), then one JobResult per simple row.
        columns = zip(self._values, ints[0::width], ints[5::width], ints[width - 1::width],
                      times[0::4], times[2::4], times[3::4], strict=False)
        out: list[JobResult] = []
        for i, (value, job, worker, kind, t_enq, t_start, t_end) in enumerate(columns):
            result = whole.get(i) if whole else None
            if result is None:  # a simple row: rebuild its JobResult
                result = _first_try(job, kinds[kind], worker, t_enq, t_start, t_end, value)
            out.append(result)
        self._built = out
        return list(out)

    def deliver(self, result: JobResult) -> None:
        """Workers and shutdown call this with each job's one final result. It records the
        result before it returns (see the module docstring: a synchronous call is atomic)."""
        ledger = self.ledger
        ledger.close(result.job_id, result.status, result.cancel_reason)
        if self._keep:
            self._keep_whole(result)
        self.progress.update(1)
        self._hand_on(result.job_id, result)
        if not ledger.open and self._drained:
            self._wake_drained()

    def succeeded(self, rec: JobRecord, worker: int, started_at: float, finished_at: float,
                  value: Any) -> None:
        """deliver() for a job that succeeded at its first attempt, whose trace record has
        just ended - without a JobResult, unless someone will read this one."""
        job_id = rec.job
        ledger = self.ledger
        ledger.close(job_id, _SUCCEEDED, None)
        result = None
        if self._keep:
            if self._rows is not None and rec.events is None:  # its row is a simple one
                self._values.append(value)
            else:
                result = self._result(rec, worker, started_at, finished_at, value)
                self._keep_whole(result)
        self.progress.update(1)
        ref = self._handles.get(job_id)
        if self._streams or (ref is not None and ref() is not None):
            if result is None:
                result = self._result(rec, worker, started_at, finished_at, value)
            self._hand_on(job_id, result)
        elif ref is not None:
            del self._handles[job_id]  # a handle nobody holds any more
        if not ledger.open and self._drained:
            self._wake_drained()

    def _keep_whole(self, result: JobResult) -> None:
        """Keep the JobResult object itself (as rows: in its place among the values)."""
        if self._rows is not None:
            self._whole[len(self._values)] = result
            self._values.append(None)
        else:
            self._results.append(result)

    @staticmethod
    def _result(rec: JobRecord, worker: int, started_at: float, finished_at: float,
                value: Any) -> JobResult:
        return _first_try(rec.job, rec.kind, worker, rec.t_enq, started_at, finished_at, value)

    def _hand_on(self, job_id: int, result: JobResult) -> None:
        """The result to its handle, if someone still holds it, and to every stream."""
        ref = self._handles.pop(job_id, None)
        handle = None if ref is None else ref()
        if handle is not None:
            letter = None
            letters = self._letters
            if (result.status is ResultStatus.DEAD_LETTERED and letters is not None
                    and job_id in letters):
                letter = letters.get(job_id)
            handle._resolve(result, letter)
        for stream in self._streams:
            stream._put(result)

    async def wait_drained(self) -> None:
        """Wait until every job accepted so far has its final result recorded."""
        if not self.ledger.open:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drained.append(waiter)
        await waiter

    def _wake_drained(self) -> None:
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _first_try(job: int, kind: str, worker: int, submitted_at: float, started_at: float,
               finished_at: float, value: Any) -> JobResult:
    """The JobResult of a job that succeeded at its first attempt. Built positionally (its
    fields in order: job_id, duration, status, kind, attempts, worker, submitted_at,
    started_at, finished_at, error, cancel_reason, value): `results` builds one per row."""
    return JobResult(job, finished_at - started_at, _SUCCEEDED, kind, 1, worker, submitted_at,
                     started_at, finished_at, None, None, value)
