"""Exact accounting: every accepted job ends exactly once.

The problem: under cancellation, retries and shutdown, the easiest bugs to write are a job
that silently disappears (taken from the queue, then the taker is cancelled) and a job
reported twice (cancelled by shutdown *and* finished by its worker). The `Ledger` makes both
impossible to miss: a job enters it when the queue accepts it and leaves it with its one
final status; a second final raises AccountingError at once, and whatever is still in the
ledger after shutdown is counted as `lost` in the report - a number that must be 0.

Memory: the ledger holds only the jobs that have not ended (at most capacity + workers +
those in flight), and `IdSet` remembers every id ever accepted as sorted intervals, so
1,000,000 consecutive ids cost two integers, not a million.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter

from jobq.errors import AccountingError
from jobq.jobs import CancelReason, ResultStatus

__all__ = ["IdSet", "Ledger"]


class IdSet:
    """A set of ints stored as sorted, disjoint, inclusive intervals [start, end]."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def add(self, value: int) -> None:
        if value in self:
            return
        self._count += 1
        i = bisect_right(self._starts, value) - 1  # interval starting at or before value
        joins_left = i >= 0 and self._ends[i] == value - 1
        joins_right = i + 1 < len(self._starts) and self._starts[i + 1] == value + 1
        if joins_left and joins_right:  # value fills the gap between two intervals
            self._ends[i] = self._ends[i + 1]
            del self._starts[i + 1], self._ends[i + 1]
        elif joins_left:
            self._ends[i] = value
        elif joins_right:
            self._starts[i + 1] = value
        else:
            self._starts.insert(i + 1, value)
            self._ends.insert(i + 1, value)

    def discard(self, value: int) -> None:
        if value not in self:
            return
        self._count -= 1
        i = bisect_right(self._starts, value) - 1
        start, end = self._starts[i], self._ends[i]
        if start == end:
            del self._starts[i], self._ends[i]
        elif value == start:
            self._starts[i] = value + 1
        elif value == end:
            self._ends[i] = value - 1
        else:  # split one interval into two
            self._ends[i] = value - 1
            self._starts.insert(i + 1, value + 1)
            self._ends.insert(i + 1, end)

    @property
    def intervals(self) -> int:
        return len(self._starts)


class Ledger:
    """Who is still owed a final status, and how many ended which way."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open: dict[int, float] = {}  # accepted, not yet final -> when it was accepted
        self.by_status: Counter[ResultStatus] = Counter()
        self.by_reason: Counter[CancelReason] = Counter()

    def accept(self, job_id: int, at: float) -> None:
        if job_id in self.open:
            raise AccountingError(f"job {job_id} accepted twice while still open")
        self.accepted += 1
        self.open[job_id] = at

    def close(self, job_id: int, status: ResultStatus, reason: CancelReason | None) -> None:
        try:
            del self.open[job_id]
        except KeyError:
            raise AccountingError(
                f"job {job_id} reported {status.value} but it has no open entry "
                "(reported twice, or never accepted)"
            ) from None
        self.by_status[status] += 1
        if reason is not None:
            self.by_reason[reason] += 1

    @property
    def ended(self) -> int:
        return sum(self.by_status.values())

    @property
    def lost(self) -> int:
        """Accepted jobs that have no final status. After shutdown this must be 0."""
        return self.accepted - self.ended
