"""Progress while jobs run: a widget bar in Jupyter, a text bar in a terminal, or nothing.

We use tqdm (tqdm.auto picks the widget or the text bar). The bar shows a count and a
percentage but no rate or time estimate: those change every run, and notebooks are
committed with their outputs (nbval compares them), so they would break the comparison.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

__all__ = ["Progress", "make_progress"]

# No {rate} / {elapsed} / {remaining}: see the module docstring.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}"


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def make_progress(enabled: bool | None, total: int | None, desc: str = "jobs") -> Progress:
    """A progress bar, or a do-nothing stand-in when disabled.

    `enabled=None` means "when it helps": on, except under pytest.
    """
    if enabled is None:
        enabled = "PYTEST_CURRENT_TEST" not in os.environ
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    bar_format = BAR_FORMAT if total is not None else "{desc}: {n_fmt}"
    bar: Progress = tqdm(total=total, desc=desc, bar_format=bar_format, leave=True,
                         dynamic_ncols=True)
    return bar
