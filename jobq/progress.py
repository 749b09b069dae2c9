"""Progress while jobs run: a widget bar in Jupyter, a text bar in a terminal, or nothing.

We use tqdm. Two bars:

* `make_progress` - the Pipeline's bar (tqdm.auto picks the widget or the text bar). It shows
  a count and a percentage but no rate or time estimate: those change every run, and
  notebooks are committed with their outputs (nbval compares them), so they would break the
  comparison.
* `make_terminal_progress` - the command line's bar (`jobq run`), drawn on stderr only when
  that is a terminal (or when asked with `--progress`). Nothing of it is stored, so it shows
  what a person watching wants: elapsed time, rate, time left when the total is known, and
  counts such as retries and dead letters (`set_counts`).

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

__all__ = ["CountingProgress", "Progress", "make_progress", "make_terminal_progress"]

# No {rate} / {elapsed} / {remaining}: see the module docstring.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}"
# The command line's bar, in a terminal only (see the module docstring). {postfix} is
# ", retries=3 dead=1" once set_counts() was called. {rate_noinv_fmt}: always "0.40 jobs/s"
# ({rate_fmt} turns slow rates into "2.50s/ jobs").
TERMINAL_BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                       "[{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]")
TERMINAL_COUNT_FORMAT = "{desc}: {n_fmt} [{elapsed}, {rate_noinv_fmt}{postfix}]"


class Progress(Protocol):
    """What the pipeline's collector needs: one update per job that ended, then close."""

    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


class CountingProgress(Progress, Protocol):
    """A bar that also shows named counts next to the bar: `set_counts(retries=3, dead=1)`
    shows "retries=3 dead=1" from the next time it draws (an update, or close)."""

    def set_counts(self, **counts: int) -> Any: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        return None

    def set_counts(self, **counts: int) -> None:
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

    def set_counts(self, **counts: int) -> None:
        if self._bar is not None:
            text = " ".join(f"{name}={count}" for name, count in counts.items())
            try:
                # Not drawn now: the next update draws it, at most every tqdm's mininterval
                # (a count may change with every event of a big run), and close() draws
                # the last counts.
                self._bar.set_postfix_str(text, refresh=False)
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


def make_terminal_progress(enabled: bool, total: int | None,
                           desc: str = "jobs") -> CountingProgress:
    """The command line's text bar on stderr, with elapsed time, rate and counts (see the
    module docstring), or a do-nothing stand-in when disabled or when stderr is closed.

    The caller decides when it is on (`jobq run`: when stderr is a terminal). Always tqdm's
    text bar, never the notebook widget; like make_progress's bar it never raises.
    """
    if not enabled or sys.stderr is None:
        return _NoProgress()
    from tqdm import tqdm

    bar_format = TERMINAL_BAR_FORMAT if total is not None else TERMINAL_COUNT_FORMAT
    try:
        bar = tqdm(total=total, desc=desc, bar_format=bar_format, unit=" jobs", leave=True,
                   dynamic_ncols=True, file=sys.stderr)
    except Exception:  # any failure: see _SwitchesOff
        return _NoProgress()
    return _SwitchesOff(bar)
