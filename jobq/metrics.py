"""Metrics of a run - jobs/s, latency, queue depth, utilisation - computed from its events.

The problem: a run of a million jobs must still be measurable, so the metrics cannot keep a
list of every job. `MetricsAggregator` is a *streaming* consumer: subscribe it to a live
`Trace` (`trace.subscribe(agg.feed)`) and it keeps only

    - per-job state for jobs that have not ended yet (enqueue time, first start), dropped at
      the job's final event - so memory follows the jobs *in the system*, not the jobs *seen*;
    - time-weighted integrals (area under "queue depth", "jobs in system", "busy workers")
      instead of series - each is a sum of durations (the area under "jobs in the queue" is
      the time every job spent in the queue), added when a job ends;
    - latencies exactly, up to 65,536 samples, then folded into a fixed log-bucket histogram
      (buckets 0.1% wide) whose size depends on the spread of the values, not their number.

`snapshot(workers)` turns that state into an immutable `Metrics`. A Pipeline does not feed
it events: it folds its ended jobs' rows (`fold_rows`, see jobq.trace), which does for a
simple job exactly what feeding its four events does - the same sums, in the same order, so
a trace saved as JSONL and loaded back gives equal `Metrics`:

    agg = MetricsAggregator()
    trace.subscribe(agg.feed)            # live, bounded memory
    ... run ...
    agg.snapshot(workers=4) == metrics_from_trace(Trace.from_jsonl("run.jsonl"), workers=4)

The series helpers at the end (`queue_depth_series`, `worker_spans`, ...) are for plots:
they need a kept trace and grow with it, which is fine for a picture of a small run.
"""

from __future__ import annotations

import collections
import math
import operator
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from jobq.trace import FINAL_KINDS, Event, EventKind, JobRecord, JobRows, Trace
from jobq.validation import count as require_count

__all__ = [
    "LatencySummary",
    "Metrics",
    "MetricsAggregator",
    "Span",
    "blocked_intervals",
    "busy_series",
    "metrics_from_trace",
    "queue_depth_series",
    "worker_spans",
]

EXACT_SAMPLES = 65_536  # latencies kept exactly before folding into the histogram
BUCKET_GROWTH = 0.001  # each histogram bucket is 0.1% wider than the one below it
_LOG_GROWTH = math.log1p(BUCKET_GROWTH)

# Events after which a worker slot is free again (the attempt that started on it is over).
_ATTEMPT_ENDS = frozenset({EventKind.ATTEMPT_FAILED} | FINAL_KINDS)


