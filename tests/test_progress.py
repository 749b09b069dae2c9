"""The progress bar: on in a terminal or notebook, off under tests, never a rate or an ETA."""

from __future__ import annotations

import io

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
