"""The plots' structure - bars, lines, titles, labels, legends - not their pixels."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from typing import Literal

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from jobq.metrics import metrics_from_trace
from jobq.plotting import (
    KIND_COLOURS,
    STATUS_COLOURS,
    plot_backpressure,
    plot_concurrency_trace,
    plot_cpu_offload,
    plot_dashboard,
    plot_retry_timeline,
    plot_shutdown_timeline,
)
from jobq.trace import EventKind as K
from jobq.trace import Trace, TraceHeader

from .helpers import emit_two_workers

matplotlib.use("Agg")  # no window, whatever MPLBACKEND says


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def busy_run() -> Trace:
    """2 workers, capacity 1, 4 jobs (cpu, io, cpu, delay); the producer waits on [0, 1).

    Job 3 fails its only attempt at 2.5 and is dead-lettered; the others succeed.
    """
    trace = Trace()
    emit_two_workers(trace, job3_fails=True)
    return trace


def shutdown_run() -> Trace:
    """2 workers; shutdown at 1 s with a 2 s drain deadline.

    job 1 succeeds at 1.5; job 2 fails once, waits 0.5 s, retries and is interrupted at 3;
    jobs 3 and 4 were still queued and are cancelled at 1 (cancel_queued).
    """
    trace = Trace()
    e = trace.emit
    for job in (1, 2, 3, 4):
        e(0.0, K.ENQUEUED, job, info="delay", value=job)
    e(0.0, K.STARTED, 1, worker=0, attempt=1)
    e(0.0, K.STARTED, 2, worker=1, attempt=1)
    e(1.0, K.PHASE, info="closing")
    e(1.0, K.CANCELLED, 4, info="never-started", value=1)
    e(1.0, K.CANCELLED, 3, info="never-started", value=0)
    e(1.0, K.PHASE, info="draining")
    e(1.2, K.ATTEMPT_FAILED, 2, worker=1, attempt=1, info="boom")
    e(1.2, K.RETRY_SCHEDULED, 2, worker=1, attempt=2, value=0.5)
    e(1.5, K.SUCCEEDED, 1, worker=0, attempt=1)
    e(1.7, K.STARTED, 2, worker=1, attempt=2)
    e(3.0, K.PHASE, info="deadline")
    e(3.0, K.CANCELLED, 2, worker=1, attempt=2, info="interrupted")
    e(3.0, K.PHASE, info="stopped")
    return trace


def bars(ax: Axes) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def legend_texts(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def ytick_labels(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_one_status_colour_map_and_one_kind_colour_map() -> None:
    assert {"succeeded", "failed", "dead-lettered", "cancelled"} <= set(STATUS_COLOURS)
    assert {"cpu", "io", "delay"} <= set(KIND_COLOURS)
    assert len(set(STATUS_COLOURS.values())) == len(STATUS_COLOURS)


def test_concurrency_trace_has_a_bar_per_attempt_and_a_row_per_worker() -> None:
    ax = plot_concurrency_trace(busy_run())
    assert ax.get_title() == "Who ran what, when?"
    assert ax.get_xlabel() == "time (virtual s)"
    assert ytick_labels(ax) == ["worker 0", "worker 1"]
    assert len(bars(ax)) == 4
    assert legend_texts(ax) == ["cpu", "io", "delay", "failed attempt"]  # job 3's, hatched
    assert sorted(texts(ax)) == ["1", "2", "3", "4"]  # job ids in their bars
    fig = ax.get_figure()
    assert isinstance(fig, Figure) and tuple(fig.get_size_inches()) == (9.0, 4.0)


def test_concurrency_trace_coloured_by_outcome_on_real_time() -> None:
    ax = plot_concurrency_trace(busy_run(), colour_by="outcome", virtual=False)
    assert ax.get_xlabel() == "time (s)"
    assert min(bar.get_x() for bar in bars(ax)) == 0.0  # the run starts at 0 already
    assert legend_texts(ax) == ["succeeded", "dead-lettered"]
    with pytest.raises(ValueError, match="colour_by"):
        plot_concurrency_trace(busy_run(), colour_by="colour")  # type: ignore[arg-type]


def test_a_given_axes_is_drawn_on_and_returned() -> None:
    _, (left, right) = plt.subplots(1, 2)
    figures = plt.get_fignums()
    assert plot_concurrency_trace(busy_run(), ax=left) is left
    assert plot_backpressure(busy_run(), ax=right) is right
    assert plt.get_fignums() == figures  # no new figure


def test_zero_length_attempts_stay_visible() -> None:
    trace = Trace()
    trace.emit(0.0, K.ENQUEUED, 1, info="cpu", value=1)
    trace.emit(0.0, K.STARTED, 1, worker=0, attempt=1)
    trace.emit(0.0, K.SUCCEEDED, 1, worker=0, attempt=1)
    ax = plot_concurrency_trace(trace)
    assert len(bars(ax)) == 1 and bars(ax)[0].get_width() == 0
    assert [line.get_marker() for line in ax.get_lines()] == ["|"]


def test_backpressure_shows_depth_waits_and_capacity() -> None:
    ax = plot_backpressure(busy_run(), capacity=1)
    assert ax.get_title() == "When did the producer wait?"
    assert ax.get_ylabel() == "jobs in queue"
    assert ax.get_xlabel() == "time (virtual s)"
    depth, capacity = ax.get_lines()
    assert depth.get_drawstyle() == "steps-post"
    assert capacity.get_linestyle() == "--"
    assert list(np.asarray(capacity.get_ydata())) == [1, 1]
    shaded = bars(ax)
    assert len(shaded) == 1  # the one wait, [0, 1)
    assert (shaded[0].get_x(), shaded[0].get_width()) == (0.0, 1.0)
    assert legend_texts(ax) == ["queue depth", "producer blocked", "capacity (1)"]


def test_backpressure_merges_overlapping_waits_of_several_producers() -> None:
    trace = Trace()
    trace.emit(0.0, K.PRODUCER_BLOCKED, 1)
    trace.emit(0.5, K.PRODUCER_BLOCKED, 2)
    trace.emit(1.0, K.PRODUCER_RESUMED, 1)
    trace.emit(2.0, K.PRODUCER_RESUMED, 2)
    trace.emit(3.0, K.PRODUCER_BLOCKED, 3)
    trace.emit(4.0, K.PRODUCER_RESUMED, 3)
    ax = plot_backpressure(trace)
    assert [(r.get_x(), r.get_x() + r.get_width()) for r in bars(ax)] == [(0, 2), (3, 4)]
    assert legend_texts(ax) == ["producer blocked"]


def test_shutdown_timeline_marks_phases_and_final_statuses() -> None:
    ax = plot_shutdown_timeline(shutdown_run())
    assert ax.get_title() == "What did shutdown do?"
    assert ax.get_xlabel() == "time (virtual s)"
    assert ytick_labels(ax) == ["worker 0", "worker 1", "queue"]
    phase_lines = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [np.asarray(line.get_xdata())[0] for line in phase_lines] == [1.0, 3.0]
    assert "closing / draining" in texts(ax) and "deadline / stopped" in texts(ax)
    assert "×2" in texts(ax)  # two jobs cancelled from the queue at the same instant
    assert len(bars(ax)) == 3  # job 1, job 2 attempt 1, job 2 attempt 2
    markers = [c for c in ax.collections if isinstance(c, PathCollection)]
    # One succeeded marker; one per cancel reason (the queue's two jobs share one, "×2").
    assert [len(np.asarray(c.get_offsets())) for c in markers] == [1, 1, 1]
    assert legend_texts(ax) == [
        "attempt succeeded", "attempt failed", "attempt cancelled", "backoff pause",
        "job succeeded", "job cancelled: interrupted", "job cancelled: never started",
        "shutdown phase",
    ]


def _marker_at(ax: Axes, t: float, row: int) -> str:
    """The marker shape drawn at (t, row) - found by comparing the scatter's path with each
    of matplotlib's marker paths."""
    from matplotlib.markers import MarkerStyle

    for c in ax.collections:
        if isinstance(c, PathCollection) and [t, row] in np.asarray(c.get_offsets()).tolist():
            drawn = c.get_paths()[0].vertices
            for shape in ("o", "X", "s", "D", "v"):
                style = MarkerStyle(shape)
                path = style.get_path().transformed(style.get_transform())
                if path.vertices.shape == drawn.shape and np.allclose(path.vertices, drawn):
                    return shape
    raise AssertionError(f"no marker at ({t}, {row})")


