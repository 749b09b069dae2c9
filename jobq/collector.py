"""The collector: receives every final result, keeps the books, reports progress.

The problem: results arrive from N workers in any order, and someone has to turn them into
"how far along are we" and "is anything missing". The collector is the single reader of the
results channel (the counterpart of tokio's results mpsc), so the books are only ever
written by one task, in one order.

For each result it: closes the job's entry in the `Ledger` (a second result for the same job
raises AccountingError - never a silent double count), keeps the result if asked (a big run
keeps none: memory must not grow with the job count), advances the progress bar, and wakes
anyone waiting in `wait_drained()` once no accepted job is still open.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from jobq.accounting import Ledger
from jobq.jobs import JobResult
from jobq.progress import Progress

__all__ = ["Collector"]


class Collector:
    def __init__(
        self,
        ledger: Ledger,
        progress: Progress,
        *,
        keep_results: bool | int = True,
        on_result: Callable[[JobResult], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.progress = progress
        self.keep_results = keep_results
        # True: every result; False: none; N: the last N (a service's memory stays bounded,
        # while handles and result streams still get every result through `on_result`).
        maxlen = None if keep_results is True else int(keep_results)
        self.results: deque[JobResult] = deque(maxlen=maxlen)
        self._on_result = on_result
        # Unbounded on purpose: each accepted job puts exactly one result here, so it never
        # holds more than the jobs in flight. A bound here could deadlock a worker.
        self._inbox: asyncio.Queue[JobResult | None] = asyncio.Queue()
        self._drained: list[asyncio.Future[None]] = []

    def deliver(self, result: JobResult) -> None:
        """Workers and shutdown call this with each job's one final result."""
        self._inbox.put_nowait(result)

    def stop(self) -> None:
        """Ask `run()` to return once it has taken everything delivered before this call."""
        self._inbox.put_nowait(None)

    async def run(self) -> None:
        while True:
            result = await self._inbox.get()
            # Take everything already waiting in one go: one wake-up for a burst of results.
            batch = [result]
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            results = [item for item in batch if item is not None]
            for item in results:
                self._record(item)
            if results:
                self.progress.update(len(results))
            if not self.ledger.open:
                self._wake_drained()
            if len(results) < len(batch):  # stop() was called: nothing more will come
                return

    def _record(self, result: JobResult) -> None:
        self.ledger.close(result.job_id, result.status, result.cancel_reason)
        if self.keep_results is not False:
            self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)  # handles and result streams (they never raise)

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