def sig3(x: float) -> str:
    """`x` to 3 significant figures, without an exponent for everyday sizes: 1230, 0.0123."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    magnitude = math.floor(math.log10(abs(x)))
    if not -6 <= magnitude < 9:
        return f"{x:.3g}"
    rounded = float(f"{x:.3g}")  # round first: 9.996 becomes 10.0, which has one more digit
    magnitude = math.floor(math.log10(abs(rounded)))
    return f"{rounded:.{max(0, 2 - magnitude)}f}"


# -- latency percentiles in bounded memory ---------------------------------------------


@dataclass(frozen=True)
class LatencySummary:
    """Count, mean, percentiles and maximum of a set of durations, in seconds.

    An empty summary is all zeros (not NaN), so two empty summaries compare equal.
    """

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    def __repr__(self) -> str:
        return (
            f"<LatencySummary n={self.count} mean={sig3(self.mean)}s p50={sig3(self.p50)}s "
            f"p95={sig3(self.p95)}s p99={sig3(self.p99)}s max={sig3(self.max)}s>"
        )


class _Durations:
    """Durations seen so far: exact while few, a log-bucket histogram once there are many.

    Why a log histogram: a bucket [g**k, g**(k+1)) with g = 1.001 is 0.1% wide *relative to
    its values*, so a percentile read from it is off by at most ~0.05% whether latencies are
    microseconds or minutes. The dict is sparse: only buckets that hold a value exist, and
    their number is bounded by the spread of the values (1 ms .. 1 h is ~15,000 buckets),
    never by how many values there were.
    """

    __slots__ = ("_buckets", "_count", "_exact", "_max", "_min", "_total", "_zeros")

    def __init__(self) -> None:
        self._exact: array[float] | None = array("d")  # None once folded
        self._buckets: dict[int, int] = {}
        self._zeros = 0  # log(0) does not exist: zero-length durations get their own count
        self._count = 0
        self._total = 0.0
        self._min = math.inf
        self._max = -math.inf

    def add(self, x: float) -> None:
        if x < 0.0:
            x = 0.0  # a negative duration can only be clock noise
        self._count += 1
        self._total += x
        if x < self._min:  # plain comparisons: this runs for every job
            self._min = x
        if x > self._max:
            self._max = x
        if self._exact is not None:
            if len(self._exact) < EXACT_SAMPLES:
                self._exact.append(x)
                return
            # The first sample past the limit: move the exact ones into buckets, for good.
            exact, self._exact = self._exact, None
            for sample in exact:
                self._bucket(sample)
        self._bucket(x)

    def extend(self, xs: list[float]) -> None:
        """`add` for each of `xs`, in order - the same state, with the loop in C."""
        if not xs:
            return
        if min(xs) < 0.0:
            xs = [x if x > 0.0 else 0.0 for x in xs]
        self._count += len(xs)
        total = self._total
        for x in xs:  # one by one, in order: the same float sum as add() gives
            total += x
        self._total = total
        low, high = min(xs), max(xs)
        if low < self._min:
            self._min = low
        if high > self._max:
            self._max = high
        exact = self._exact
        if exact is not None:
            room = EXACT_SAMPLES - len(exact)
            if len(xs) <= room:
                exact.extend(xs)
                return
            exact.extend(xs[:room])
            xs = xs[room:]
            self._exact = None
            for sample in exact:
                self._bucket(sample)
        for x in xs:
            self._bucket(x)

    def _bucket(self, x: float) -> None:
        if x <= 0.0:
            self._zeros += 1
        else:
            key = math.floor(math.log(x) / _LOG_GROWTH)
            self._buckets[key] = self._buckets.get(key, 0) + 1

    def percentiles(self, *qs: float) -> list[float]:
        """The q-th percentiles (0..100), interpolated between ranks like numpy's default."""
        if self._count == 0:
            return [0.0 for _ in qs]
        ordered = sorted(self._exact) if self._exact is not None else None  # sort once
        out = []
        for q in qs:
            rank = q / 100 * (self._count - 1)
            lo, hi = math.floor(rank), math.ceil(rank)
            if ordered is not None:
                low, high = ordered[lo], ordered[hi]
            else:
                low, high = self._value_at_rank(lo), self._value_at_rank(hi)
            value = low + (high - low) * (rank - lo)
            # A bucket's middle can lie just outside the values that fell in it.
            out.append(min(self._max, max(self._min, value)))
        return out

    def _value_at_rank(self, rank: int) -> float:
        """The (approximate) value of the rank-th smallest duration, from the histogram."""
        seen = self._zeros
        if rank < seen:
            return 0.0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if rank < seen:
                return math.exp((key + 0.5) * _LOG_GROWTH)  # the bucket's geometric middle
        return self._max

    def summary(self) -> LatencySummary:
        if self._count == 0:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p50, p95, p99 = self.percentiles(50, 95, 99)
        return LatencySummary(self._count, self._total / self._count, p50, p95, p99, self._max)


