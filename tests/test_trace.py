"""The trace: every event in order, saved as JSONL and loaded back without changing a thing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import jobq
from jobq import (
    FailurePlan,
    RetryPolicy,
    Trace,
    plotting,
)
from jobq.trace import EventKind

from .helpers import delayed_jobs


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
