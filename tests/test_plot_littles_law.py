"""plot_littles_law: L(t), its time average and λ·W - checked on a trace written by hand."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib
import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from jobq.metrics import metrics_from_trace
from jobq.plotting import plot_littles_law
from jobq.trace import EventKind, Trace

from .helpers import emit_two_workers

matplotlib.use("Agg")  # no window, whatever MPLBACKEND says


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def two_workers() -> Trace:
    """4 jobs on 2 workers (tests/helpers.py): in the system 3 on [0, 2), 2 on [2, 2.5),
    1 on [2.5, 4); latencies 1, 2, 2.5, 3 - area 8.5 over 4 s, so L = 2.125 = 1/s x 2.125 s."""
    trace = Trace()
    emit_two_workers(trace)
    return trace


def hlines(ax: Axes) -> list[tuple[float, float, float]]:
    """(y, x from, x to) of every horizontal segment drawn with ax.hlines."""
    out = []
    for collection in ax.collections:
        assert isinstance(collection, LineCollection)
        for segment in collection.get_segments():
            (x0, y0), (x1, y1) = segment
            assert y0 == y1, f"not horizontal: {segment}"
            out.append((float(y0), float(x0), float(x1)))
    return out


def test_l_of_t_steps_up_at_each_enqueue_and_down_at_each_end() -> None:
    ax = plot_littles_law(two_workers())
    assert ax.get_title() == "Does Little's law hold? (L = λ·W)"
    assert ax.get_xlabel() == "time (virtual s)"
    assert ax.get_ylabel() == "jobs in the system"
    (line,) = [a for a in ax.lines if isinstance(a, Line2D)]
    # The data before drawstyle: one point per change (ties at t=0 and t=1 kept in order).
    xs, ys = line.get_data(orig=True)
    assert list(xs) == [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.5, 4.0], list(xs)
    assert list(ys) == [1, 2, 3, 2, 3, 2, 1, 0], list(ys)
    assert line.get_drawstyle() == "steps-post"


def test_time_average_and_lambda_w_are_two_lines_over_the_window_that_agree() -> None:
    trace = two_workers()
    metrics = metrics_from_trace(trace, workers=2)
    ax = plot_littles_law(trace, metrics)
    (average, lam_w) = hlines(ax)
    assert average == pytest.approx((2.125, 0.0, 4.0)), average  # 8.5 job-seconds / 4 s
    assert lam_w == pytest.approx((2.125, 0.0, 4.0)), lam_w  # 1 job/s x 2.125 s
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "L(t): jobs in the system",
        "time average of L(t) = 2.12 jobs",
        "λ·W = 1.00 jobs/s × 2.12 s = 2.12 jobs",
    ]


def test_metrics_left_out_are_computed_from_the_trace() -> None:
    trace = two_workers()
    with_metrics = hlines(plot_littles_law(trace, metrics_from_trace(trace, workers=2)))
    without = hlines(plot_littles_law(trace))
    assert without == with_metrics, (without, with_metrics)


def test_a_window_cut_mid_run_shows_the_gap() -> None:
    # Up to t=2 only: jobs 3 and 4 are still in the system at the window's end, so the time
    # average (3 jobs all the time: area 6 / 2 s = 3) counts their time, but W (jobs 1 and 2
    # only: mean 1.5 s) and λ (2 ended / 2 s) do not: λ·W = 1.5. Two lines, apart.
    cut = Trace()
    for event in two_workers():
        if event.t <= 2.0:
            cut.emit(event.t, event.kind, event.job, worker=event.worker,
                     attempt=event.attempt, info=event.info, value=event.value)
    ax = plot_littles_law(cut)
    (average, lam_w) = hlines(ax)
    assert average == pytest.approx((3.0, 0.0, 2.0)), average
    assert lam_w == pytest.approx((1.5, 0.0, 2.0)), lam_w


def test_real_clock_axis_and_a_trace_where_no_job_ended() -> None:
    trace = Trace()
    trace.emit(0.0, EventKind.ENQUEUED, 1, info="delay", value=1)
    ax = plot_littles_law(trace, virtual=False)
    assert ax.get_xlabel() == "time (s)"
    assert [t.get_text() for t in ax.texts] == ["no job ended"]
    assert hlines(ax) == [], "no lines for a run with nothing ended"
