"""The progress bar: on in a terminal or notebook, off under tests, never a rate or an ETA."""

from __future__ import annotations

import gc
import io
import sys

import pytest

import jobq
from jobq.progress import BAR_FORMAT, make_progress

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