def test_shutdown_timeline_gives_each_cancel_reason_its_own_marker_and_draws_the_backoff() -> None:
    # Worker 0: job 1 fails at 1, waits for a 5 s backoff, is cut at the deadline (3): awaiting
    # retry. Worker 1: job 2 runs from 0 and is cut at 3: interrupted. Job 3 never started.
    trace = Trace()
    e = trace.emit
    for job in (1, 2, 3):
        e(0.0, K.ENQUEUED, job, info="delay", value=job)
    e(0.0, K.STARTED, 1, worker=0, attempt=1)
    e(0.0, K.STARTED, 2, worker=1, attempt=1)
    e(1.0, K.ATTEMPT_FAILED, 1, worker=0, attempt=1, info="boom")
    e(1.0, K.RETRY_SCHEDULED, 1, worker=0, attempt=2, value=5.0)
    e(2.0, K.PHASE, info="closing")
    e(3.0, K.PHASE, info="deadline")
    e(3.0, K.CANCELLED, 1, worker=0, attempt=1, info="awaiting-retry")
    e(3.0, K.CANCELLED, 2, worker=1, attempt=1, info="interrupted")
    e(3.0, K.CANCELLED, 3, info="never-started", value=0)
    ax = plot_shutdown_timeline(trace)
    assert ytick_labels(ax) == ["worker 0", "worker 1", "queue"]
    assert (_marker_at(ax, 3.0, 0), _marker_at(ax, 3.0, 1), _marker_at(ax, 3.0, 2)) == (
        "D", "s", "v")
    # Every cancel marker in the cancelled colour; the shape, not the colour, tells the reason.
    grey = matplotlib.colors.to_rgba(STATUS_COLOURS["cancelled"])
    for c in ax.collections:
        if isinstance(c, PathCollection):
            assert tuple(c.get_facecolor()[0]) == grey
    # The backoff pause: from the failed attempt's end to the cut, on the worker's row.
    (pause,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert [seg.tolist() for seg in pause.get_segments()] == [[[1.0, 0.0], [3.0, 0.0]]]
    assert legend_texts(ax) == [
        "attempt failed", "attempt cancelled", "backoff pause",
        "job cancelled: interrupted", "job cancelled: awaiting retry",
        "job cancelled: never started", "shutdown phase",
    ]
    legend = ax.get_legend()
    assert legend is not None
    assert [h.get_marker() for h in legend.legend_handles if isinstance(h, Line2D)
            and h.get_linestyle() == "None"] == ["s", "D", "v"]


def test_retry_timeline_has_a_row_per_retried_job() -> None:
    trace = shutdown_run()
    for event in busy_run():  # job ids 1..4 again: shift them to 11..14, 10 s later
        trace.emit(event.t + 10, event.kind, (event.job or 0) + 10, worker=event.worker,
                   attempt=event.attempt, info=event.info, value=event.value)
    ax = plot_retry_timeline(trace)
    assert ax.get_title() == "How did retries play out?"
    assert ax.get_xlabel() == "time (virtual s)"
    assert ytick_labels(ax) == ["job 2", "job 13"]
    assert len(bars(ax)) == 3  # job 2: two attempts; job 13: one
    gaps = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(gaps) == 1 and len(gaps[0].get_segments()) == 1  # job 2's backoff
    assert "#1" in texts(ax) and "#2" in texts(ax)
    assert legend_texts(ax) == [
        "attempt failed", "attempt dead-lettered", "attempt cancelled",
        "backoff pause", "gave up (dead letter)", "cancelled by shutdown",
    ]


def test_retry_timeline_without_retries_says_so() -> None:
    trace = Trace()
    trace.emit(0.0, K.ENQUEUED, 1, info="io", value=1)
    ax = plot_retry_timeline(trace)
    assert texts(ax) == ["no job was retried or dead-lettered"]
    assert ax.get_legend() is None


def test_cpu_offload_compares_lag_per_mode_on_a_log_axis() -> None:
    lags = {"inline": [50.0, 80.0, 120.0], "threads": [1.0, 2.0, 3.0], "processes": [0.0, 0.2]}
    ax = plot_cpu_offload(lags)
    assert ax.get_title() == "Does CPU work starve the event loop?"
    assert ax.get_ylabel() == "event-loop lag (ms)"
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["inline", "threads", "processes"]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(np.asarray(c.get_offsets())) for c in dots] == [3, 3, 2]
    # A 0 ms lag cannot sit on a log axis: it is drawn at the floor, not lost.
    assert np.asarray(dots[2].get_offsets())[:, 1].min() > 0
    assert texts(ax)[0] == "median\n80.0 ms"
    # An even count is labelled with the median the box draws, not the upper middle sample.
    even = plot_cpu_offload({"inline": [50.0, 80.0, 120.0, 400.0]})
    assert texts(even)[0] == "median\n100 ms"
    with pytest.raises(ValueError, match="threads"):
        plot_cpu_offload({"threads": []})