# -- the snapshot ----------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """What a run did, as numbers. Times are loop seconds (virtual on a virtual clock).

    `elapsed` runs from the first ENQUEUED to the latest job event (at the end of a run, the
    last final one); every mean "over time" is over that span.
    `utilisation` is busy worker-seconds / (workers x elapsed).
    """

    jobs: int  # jobs that ended (any final status)
    succeeded: int
    dead_lettered: int
    cancelled: int
    elapsed: float
    throughput: float  # ended jobs per second of elapsed
    latency: LatencySummary  # enqueue -> final event, every ended job
    service_time: LatencySummary  # first start -> final event, jobs that started
    queue_depth_mean: float
    queue_depth_max: int
    in_system_mean: float  # jobs enqueued but not ended, time-weighted: Little's L
    utilisation: float  # 0..1
    producer_blocked_seconds: float
    producer_blocked_count: int
    retries: int
    by_kind: dict[str, int] = field(default_factory=dict, hash=False)  # ended jobs per kind

    def littles_law(self) -> tuple[float, float]:
        """(L measured, lambda * W): mean jobs in system vs throughput x mean latency.

        Little's law says they are equal for any queueing system observed from empty to
        empty - no assumption about arrivals or service. For a complete run they agree to
        rounding: a gap means jobs were still in the system when the measurement ended.
        """
        return self.in_system_mean, self.throughput * self.latency.mean

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for a table; 3 significant figures, units in the labels."""
        lat, svc = self.latency, self.service_time
        little_l, little_lw = self.littles_law()
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.by_kind.items()))
        return [
            ("jobs ended", str(self.jobs)),
            ("succeeded / dead-lettered / cancelled",
             f"{self.succeeded} / {self.dead_lettered} / {self.cancelled}"),
            ("jobs by kind", kinds or "-"),
            ("retries", str(self.retries)),
            ("elapsed (s)", sig3(self.elapsed)),
            ("throughput (jobs/s)", sig3(self.throughput)),
            ("latency mean (s)", sig3(lat.mean)),
            ("latency p50 / p95 / p99 (s)", " / ".join(map(sig3, (lat.p50, lat.p95, lat.p99)))),
            ("latency max (s)", sig3(lat.max)),
            ("service time mean (s)", sig3(svc.mean)),
            ("service time p50 / p95 / p99 (s)",
             " / ".join(map(sig3, (svc.p50, svc.p95, svc.p99)))),
            ("queue depth mean / max (jobs)",
             f"{sig3(self.queue_depth_mean)} / {self.queue_depth_max}"),
            ("jobs in system, mean L (jobs)", sig3(little_l)),
            ("Little's law: throughput x mean latency (jobs)", sig3(little_lw)),
            ("worker utilisation (%)", sig3(100 * self.utilisation)),
            ("producer blocked (s)", sig3(self.producer_blocked_seconds)),
            ("producer blocked (times)", str(self.producer_blocked_count)),
        ]

    def __repr__(self) -> str:
        return (
            f"<Metrics jobs={self.jobs} succeeded={self.succeeded} "
            f"dead_lettered={self.dead_lettered} cancelled={self.cancelled} "
            f"throughput={sig3(self.throughput)}/s latency_p50={sig3(self.latency.p50)}s "
            f"utilisation={sig3(100 * self.utilisation)}%>"
        )


# -- the streaming aggregator ----------------------------------------------------------


@dataclass(slots=True)
class _JobState:
    """What we remember about one job until its final event - then it is dropped."""

    enqueued_at: float | None = None
    kind: str = "unknown"
    left_queue: float | None = None  # DISPATCHED (or first STARTED): its time in the queue ends
    first_started: float | None = None
    attempt_started: float | None = None  # set while an attempt holds a worker slot
    busy: float = 0.0  # worker-seconds of its attempts that have ended


