"""The progress bars: the pipeline's (on in a terminal or notebook, off under tests, never a
rate or an ETA: notebooks store it) and the command line's (a terminal's: rate, elapsed time,
and counts such as retries and dead letters)."""

from __future__ import annotations

import gc
import io
import sys

import pytest

import jobq
from jobq.progress import BAR_FORMAT, make_progress, make_terminal_progress

from .helpers import delayed_jobs


def test_progress_is_off_under_pytest_unless_asked() -> None:
    bar = make_progress(None, total=10)
    assert type(bar).__name__ == "_NoProgress"
    bar.update(3)  # harmless
    bar.close()


def test_progress_bar_shows_counts_but_no_rate_or_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    for banned in ("rate", "elapsed", "remaining"):
        assert banned not in BAR_FORMAT
    import tqdm.auto

    out = io.StringIO()
    real_tqdm = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda **kw: real_tqdm(file=out, **kw))
    bar = make_progress(True, total=4)
    bar.update(4)
    bar.close()
    text = out.getvalue()
    assert "4/4" in text and "100%" in text
    assert "it/s" not in text and "<" not in text  # no rate, no "elapsed<remaining"


@pytest.mark.virtual_time
async def test_pipeline_advances_the_bar_once_per_job(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []

    class Recorder:
        def update(self, n: int = 1) -> None:
            counts.append(n)

        def close(self) -> None:
            counts.append(-1)

    monkeypatch.setattr("jobq.pipeline.make_progress", lambda enabled, total: Recorder())
    result = await jobq.run(delayed_jobs([0.5] * 12), workers=3, executor="inline")
    assert sum(c for c in counts if c > 0) == 12 == result.report.succeeded
    assert counts[-1] == -1  # closed at shutdown


class _Stream(io.StringIO):
    """stderr whose reader can go away: once `broken`, every write and flush fails."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.calls_after_break = 0

    def write(self, text: str) -> int:
        self._check()
        return super().write(text)

    def flush(self) -> None:
        self._check()

    def _check(self) -> None:
        if self.broken:
            self.calls_after_break += 1
            raise BrokenPipeError(32, "Broken pipe")


def test_progress_switches_itself_off_when_its_output_breaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tqdm.auto

    stream = _Stream()
    monkeypatch.setattr(sys, "stderr", stream)
    real_tqdm = tqdm.auto.tqdm
    # mininterval=0: every update draws, so the very next one meets the broken stream.
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda **kw: real_tqdm(mininterval=0, **kw))
    bar = make_progress(True, total=10)
    assert "0/10" in stream.getvalue()
    stream.broken = True  # `| head` has what it wanted, a terminal closed, ...
    for _ in range(10):
        bar.update(1)  # never raises
    bar.close()
    del bar
    gc.collect()  # tqdm's __del__ must not try again either
    assert stream.calls_after_break == 1  # one failed write, then it stayed off


def test_progress_with_stderr_closed_draws_nothing_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", None)  # `2>&-`: Python then starts with stderr None
    bar = make_progress(True, total=3)
    bar.update(3)
    bar.close()


def test_progress_that_cannot_even_start_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Stream()
    stream.broken = True
    monkeypatch.setattr(sys, "stderr", stream)
    bar = make_progress(True, total=3)  # drawing the empty bar fails already
    bar.update(3)
    bar.close()
    assert type(bar).__name__ == "_NoProgress"


# -- the command line's bar --------------------------------------------------------------


@pytest.mark.parametrize(("total", "drawn"), [(4, "4/4"), (None, "jobs: 4 ")])
def test_terminal_bar_shows_rate_elapsed_and_counts(
    total: int | None, drawn: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    bar = make_terminal_progress(True, total=total)
    bar.set_counts(retries=0, dead=0)
    bar.update(3)
    bar.set_counts(retries=2, dead=1)  # shown from the next frame on: close() draws it
    bar.update(1)
    bar.close()
    last = stream.getvalue().split("\r")[-1]
    assert drawn in last and "jobs/s" in last and "00:00" in last, last
    assert last.rstrip().endswith(", retries=2 dead=1]"), last


def test_terminal_bar_shows_a_slow_rate_in_jobs_per_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tqdm.std

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    clock = iter(range(0, 1000, 4))  # 4 s between reads of tqdm's clock: 0.25 jobs/s at most
    monkeypatch.setattr(tqdm.std, "time", lambda: float(next(clock)))
    bar = make_terminal_progress(True, total=4)
    bar.update(1)
    bar.close()
    last = stream.getvalue().split("\r")[-1]
    assert " jobs/s" in last and "s/ jobs" not in last, last


def test_terminal_bar_is_never_the_notebook_widget(monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm.auto

    def widget(**kwargs: object) -> None:
        raise AssertionError("the command line's bar must not come from tqdm.auto")

    monkeypatch.setattr(tqdm.auto, "tqdm", widget)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    make_terminal_progress(True, total=1).close()


def test_terminal_bar_off_or_without_stderr_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    off = make_terminal_progress(False, total=3)
    off.set_counts(retries=1)
    off.update(3)
    off.close()
    assert stream.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", None)  # `2>&-`
    closed = make_terminal_progress(True, total=3)
    closed.set_counts(retries=1)
    closed.update(3)
    closed.close()
    assert type(off).__name__ == type(closed).__name__ == "_NoProgress"


def test_terminal_bar_counts_on_a_broken_stream_switch_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tqdm

    stream = _Stream()
    monkeypatch.setattr(sys, "stderr", stream)
    real_tqdm = tqdm.tqdm
    monkeypatch.setattr(tqdm, "tqdm", lambda **kw: real_tqdm(mininterval=0, **kw))
    bar = make_terminal_progress(True, total=10)
    stream.broken = True
    for count in range(10):
        bar.set_counts(retries=count, dead=0)  # never raises
        bar.update(1)
    bar.close()
    del bar
    gc.collect()
    assert stream.calls_after_break == 1  # one failed write, then it stayed off
