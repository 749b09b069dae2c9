"""The trace: every event in order, saved as JSONL and loaded back without changing a thing -
and describing its run, so that the file alone is enough to draw it again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

import jobq
from jobq import (
    Event,
    FailurePlan,
    RetryPolicy,
    Trace,
    TraceHeader,
    plotting,
)
from jobq.testing import delayed_jobs
from jobq.trace import EventKind


def _run() -> jobq.RunResult:
    async def main() -> jobq.RunResult:
        return await jobq.run(
            delayed_jobs([0.5, 1.0, 1.5, 2.0] * 5), workers=3, capacity=4, executor="inline",
            failures=FailurePlan(fail_first={2: 1, 7: 9}), retry=RetryPolicy(base_delay=0.25),
        )

    return jobq.run_virtual(main())


def test_events_are_numbered_in_order_and_stamped_with_loop_time() -> None:
    trace = _run().trace
    assert [e.seq for e in trace] == list(range(len(trace)))
    times = [e.t for e in trace]
    assert times == sorted(times)  # virtual time never runs backwards
    assert {e.kind for e in trace} >= {EventKind.ENQUEUED, EventKind.DISPATCHED,
                                       EventKind.STARTED, EventKind.SUCCEEDED,
                                       EventKind.RETRY_SCHEDULED, EventKind.DEAD_LETTERED,
                                       EventKind.PHASE}


def _bars(ax: plt.Axes) -> list[tuple[float, float, float, float]]:
    return [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches]


def test_a_loaded_trace_gives_the_same_events_metrics_and_plots(tmp_path: Path) -> None:
    result = _run()
    path = tmp_path / "run.jsonl"
    result.trace.to_jsonl(path)
    loaded = Trace.from_jsonl(path)
    assert loaded.events == result.trace.events
    assert loaded.header == result.trace.header is not None
    assert jobq.metrics_from_trace(loaded, workers=3) == result.metrics
    for draw in (plotting.plot_concurrency_trace, plotting.plot_retry_timeline,
                 plotting.plot_shutdown_timeline):
        live_ax, loaded_ax = draw(result.trace), draw(loaded)
        assert _bars(live_ax) == _bars(loaded_ax) and _bars(live_ax), draw.__name__
        plt.close("all")


def test_a_streamed_trace_keeps_nothing_in_memory_but_writes_everything(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"

    async def main() -> jobq.Pipeline:
        pipe = jobq.Pipeline(workers=2, executor="inline", trace=Trace(keep=False, path=path),
                             keep_results=False)
        async with pipe:
            await pipe.submit_many(delayed_jobs([1.0] * 30))
        return pipe

    pipe = jobq.run_virtual(main())
    assert len(pipe.trace) == 0 and pipe.results == []
    written = Trace.from_jsonl(path)
    assert len(written.of_kind(EventKind.SUCCEEDED)) == 30
    assert jobq.metrics_from_trace(written, workers=2) == pipe.metrics()
    # The file begins with its header, written when the pipeline started.
    first = json.loads(path.read_text().splitlines()[0])
    assert first["jobq_trace"] == 1 and first["workers"] == 2 and "kind" not in first
    assert written.header == pipe.trace.header is not None


def test_emit_takes_the_fields_after_the_job_by_name() -> None:
    trace = Trace()
    trace.emit(1.0, EventKind.RETRY_SCHEDULED, 7, worker=0, attempt=2, value=0.5)
    trace.emit(1.5, EventKind.PHASE, info="closing")
    assert trace.events == [Event(0, 1.0, EventKind.RETRY_SCHEDULED, 7, 0, 2, None, 0.5),
                            Event(1, 1.5, EventKind.PHASE, None, None, None, "closing", None)]
    with pytest.raises(TypeError, match="positional"):
        trace.emit(2.0, EventKind.STARTED, 7, 0, 1)  # type: ignore[call-arg]


# -- the trace describes its run ----------------------------------------------------------


def test_a_pipeline_describes_its_run_in_the_header() -> None:
    async def main() -> Trace:
        assert isinstance(asyncio.get_running_loop(), jobq.VirtualTimeLoop)
        await asyncio.sleep(5)  # the run starts 5 virtual seconds in
        async with jobq.Pipeline(workers=3, capacity=4, executor="inline",
                                 failures=FailurePlan(fail_rate=0.1, seed=42)) as pipe:
            await pipe.submit_many(delayed_jobs([1.0] * 3))
        return pipe.trace

    header = jobq.run_virtual(main()).header
    assert isinstance(header, TraceHeader)
    assert (header.clock, header.virtual, header.t0) == ("virtual", True, 5.0)
    assert (header.workers, header.capacity, header.executor, header.seed) == (
        3, 4, "inline", 42)
    assert header.jobq_version == jobq.__version__
    assert header.started_at is not None and header.started_at.endswith("+00:00")

    async def real() -> TraceHeader | None:
        async with jobq.Pipeline(workers=1, executor="thread") as pipe:
            await pipe.submit(jobq.Job(1, b"", jobq.Delayed(0)))
        return pipe.trace.header

    on_real_time = asyncio.run(real())
    assert on_real_time is not None
    assert (on_real_time.clock, on_real_time.virtual, on_real_time.executor) == (
        "real", False, "thread")
    assert on_real_time.seed is None  # no FailurePlan given: nothing random to seed


def test_describe_fills_in_only_what_the_header_lacks(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    trace = Trace(path=path)
    assert trace.header is None
    mine = trace.describe(seed=7)  # e.g. the seed that made the jobs, before the run
    assert (mine.seed, mine.workers, mine.jobq_version) == (7, None, jobq.__version__)
    full = trace.describe(clock="real", t0=3.0, workers=2, seed=1)
    assert (full.seed, full.workers, full.clock, full.started_at) == (7, 2, "real",
                                                                       mine.started_at)
    assert trace.describe(workers=5) is full  # nothing new: the same header, no new line
    trace.close()
    assert Trace.from_jsonl(path).header == full  # the last header line is the fullest
    assert len(path.read_text().splitlines()) == 2


def test_a_file_without_a_header_still_loads_and_plots(tmp_path: Path) -> None:
    # Trace files written before headers existed: events only.
    result = _run()
    path = tmp_path / "old.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in result.trace))
    old = Trace.from_jsonl(path)
    assert old.header is None and old.events == result.trace.events
    fig = plotting.plot_dashboard(old)  # workers: the slots seen in it; time: virtual
    cells = {row[0].get_text(): row[1].get_text() for row in _table_rows(fig)}
    assert cells["workers (seen in the trace)"] == "3"
    assert fig.axes[0].get_xlabel() == "time (virtual s)"
    plt.close("all")


def _table_rows(fig: Figure) -> list[list[Text]]:
    table = fig.axes[3].tables[0]
    rows = max(r for r, _ in table.get_celld()) + 1
    return [[table[r, 0].get_text(), table[r, 1].get_text()] for r in range(1, rows)]


def test_a_real_time_run_saved_and_loaded_plots_from_its_start_with_no_other_arguments(
    tmp_path: Path,
) -> None:
    # On the real clock event times are the loop's monotonic time (1668.0 s, say). The
    # header says "real" and when the run started: the plots count seconds from there.
    result = asyncio.run(jobq.run(
        delayed_jobs([0.05] * 6), workers=2, capacity=3, executor="inline",
        failures=FailurePlan(fail_first={1: 1}), retry=RetryPolicy(base_delay=0.05)))
    path = tmp_path / "real.jsonl"
    result.trace.to_jsonl(path)
    loaded = Trace.from_jsonl(path)
    assert loaded.header is not None and loaded.header.clock == "real"
    fig = plotting.plot_dashboard(loaded)
    who, queue, latency = fig.axes[0], fig.axes[1], fig.axes[2]
    assert who.get_xlabel() == queue.get_xlabel() == "time (s)"
    assert latency.get_xlabel().endswith("(ms)")  # not "virtual ms"
    starts = [bar.get_x() for bar in who.patches if isinstance(bar, Rectangle)]
    assert starts and min(starts) >= 0 and max(starts) < 5  # seconds since the start
    assert 3 in [np.asarray(line.get_ydata())[0] for line in queue.get_lines()]  # capacity
    cells = {row[0].get_text(): row[1].get_text() for row in _table_rows(fig)}
    assert (cells["workers"], cells["executor / clock"]) == ("2", "inline / real")
    plt.close("all")
