"""Check cells for the series' exercises: a stub that is not written yet fails as an assertion.

Every exercise in the series is two code cells. The **solution cell** (tagged `solution`)
holds the answer between `### BEGIN SOLUTION` and `### END SOLUTION`; in the student copy
(`python tools/student_copy.py`) that answer is replaced by a *stub* that defines the same
names but raises `NotImplementedError` (or returns nothing useful). The **check cell** after
it (tagged `check`) runs the learner's code and asserts on what it got:

    with exercise("stop_now"):
        pipe4, report4 = await jobq.in_virtual_time(stop_now())
        got = (report4.cancelled_interrupted, report4.cancelled_never_started)
        assert got == (2, 4), f"got interrupted={got[0]}, never-started={got[1]}; want 2 and 4"

Why a context manager: a stub's `NotImplementedError` is not a wrong *answer*, it is a missing
one - and the learner should read "write stop_now() in the cell above", not a traceback
through the pipeline. So `exercise` turns it into an `AssertionError` that says what is
missing. Any other error (a typo, a wrong type) is left as it is: its traceback is the
learner's best clue.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["exercise"]


@contextmanager
def exercise(name: str) -> Iterator[None]:
    """Run a check; a stub's NotImplementedError becomes "write NAME" as an AssertionError."""
    try:
        yield
    except NotImplementedError as stub:
        detail = f" ({stub})" if str(stub) else ""
        raise AssertionError(
            f"{name} is still the stub{detail}: write it in the solution cell above, "
            "then run that cell and this one again"
        ) from None
