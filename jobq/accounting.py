"""Exact accounting: every accepted job ends exactly once.

The problem: under cancellation, retries and shutdown, the easiest bugs to write are a job
that silently disappears (taken from the queue, then the taker is cancelled) and a job
reported twice (cancelled by shutdown *and* finished by its worker). The `Ledger` makes both
impossible to miss: a job enters it when the queue accepts it and leaves it with its one
final status; a second final raises AccountingError at once, and whatever is still in the
ledger after shutdown is counted as `lost` in the report - a number that must be 0.

Memory: the ledger holds only the jobs that have not ended (at most capacity + workers +
those in flight), and `IdSet` remembers every id ever accepted as runs of consecutive ids, so
1,000,000 consecutive ids cost one run, not a million ids.
"""

from __future__ import annotations

from collections import Counter

# sortedcontainers ships no type hints; its SortedDict is typed as Any here.
from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from jobq.errors import AccountingError
from jobq.jobs import CancelReason, ResultStatus

__all__ = ["IdSet", "Ledger"]


class IdSet:
    """A set of ints (job ids), stored as runs of consecutive ids.

        {1, 2, 3, 4, 9, 10, 42}  is stored as  1..4, 9..10, 42..42  (3 runs)

    The problem: a pipeline must remember every id it ever accepted, to refuse a duplicate -
    a million jobs, a million ids. Most programs number their jobs 0, 1, 2, ...: then the
    ids are one run and cost as much as one id. Other programs use random ids (uuid-like
    ints, hashes): then nearly every id is a run of its own, and the runs must still be
    found - and inserted - fast, in any order.

    How: `_runs` maps the first id of each run to its last id, in order of first id: a
    `sortedcontainers.SortedDict`, a dict plus its keys in sorted order, which it stores as
    a list of short sorted lists (at most 2,000 keys each) - so a new key shifts at most a
    few thousand entries, never all n. (The two flat lists IdSet had before shifted half of
    everything on every random id: quadratic.) To look `x` up, a binary search finds the
    last run that starts at or before `x`; `x` is in the set if that run ends at or after
    `x`. `add`, `discard` and `in` each do one search and change at most two runs:
    O(log n) whatever the order of the ids.

    Memory (CPython 3.11, 64-bit; bench/ids.py measures it): about 55-65 bytes per run, plus
    the int objects of its first and last id (28-32 bytes each; one when they are equal).
    Ids 0..n-1, in any order: one run, about 3 KB in all however large n is (the SortedDict's
    own bookkeeping). Random ids: nearly every id a run, about 90-100 bytes per id - a plain
    `set` of the same ids costs 70-80.
    """

    def __init__(self) -> None:
        self._runs = SortedDict()  # first id of a run -> last id of that run (inclusive)
        self._count = 0
        # The highest run, (first, last), or None when empty. Most programs submit ids in
        # increasing order, so nearly every id is "above everything" (not in the set: no
        # search) or "the next one" (it extends the highest run). Both are O(1); every other
        # case takes the O(log n) path below and refreshes this. Extending the highest run
        # changes only `_top`: its entry in `_runs` is brought up to date (`_sync`) before
        # anything reads `_runs` - a SortedDict write is a Python call, too dear per id.
        self._top: tuple[int, int] | None = None
        self._top_stale = False  # _runs[_top[0]] is behind _top[1]

    def _sync(self) -> None:
        if self._top_stale:
            assert self._top is not None
            self._runs[self._top[0]] = self._top[1]  # an existing key: no key moves
            self._top_stale = False

    def _refresh_top(self) -> None:
        if not self._runs:
            self._top = None
        else:
            first, last = self._runs.peekitem(-1)
            self._top = (first, last)

    def __len__(self) -> int:
        return self._count

    def _run_at_or_before(self, value: int) -> tuple[int, int] | None:
        """(first, last) of the run with the largest first id <= value, or None."""
        self._sync()
        # bisect_right: how many runs start at or before value; the last of those is ours.
        i: int = self._runs.bisect_right(value)
        if i == 0:
            return None
        first, last = self._runs.peekitem(i - 1)
        return first, last

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        top = self._top
        if top is None or value > top[1]:
            return False  # above every id we hold (or we hold none): the fast path
        run = self._run_at_or_before(value)
        return run is not None and value <= run[1]

    def add(self, value: int) -> None:
        top = self._top
        if top is not None and value == top[1] + 1:  # the next id: extend the highest run
            self._top = (top[0], value)
            self._top_stale = True
            self._count += 1
            return
        self._sync()
        self._add_anywhere(value)
        self._refresh_top()

    def add_new(self, value: int) -> bool:
        """Add `value` if it is not in the set yet; return whether it was added (False: it
        was there already). The submit path's one call: a check and an add in one search."""
        top = self._top
        if top is not None and value == top[1] + 1:  # the next id: the O(1) path of add()
            self._top = (top[0], value)
            self._top_stale = True
            self._count += 1
            return True
        if value in self:
            return False
        self.add(value)
        return True

    def _add_anywhere(self, value: int) -> None:
        runs = self._runs
        before = self._run_at_or_before(value)
        if before is not None and value <= before[1]:
            return  # already in the set
        self._count += 1
        # Does value join its neighbours? The run just before it is `before` (the search
        # found it); the run just after it, if any, starts at value + 1: a dict lookup.
        last = value
        if value + 1 in runs:  # value is the new front of the next run: take that run over
            last = runs.pop(value + 1)
        if before is not None and before[1] == value - 1:  # ...and the back of the one before
            runs[before[0]] = last  # an existing key: a dict update, no key moves
        else:
            runs[value] = last  # a new first id: inserted among the sorted keys, O(log n)

    def discard(self, value: int) -> None:
        run = self._run_at_or_before(value)  # (brings _runs up to date first)
        if run is None or value > run[1]:
            return  # not in the set
        self._count -= 1
        first, last = run
        runs = self._runs
        # Cut value out of first..last: what stays is first..value-1 and value+1..last,
        # each only if it is not empty.
        if first == value:
            del runs[first]
        else:
            runs[first] = value - 1
        if last > value:
            runs[value + 1] = last
        self._refresh_top()

    @property
    def runs(self) -> int:
        """How many runs of consecutive ids are stored: what the memory grows with."""
        return len(self._runs)  # (a stale top run is still one run)


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