class MetricsAggregator:
    """Turns events into metrics as they happen, in memory bounded by the jobs in flight.

        agg = MetricsAggregator()
        trace.subscribe(agg.feed)
        ...                                  # run the pipeline
        agg.snapshot(workers=4)              # Metrics(...), any time, as often as you like

    Feed events in the order they happened (a Trace does). `pending_jobs` is how many jobs
    it is holding state for: zero once every job has ended. A Pipeline folds rows of ended
    jobs instead (`fold_rows`): the same numbers without an Event per step.

    The time-weighted means are sums of durations, added when a job ends: the area under
    "jobs in the queue" is the sum of every job's time in the queue, "jobs in the system" of
    every latency, "busy workers" of every attempt. A snapshot taken while jobs are still
    open adds their durations so far.
    """

    def __init__(self) -> None:
        self._jobs: dict[int, _JobState] = {}
        self._blocked_since: dict[int | None, float] = {}  # submits waiting on a full queue
        self._first_enqueued: float | None = None
        self._last_t: float | None = None  # time of the latest job event: "now" for a snapshot
        self._counts = {kind: 0 for kind in FINAL_KINDS}
        self._by_kind: dict[str, int] = {}
        self._latency = _Durations()
        self._service = _Durations()
        self._queue_area = 0.0  # sums of durations of ended jobs (see the class docstring)
        self._in_system_area = 0.0
        self._busy_area = 0.0
        self._queue_depth_max = 0
        self._blocked_seconds = 0.0
        self._blocked_count = 0
        self._retries = 0

    @property
    def pending_jobs(self) -> int:
        """Jobs seen but not ended yet - the only per-job state kept."""
        return len(self._jobs)

    @property
    def blocked_producers(self) -> int:
        """Submits currently waiting for room in the queue."""
        return len(self._blocked_since)

    def feed(self, event: Event) -> None:
        """Take one event into account. Never waits, never grows with finished jobs."""
        t, kind = event.t, event.kind
        if kind is EventKind.PRODUCER_BLOCKED:
            self._blocked_count += 1
            self._blocked_since[event.job] = t
            return
        if kind is EventKind.PRODUCER_RESUMED:
            since = self._blocked_since.pop(event.job, None)
            if since is not None:
                self._blocked_seconds += t - since
            return
        if kind is EventKind.RETRY_SCHEDULED:
            self._retries += 1
            return
        if kind is EventKind.PHASE or event.job is None:
            return
        if self._last_t is None or t > self._last_t:
            self._last_t = t

        if event.value is not None and kind in (
            EventKind.ENQUEUED, EventKind.DISPATCHED, EventKind.CANCELLED
        ) and event.value > self._queue_depth_max:
            self._queue_depth_max = int(event.value)

        job = self._jobs.get(event.job)
        if job is None:
            # A job we did not see enqueued (we subscribed late) is still counted at its end.
            job = self._jobs[event.job] = _JobState()
        if kind is EventKind.ENQUEUED:
            if self._first_enqueued is None or t < self._first_enqueued:
                self._first_enqueued = t
            if job.enqueued_at is None:
                job.enqueued_at, job.kind = t, event.info or "unknown"
            return
        if kind is EventKind.DISPATCHED:
            if job.left_queue is None:
                job.left_queue = t
        elif kind is EventKind.STARTED:
            if job.first_started is None:
                job.first_started = t
            if job.left_queue is None:
                job.left_queue = t
            job.attempt_started = t
        elif kind in _ATTEMPT_ENDS and job.attempt_started is not None:
            # The slot is free again. (A DEAD_LETTERED right after ATTEMPT_FAILED, or a job
            # cancelled while waiting out a backoff, holds no slot: nothing to release.)
            job.busy += t - job.attempt_started
            job.attempt_started = None

        if kind in FINAL_KINDS:
            del self._jobs[event.job]  # the job is over: forget it (bounded memory)
            self._final(t, kind, job)

    def _final(self, t: float, kind: EventKind, job: _JobState) -> None:
        # fold_rows does exactly this for a simple job: keep the two in step.
        self._counts[kind] += 1
        self._by_kind[job.kind] = self._by_kind.get(job.kind, 0) + 1
        if job.enqueued_at is not None:
            latency = t - job.enqueued_at
            self._latency.add(latency)
            self._in_system_area += latency
            left = job.left_queue if job.left_queue is not None else t
            self._queue_area += left - job.enqueued_at
        if job.first_started is not None:
            self._service.add(t - job.first_started)
        self._busy_area += job.busy

    def fold_rows(self, rows: JobRows, start: int = 0) -> None:
        """Take the ended jobs in `rows[start:]` into account, in order - what feeding their
        events would do, with the per-job loop in C for the simple ones."""
        ints, n, width = rows.ints, len(rows), rows.INTS
        row = start
        while row < n:
            if ints[row * width + width - 1] < 0:  # a job with a complicated life: its events
                for event in rows.complex[ints[row * width]]:
                    self.feed(event)
                row += 1
                continue
            end = row + 1  # a run of simple rows: [row, end)
            while end < n and ints[end * width + width - 1] >= 0:
                end += 1
            self._fold_simple(rows, row, end)
            row = end

    def _fold_simple(self, rows: JobRows, start: int, end: int) -> None:
        times, ints, width = rows.times, rows.ints, rows.INTS
        enq = times[start * 4:end * 4:4]
        disp = times[start * 4 + 1:end * 4:4]
        began = times[start * 4 + 2:end * 4:4]
        ended = times[start * 4 + 3:end * 4:4]
        latency = list(map(operator.sub, ended, enq))
        service = list(map(operator.sub, ended, began))
        self._latency.extend(latency)
        self._service.extend(service)
        # One by one, in order: the same float sums as _final() makes, job after job.
        in_system, queue, busy = self._in_system_area, self._queue_area, self._busy_area
        for x in latency:
            in_system += x
        for x in map(operator.sub, disp, enq):
            queue += x
        for x in service:  # one attempt each: its busy time is its service time
            busy += x
        self._in_system_area, self._queue_area, self._busy_area = in_system, queue, busy
        self._counts[EventKind.SUCCEEDED] += end - start
        kinds = rows.kinds
        for index, count in collections.Counter(
                ints[start * width + width - 1:end * width:width]).items():
            name = kinds[index]
            self._by_kind[name] = self._by_kind.get(name, 0) + count
        first, last = min(enq), max(ended)
        if self._first_enqueued is None or first < self._first_enqueued:
            self._first_enqueued = first
        if self._last_t is None or last > self._last_t:
            self._last_t = last
        depth = max(max(ints[start * width + 2:end * width:width]),
                    max(ints[start * width + 4:end * width:width]))
        if depth > self._queue_depth_max:
            self._queue_depth_max = depth

    def snapshot(self, workers: int, open_jobs: Iterable[JobRecord] = ()) -> Metrics:
        """The metrics so far, as an immutable value. `workers` is the number of slots;
        `open_jobs`: records of jobs not ended yet that were never fed (a Pipeline's)."""
        require_count("snapshot(workers=...)", workers)
        pending = list(self._jobs.values())
        first, last = self._first_enqueued, self._last_t
        depth_max, retries = self._queue_depth_max, self._retries
        scratch = MetricsAggregator()  # the open records' events so far, fed aside
        for record in open_jobs:
            for event in record.to_events():
                scratch.feed(event)
        if scratch._last_t is not None:
            pending.extend(scratch._jobs.values())
            retries += scratch._retries
            depth_max = max(depth_max, scratch._queue_depth_max)
            last = scratch._last_t if last is None else max(last, scratch._last_t)
            if scratch._first_enqueued is not None:
                first = (scratch._first_enqueued if first is None
                         else min(first, scratch._first_enqueued))
        jobs = sum(self._counts.values())
        elapsed = 0.0 if first is None or last is None else max(0.0, last - first)
        queue, in_system, busy = self._queue_area, self._in_system_area, self._busy_area
        if last is not None:
            for job in pending:  # jobs still open: their durations so far
                if job.enqueued_at is not None:
                    left = job.left_queue if job.left_queue is not None else last
                    queue += left - job.enqueued_at
                    in_system += last - job.enqueued_at
                busy += job.busy
                if job.attempt_started is not None:
                    busy += last - job.attempt_started

        def per_second(area: float) -> float:
            return area / elapsed if elapsed > 0 else 0.0

        return Metrics(
            jobs=jobs,
            succeeded=self._counts[EventKind.SUCCEEDED],
            dead_lettered=self._counts[EventKind.DEAD_LETTERED],
            cancelled=self._counts[EventKind.CANCELLED],
            elapsed=elapsed,
            throughput=jobs / elapsed if elapsed > 0 else 0.0,
            latency=self._latency.summary(),
            service_time=self._service.summary(),
            queue_depth_mean=per_second(queue),
            queue_depth_max=depth_max,
            in_system_mean=per_second(in_system),
            utilisation=per_second(busy) / workers,
            producer_blocked_seconds=self._blocked_seconds,
            producer_blocked_count=self._blocked_count,
            retries=retries,
            by_kind=dict(sorted(self._by_kind.items())),
        )

    def __repr__(self) -> str:
        ended = sum(self._counts.values())
        return f"<MetricsAggregator ended={ended} pending={len(self._jobs)}>"


