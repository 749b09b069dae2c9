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
result on (handles, result streams), and wakes anyone waiting in `wait_drained()` once no
accepted job is still open.
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
        self._keep = keep_results is not False
        self._on_result = on_result
        self._drained: list[asyncio.Future[None]] = []

    def deliver(self, result: JobResult) -> None:
        """Workers and shutdown call this with each job's one final result. It records the
        result before it returns (see the module docstring: a synchronous call is atomic)."""
        ledger = self.ledger
        ledger.close(result.job_id, result.status, result.cancel_reason)
        if self._keep:
            self.results.append(result)
        self.progress.update(1)
        if self._on_result is not None:
            self._on_result(result)  # handles and result streams (they never raise)
        if not ledger.open and self._drained:
            self._wake_drained()

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
