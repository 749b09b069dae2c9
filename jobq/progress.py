"""Progress while jobs run: a widget bar in Jupyter, a text bar in a terminal, or nothing.

We use tqdm (tqdm.auto picks the widget or the text bar). The bar shows a count and a
percentage but no rate or time estimate: those change every run, and notebooks are
committed with their outputs (nbval compares them), so they would break the comparison.

A bar never raises. It is a courtesy to whoever watches, and it draws on stderr, which may
be closed (`2>&-`, as cron may start a command) or lead to a reader that has gone (a broken
pipe). The collector advances it in the middle of its bookkeeping, so an error from a bar
would crash the pipeline and cost the run. Instead, a bar that cannot write switches itself
off for good, and the run goes on without it.
"""

from __future__ import annotations

import os
import sys
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


class _SwitchesOff:
    """A tqdm bar whose first failure to draw turns it into a _NoProgress.

    Any exception counts, not only OSError: a bar has no result to protect, and the reasons a
    stream fails are many (EPIPE, EIO, "I/O operation on closed file", a stream replaced by
    None). Nothing is reported: the only place to report it is the stream that just failed.
    """

    def __init__(self, bar: Any) -> None:
        self._bar: Any = bar

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            try:
                self._bar.update(n)
            except Exception:  # any failure: see the class docstring
                self._switch_off()

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            try:
                bar.close()
            except Exception:  # any failure: see the class docstring
                bar.disable = True

    def _switch_off(self) -> None:
        bar, self._bar = self._bar, None
        # tqdm's own close() - and its __del__, which calls close() - would draw the final bar
        # on the same broken stream; a disabled tqdm draws nothing, ever.
        bar.disable = True


def make_progress(enabled: bool | None, total: int | None, desc: str = "jobs") -> Progress:
    """A progress bar, or a do-nothing stand-in when disabled or when stderr is closed.

    `enabled=None` means "when it helps": on, except under pytest. The bar never raises: if
    it cannot draw, it switches itself off (see the module docstring).
    """
    if enabled is None:
        enabled = "PYTEST_CURRENT_TEST" not in os.environ
    if not enabled or sys.stderr is None:  # None: started with stderr closed - nowhere to draw
        return _NoProgress()
    from tqdm.auto import tqdm

    bar_format = BAR_FORMAT if total is not None else "{desc}: {n_fmt}"
    try:
        # Draws the empty bar at once: the first write may fail already.
        bar = tqdm(total=total, desc=desc, bar_format=bar_format, leave=True,
                   dynamic_ncols=True)
    except Exception:  # any failure: see _SwitchesOff
        return _NoProgress()
    return _SwitchesOff(bar)