def metrics_from_trace(trace: Trace | Iterable[Event], workers: int) -> Metrics:
    """Metrics of a finished (or loaded) trace - the same numbers a live aggregator gives."""
    agg = MetricsAggregator()
    for event in trace:
        agg.feed(event)
    return agg.snapshot(workers)


# -- series for plots (need a kept trace) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """One attempt on one worker slot, from STARTED to the event that ended it.

    `outcome` is "succeeded", "failed" (the attempt failed; a retry may follow),
    "dead-lettered" (the last attempt of a job that gave up), "cancelled", or "running"
    (still going when the trace ended).
    """

    worker: int
    job: int
    kind: str
    attempt: int
    start: float
    end: float
    outcome: str

    @property
    def duration(self) -> float:
        return self.end - self.start


_OUTCOME = {
    EventKind.ATTEMPT_FAILED: "failed",
    EventKind.SUCCEEDED: "succeeded",
    EventKind.DEAD_LETTERED: "dead-lettered",
    EventKind.CANCELLED: "cancelled",
}


def queue_depth_series(trace: Trace | Iterable[Event]) -> tuple[list[float], list[float]]:
    """(times, depths) of the queue: one point per event that reports the depth.

    Draw it as a step (`ax.step(t, d, where="post")`). Several points may share a time on a
    virtual clock - the queue filled and emptied in the same instant - and are kept, so the
    peak the metrics report is visible in the picture too. A last point at the trace's end
    carries the final depth to the right edge.
    """
    times: list[float] = []
    depths: list[float] = []
    last_t: float | None = None
    for e in trace:
        last_t = e.t
        if e.value is not None and e.kind in (
            EventKind.ENQUEUED, EventKind.DISPATCHED, EventKind.CANCELLED
        ):
            times.append(e.t)
            depths.append(e.value)
    if times and last_t is not None and last_t > times[-1]:
        times.append(last_t)
        depths.append(depths[-1])
    return times, depths


def blocked_intervals(trace: Trace | Iterable[Event]) -> list[tuple[float, float]]:
    """(start, end) of every wait of a producer on a full queue, in order of start.

    A wait that never ended (the trace stops first) ends at the trace's last event.
    """
    open_since: dict[int | None, float] = {}
    intervals: list[tuple[float, float]] = []
    last_t = 0.0
    for e in trace:
        last_t = e.t
        if e.kind is EventKind.PRODUCER_BLOCKED:
            open_since[e.job] = e.t
        elif e.kind is EventKind.PRODUCER_RESUMED and e.job in open_since:
            intervals.append((open_since.pop(e.job), e.t))
    intervals.extend((start, last_t) for start in open_since.values())
    return sorted(intervals)


def worker_spans(trace: Trace | Iterable[Event]) -> list[Span]:
    """Every attempt as a `Span` (who ran what, when), in order of start."""
    kinds: dict[int, str] = {}
    running: dict[int, Event] = {}  # job -> its STARTED event, while the attempt runs
    spans: list[Span] = []
    last_t = 0.0

    def close(start: Event, end: float, outcome: str) -> None:
        assert start.job is not None
        spans.append(Span(
            worker=start.worker if start.worker is not None else -1,
            job=start.job,
            kind=kinds.get(start.job, "unknown"),
            attempt=start.attempt if start.attempt is not None else 1,
            start=start.t,
            end=end,
            outcome=outcome,
        ))

    for e in trace:
        last_t = e.t
        if e.job is None:
            continue
        if e.kind is EventKind.ENQUEUED:
            kinds[e.job] = e.info or "unknown"
        elif e.kind is EventKind.STARTED:
            running[e.job] = e
        elif e.kind in _OUTCOME:
            started = running.pop(e.job, None)
            if started is not None:
                close(started, e.t, _OUTCOME[e.kind])
            elif e.kind is EventKind.DEAD_LETTERED:
                # The last attempt already ended with ATTEMPT_FAILED: it is the one that
                # made the job give up, so show it as dead-lettered.
                for i in range(len(spans) - 1, -1, -1):
                    if spans[i].job == e.job:
                        if spans[i].outcome == "failed":
                            old = spans[i]
                            spans[i] = Span(old.worker, old.job, old.kind, old.attempt,
                                            old.start, old.end, "dead-lettered")
                        break
    for started in running.values():
        close(started, last_t, "running")
    return sorted(spans, key=lambda s: (s.start, s.worker, s.job))


def busy_series(trace: Trace | Iterable[Event]) -> tuple[list[float], list[float]]:
    """(times, busy worker slots): a step series, one point per start or end of an attempt."""
    changes: list[tuple[float, int]] = []
    for span in worker_spans(trace):
        changes.append((span.start, +1))
        if span.outcome != "running":
            changes.append((span.end, -1))
    # At equal times, ends before starts: a slot freed and reused at once is not 2 busy.
    changes.sort(key=lambda c: (c[0], c[1]))
    times: list[float] = []
    busy: list[float] = []
    level = 0
    for t, step in changes:
        level += step
        times.append(t)
        busy.append(float(level))
    return times, busy