def test_dashboard_has_four_panels_and_the_key_numbers() -> None:
    trace = busy_run()
    metrics = metrics_from_trace(trace, workers=2)
    fig = plot_dashboard(trace, metrics, workers=2, capacity=1)
    assert isinstance(fig, Figure)
    suptitle = fig.get_suptitle()
    assert suptitle == "How did the run go?"
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "Who ran what, when?", "When did the producer wait?",
        "How long did jobs take?", "What are the key numbers?",
    ]
    latency_ax = fig.axes[2]
    assert latency_ax.get_xlabel() == "latency, enqueue to end (virtual s)"
    assert legend_texts(latency_ax) == ["p50 2.25 s", "p95 2.92 s", "p99 2.98 s"]
    table = fig.axes[3].tables[0]
    cells = {table[r, 0].get_text().get_text(): table[r, 1].get_text().get_text()
             for r in range(1, 12)}
    assert cells["workers"] == "2"
    assert cells["throughput (jobs/s)"] == "1.00"
    assert cells["worker utilisation (%)"] == "81.2"


def _hatched(ax: Axes) -> list[tuple[float, float]]:
    return [(r.get_x(), r.get_width()) for r in bars(ax) if r.get_hatch()]


def test_failed_attempts_are_hatched_and_backoff_pauses_drawn_where_the_worker_waits() -> None:
    # Job 2 fails on worker 1 at 1.2, waits 0.5 s, and its second attempt starts at 1.7.
    ax = plot_concurrency_trace(shutdown_run())
    assert _hatched(ax) == [(0.0, 1.2)]  # only the failed attempt
    (pauses,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert [seg.tolist() for seg in pauses.get_segments()] == [[[1.2, 1.0], [1.7, 1.0]]]
    assert "2#2" in texts(ax)  # the retry says which attempt it is
    assert legend_texts(ax) == ["delay", "failed attempt", "backoff pause"]
    legend = ax.get_legend()
    assert legend is not None
    assert [h.get_hatch() for h in legend.legend_handles if isinstance(h, Rectangle)] == [
        None, "////"]
    # The same stripes in the other span plots, where the colour already says "failed".
    assert _hatched(plot_shutdown_timeline(shutdown_run())) == [(0.0, 1.2)]
    assert _hatched(plot_retry_timeline(busy_run())) == [(1.0, 1.5)]  # job 3, dead-lettered
    # And in the dashboard's "who ran what" panel.
    fig = plot_dashboard(shutdown_run(), workers=2)
    assert _hatched(fig.axes[0]) == [(0.0, 1.2)]
    assert "backoff pause" in legend_texts(fig.axes[0])


def test_many_failed_attempts_are_hatched_too() -> None:
    trace = Trace()  # over _PATCH_BARS_UP_TO attempts: drawn as one collection per row
    for job in range(1200):
        trace.emit(job, K.STARTED, job, worker=job % 2, attempt=1)
        if job % 3:
            trace.emit(job + 0.5, K.SUCCEEDED, job, worker=job % 2, attempt=1)
        else:
            trace.emit(job + 0.5, K.ATTEMPT_FAILED, job, worker=job % 2, attempt=1, info="x")
            trace.emit(job + 0.5, K.DEAD_LETTERED, job, worker=job % 2, attempt=1, info="x")
    ax = plot_concurrency_trace(trace)
    hatches = [c.get_hatch() for c in ax.collections if isinstance(c, PolyCollection)]
    assert sorted(hatches, key=str) == ["////", "////", None, None]  # per row: ok, failed


def test_real_time_is_drawn_from_the_start_of_the_run_and_virtual_time_as_it_is() -> None:
    def run(clock: Literal["real", "virtual"], t0: float) -> Trace:
        trace = Trace()
        trace.header = TraceHeader(clock=clock, t0=t0, workers=2)
        emit_two_workers(trace)  # at 0 .. 4: move it to t0 + 0.5 ..
        trace.events = [dataclasses.replace(e, t=e.t + t0 + 0.5) for e in trace.events]
        return trace

    real = plot_concurrency_trace(run("real", 1668.0))
    assert real.get_xlabel() == "time (s)"  # the header says which clock
    assert sorted(b.get_x() for b in bars(real)) == [0.5, 0.5, 1.5, 2.5]  # not 1668.5 ...
    virtual = plot_concurrency_trace(run("virtual", 5.0))
    assert virtual.get_xlabel() == "time (virtual s)"
    assert sorted(b.get_x() for b in bars(virtual)) == [5.5, 5.5, 6.5, 7.5]  # untouched
    # Without a header, virtual=False measures from the first event.
    events = list(run("real", 1668.0))
    assert sorted(b.get_x() for b in bars(plot_concurrency_trace(events, virtual=False))) == [
        0.0, 0.0, 1.0, 2.0]
    queue = plot_backpressure(run("real", 1668.0))
    depth = queue.get_lines()[0]
    assert np.asarray(depth.get_xdata())[0] == 0.5


def test_plots_of_an_empty_trace_say_there_is_nothing() -> None:
    assert texts(plot_concurrency_trace(Trace())) == ["no attempts in this trace"]
    assert texts(plot_backpressure(Trace())) == ["no queue events in this trace"]


def test_importing_jobq_loads_no_pyplot() -> None:
    # pyplot binds figures to a backend; only a plot call should bring it in.
    code = "import sys, jobq, jobq.plotting; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_function_named_kind_gets_its_own_colour_the_same_every_time() -> None:
    from jobq.plotting import FUNCTION_COLOURS, KIND_COLOURS, colour_of_kind

    assert colour_of_kind("cpu") == KIND_COLOURS["cpu"]
    fetch, crunch = colour_of_kind("fetch"), colour_of_kind("crunch")
    assert {fetch, crunch} <= set(FUNCTION_COLOURS) and fetch != crunch
    assert colour_of_kind("fetch") == fetch  # a checksum of the name, not the call order
