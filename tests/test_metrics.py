"""Metrics from hand-made traces whose numbers can be worked out on paper."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from jobq.errors import InvalidConfigError
from jobq.metrics import (
    EXACT_SAMPLES,
    LatencySummary,
    Metrics,
    MetricsAggregator,
    Span,
    blocked_intervals,
    busy_series,
    metrics_from_trace,
    queue_depth_series,
    sig3,
    worker_spans,
)
from jobq.trace import EventKind as K
from jobq.trace import Trace

from .helpers import emit_two_workers


def emit_retry_and_cancel(trace: Trace) -> None:
    """1 worker. Job 1 fails twice and is dead-lettered; job 2 is cancelled still queued.

        job 1: attempt 1 [0, 1) fails, backoff 0.5, attempt 2 [1.5, 2) fails -> dead letter
        job 2: queued at 0, cancelled (never started) at 2
        busy 1.5 s of 2 -> utilisation 0.75; queue depth 1 on [0, 2) -> mean 1
    """
    e = trace.emit
    e(0.0, K.ENQUEUED, 1, info="io", value=1)
    e(0.0, K.DISPATCHED, 1, worker=0, value=0)
    e(0.0, K.STARTED, 1, worker=0, attempt=1)
    e(0.0, K.ENQUEUED, 2, info="cpu", value=1)
    e(1.0, K.ATTEMPT_FAILED, 1, worker=0, attempt=1, info="InjectedFailure: boom")
    e(1.0, K.RETRY_SCHEDULED, 1, worker=0, attempt=2, value=0.5)
    e(1.5, K.STARTED, 1, worker=0, attempt=2)
    e(2.0, K.ATTEMPT_FAILED, 1, worker=0, attempt=2, info="InjectedFailure: boom")
    e(2.0, K.DEAD_LETTERED, 1, worker=0, attempt=2, info="InjectedFailure: boom")
    e(2.0, K.PHASE, info="closing")
    e(2.0, K.CANCELLED, 2, info="never-started", value=0)


def two_workers() -> Trace:
    trace = Trace()
    emit_two_workers(trace)
    return trace


# -- exact numbers ---------------------------------------------------------------------


def test_hand_computed_metrics() -> None:
    m = metrics_from_trace(two_workers(), workers=2)
    assert (m.jobs, m.succeeded, m.dead_lettered, m.cancelled) == (4, 4, 0, 0)
    assert m.elapsed == 4.0
    assert m.throughput == 1.0
    assert m.latency == LatencySummary(count=4, mean=2.125, p50=2.25, p95=2.925, p99=2.985,
                                       max=3.0)
    assert m.latency.p95 == pytest.approx(2.925)  # rank 0.95 * 3 = 2.85: between 2.5 and 3
    assert m.service_time.mean == 1.625
    assert m.service_time.max == 2.0
    assert m.queue_depth_mean == 0.5
    assert m.queue_depth_max == 1
    assert m.utilisation == 0.8125
    assert m.producer_blocked_seconds == 1.0
    assert m.producer_blocked_count == 1
    assert m.retries == 0
    assert m.by_kind == {"cpu": 2, "delay": 1, "io": 1}


def test_littles_law_holds_for_a_run_from_empty_to_empty() -> None:
    m = metrics_from_trace(two_workers(), workers=2)
    measured, predicted = m.littles_law()
    assert measured == 2.125  # 8.5 job-seconds in the system over 4 s
    assert predicted == 2.125  # 1 job/s x 2.125 s mean latency
    assert m.in_system_mean == measured


def test_retries_dead_letters_and_cancelled_jobs() -> None:
    trace = Trace()
    emit_retry_and_cancel(trace)
    m = metrics_from_trace(trace, workers=1)
    assert (m.jobs, m.succeeded, m.dead_lettered, m.cancelled) == (2, 0, 1, 1)
    assert m.retries == 1
    # The DEAD_LETTERED right after ATTEMPT_FAILED frees no second slot.
    assert m.utilisation == 0.75
    assert m.queue_depth_mean == 1.0
    assert m.service_time.count == 1  # job 2 never started
    assert m.service_time.mean == 2.0
    assert m.latency.mean == 2.0
    assert m.littles_law() == (2.0, 2.0)


def test_empty_trace_gives_zeros_not_nan() -> None:
    m = metrics_from_trace([], workers=3)
    assert m == metrics_from_trace(Trace(), workers=3)  # NaN would make this fail
    assert (m.jobs, m.elapsed, m.throughput, m.utilisation) == (0, 0.0, 0.0, 0.0)
    assert m.latency == LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_snapshot_refuses_a_bad_worker_count(workers: object) -> None:
    with pytest.raises(InvalidConfigError, match="workers"):
        MetricsAggregator().snapshot(workers)  # type: ignore[arg-type]


# -- live, loaded, streamed ------------------------------------------------------------


def test_live_and_loaded_traces_give_equal_metrics(tmp_path: Path) -> None:
    trace = Trace()
    live = MetricsAggregator()
    trace.subscribe(live.feed)
    emit_two_workers(trace)
    emit_retry_and_cancel(trace)  # job ids repeat: a job may come back (a replay)
    path = tmp_path / "run.jsonl"
    trace.to_jsonl(path)
    loaded = metrics_from_trace(Trace.from_jsonl(path), workers=2)
    assert live.snapshot(workers=2) == loaded
    assert repr(live.snapshot(workers=2)) == repr(loaded)


def test_a_streamed_trace_that_keeps_nothing_gives_the_same_metrics(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    trace = Trace(keep=False, path=path)
    live = MetricsAggregator()
    trace.subscribe(live.feed)
    emit_two_workers(trace)
    trace.close()
    assert len(trace) == 0
    assert live.snapshot(2) == metrics_from_trace(Trace.from_jsonl(path), 2)
    assert live.snapshot(2) == metrics_from_trace(two_workers(), 2)


def test_per_job_state_is_dropped_when_jobs_end() -> None:
    trace = Trace()
    agg = MetricsAggregator()
    trace.subscribe(agg.feed)
    trace.emit(0.0, K.ENQUEUED, 1, info="cpu", value=1)
    trace.emit(0.0, K.PRODUCER_BLOCKED, 2)
    assert (agg.pending_jobs, agg.blocked_producers) == (1, 1)
    trace.emit(1.0, K.PRODUCER_RESUMED, 2)
    trace.emit(1.0, K.ENQUEUED, 2, info="cpu", value=2)
    trace.emit(2.0, K.CANCELLED, 1, value=1)
    trace.emit(2.0, K.CANCELLED, 2, value=0)
    assert (agg.pending_jobs, agg.blocked_producers) == (0, 0)
    assert repr(agg) == "<MetricsAggregator ended=2 pending=0>"


# -- percentiles past the exact limit ----------------------------------------------------


def feed_latencies(latencies: list[float]) -> MetricsAggregator:
    """One job after another on one worker: job i waits exactly latencies[i]."""
    trace = Trace(keep=False)
    agg = MetricsAggregator()
    trace.subscribe(agg.feed)
    t = 0.0
    for job, latency in enumerate(latencies):
        trace.emit(t, K.ENQUEUED, job, info="delay", value=1)
        t += latency
        trace.emit(t, K.SUCCEEDED, job)
    return agg


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def test_histogram_fold_keeps_percentiles_within_a_fifth_of_a_percent() -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(-2.0, 1.0) for _ in range(EXACT_SAMPLES + 34_464)]
    agg = feed_latencies(latencies)
    summary = agg.snapshot(workers=1).latency
    assert summary.count == 100_000
    for q, got in ((50, summary.p50), (95, summary.p95), (99, summary.p99)):
        assert got == pytest.approx(exact_percentile(latencies, q), rel=0.002)
    # Max and mean are kept exactly (the approx is for the t_end - t_start of the trace).
    assert summary.max == pytest.approx(max(latencies), rel=1e-9)
    assert summary.mean == pytest.approx(sum(latencies) / len(latencies), rel=1e-9)
    assert agg.pending_jobs == 0
    # Same input, same output: the fold is deterministic.
    assert feed_latencies(latencies).snapshot(workers=1) == agg.snapshot(workers=1)


def test_histogram_percentiles_are_clamped_to_the_observed_range() -> None:
    latencies = [0.25] * (EXACT_SAMPLES + 10)
    summary = feed_latencies(latencies).snapshot(workers=1).latency
    # The bucket's middle is not 0.25, but no percentile can lie outside [min, max].
    assert (summary.p50, summary.p95, summary.p99, summary.max) == (0.25, 0.25, 0.25, 0.25)


# -- presentation ----------------------------------------------------------------------


def test_sig3_formats_three_significant_figures() -> None:
    assert [sig3(x) for x in (0, 2, 81.25, 1234.5, 0.000123456, 9.996, -0.5)] == [
        "0", "2.00", "81.2", "1230", "0.000123", "10.0", "-0.500",
    ]


def test_summary_rows_and_repr_are_short_and_deterministic() -> None:
    m = metrics_from_trace(two_workers(), workers=2)
    rows = dict(m.summary_rows())
    assert rows["throughput (jobs/s)"] == "1.00"
    assert rows["latency p50 / p95 / p99 (s)"] == "2.25 / 2.92 / 2.98"
    assert rows["worker utilisation (%)"] == "81.2"
    assert rows["queue depth mean / max (jobs)"] == "0.500 / 1"
    assert rows["jobs by kind"] == "cpu 2, delay 1, io 1"
    assert all(isinstance(label, str) and isinstance(v, str) for label, v in m.summary_rows())
    assert repr(m) == (
        "<Metrics jobs=4 succeeded=4 dead_lettered=0 cancelled=0 throughput=1.00/s "
        "latency_p50=2.25s utilisation=81.2%>"
    )
    assert repr(m.latency) == (
        "<LatencySummary n=4 mean=2.12s p50=2.25s p95=2.92s p99=2.98s max=3.00s>"
    )
    assert isinstance(m, Metrics)


# -- series for plots --------------------------------------------------------------------


def test_queue_depth_series_and_blocked_intervals() -> None:
    trace = two_workers()
    times, depths = queue_depth_series(trace)
    assert times == [0, 0, 0, 0, 0, 1, 1, 2, 4]
    assert depths == [1, 0, 1, 0, 1, 0, 1, 0, 0]  # last point: carried to the trace's end
    assert blocked_intervals(trace) == [(0.0, 1.0)]
    unfinished = Trace()
    unfinished.emit(0.0, K.PRODUCER_BLOCKED, 9)
    unfinished.emit(3.0, K.PHASE, info="closing")
    assert blocked_intervals(unfinished) == [(0.0, 3.0)]


def test_worker_spans_and_busy_series() -> None:
    assert worker_spans(two_workers()) == [
        Span(worker=0, job=1, kind="cpu", attempt=1, start=0.0, end=1.0, outcome="succeeded"),
        Span(worker=1, job=2, kind="io", attempt=1, start=0.0, end=2.0, outcome="succeeded"),
        Span(worker=0, job=3, kind="cpu", attempt=1, start=1.0, end=2.5, outcome="succeeded"),
        Span(worker=1, job=4, kind="delay", attempt=1, start=2.0, end=4.0, outcome="succeeded"),
    ]
    times, busy = busy_series(two_workers())
    # At t=1 and t=2 a slot is freed and reused at once: never 3 busy, never 0 in between.
    assert list(zip(times, busy, strict=True)) == [
        (0.0, 1), (0.0, 2), (1.0, 1), (1.0, 2), (2.0, 1), (2.0, 2), (2.5, 1), (4.0, 0),
    ]


def test_the_last_failed_attempt_of_a_dead_letter_is_shown_dead_lettered() -> None:
    trace = Trace()
    emit_retry_and_cancel(trace)
    trace.emit(2.0, K.ENQUEUED, 3, info="cpu", value=1)
    trace.emit(2.0, K.STARTED, 3, worker=0, attempt=1)
    trace.emit(3.0, K.PHASE, info="stopped")
    spans = worker_spans(trace)
    assert [(s.job, s.attempt, s.outcome) for s in spans] == [
        (1, 1, "failed"), (1, 2, "dead-lettered"), (3, 1, "running"),
    ]
    assert spans[-1].end == 3.0 and spans[1].duration == 0.5
