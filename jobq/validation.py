"""Checks for settings: a handful of small, reusable checks, and the only place they live.

The problem: a setting of the wrong type does not fail where it was written. Unchecked,
`retry=3` breaks a worker in the middle of a job, `failures="x"` quietly dead-letters every
job, `drain_timeout=True` is taken for one second, and `drain_timeout="5"` raises a TypeError
from deep inside shutdown - far from the line that caused it. So every public setting is
checked when its object is built, by one of the checks below, and the error names the
setting and shows the value:

    count("Pipeline.workers", True)
    # InvalidConfigError: Pipeline.workers must be an int, got True (bool)

Each check returns the value it was given, unchanged. The rules they share:

* `bool` is an `int` in Python, but `workers=True` or `drain_timeout=True` is a mistake,
  not 1: a bool is only accepted where a bool is asked for (`flag`, or `instance(..., bool)`).
* NaN is refused wherever a number is (`not value >= 0` is true for NaN; `value < 0` is not).
* The value is shown with its type when the type is what is wrong (`got '5' (str)`), and
  shortened when it is long (an int of 400 digits is shown by its number of digits).

Checks raise `InvalidConfigError`; pass `error=InvalidJobError` to check a job's field.
(This is the counterpart of attrs' `validators` module: `instance_of`, `in_`, ranges.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import TypeVar

from jobq.errors import InvalidConfigError, JobqError

__all__ = ["count", "flag", "function", "instance", "number", "one_of", "seconds", "shown"]

T = TypeVar("T")
Error = Callable[[str], JobqError]  # InvalidConfigError or InvalidJobError

_SHOWN_CHARS = 60  # a longer repr is cut in the middle


def shown(value: object) -> str:
    """`value` as an error message shows it: its repr, shortened if long."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 192:
        # A huge int: show how big it is. (Past 4300 digits Python even refuses to print it.)
        try:
            digits = str(abs(value))
        except ValueError:
            about = math.floor(value.bit_length() * math.log10(2)) + 1  # or one too many
            return f"{'-' if value < 0 else ''}<an int of about {about} digits>"
        return f"{'-' if value < 0 else ''}{digits[:10]}... (an int of {len(digits)} digits)"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the error we are about to raise
        return f"<a {type(value).__name__} that cannot be shown>"
    if len(text) > _SHOWN_CHARS:
        text = f"{text[:_SHOWN_CHARS - 15]}...{text[-10:]}"
    return text


def _typed(value: object) -> str:
    """`value` shown with its type, for a check whose complaint is the type."""
    if isinstance(value, type):  # `retry=RetryPolicy`: the class, where an instance belongs
        return f"the class {value.__name__} itself (not an instance of it)"
    return f"{shown(value)} ({type(value).__name__})"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _or_none(rule: str, allow_none: bool) -> str:
    return f"{rule} or None" if allow_none else rule


def count(
    name: str,
    value: T,
    *,
    minimum: int = 1,
    allow_none: bool = False,
    error: Error = InvalidConfigError,
) -> T:
    """A whole number >= `minimum` (workers, capacity, retries, a size in bytes)."""
    if value is None and allow_none:
        return value
    if not _is_int(value):
        raise error(f"{name} must be {_or_none('an int', allow_none)}, got {_typed(value)}")
    assert isinstance(value, int)  # for the type checker: _is_int said so
    if value < minimum:
        raise error(f"{name} must be >= {minimum}, got {shown(value)}")
    return value


def seconds(
    name: str,
    value: T,
    *,
    positive: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
    error: Error = InvalidConfigError,
) -> T:
    """A duration: a number >= 0 (> 0 if `positive`), finite unless `allow_inf` (math.inf
    then means "no limit"). Whole numbers too big for a float are refused as infinite."""
    if value is None and allow_none:
        return value
    if not _is_number(value):
        rule = _or_none("a number of seconds", allow_none)
        raise error(f"{name} must be {rule}, got {_typed(value)}")
    assert isinstance(value, int | float)
    # Written as `not value > 0` (rather than `value <= 0`) so that NaN is refused too.
    if positive and not value > 0:
        raise error(f"{name} must be > 0 seconds, got {shown(value)}")
    if not value >= 0:
        raise error(f"{name} must be >= 0 seconds, got {shown(value)}")
    # math.inf may mean "no limit"; an int too large for a float means nothing.
    if not _finite(value) and not (allow_inf and isinstance(value, float)):
        rule = "a finite number of seconds" + (
            " or math.inf" if allow_inf else " or None" if allow_none else ""
        )
        raise error(f"{name} must be {rule}, got {shown(value)}")
    return value


def number(
    name: str,
    value: T,
    *,
    minimum: float,
    maximum: float = math.inf,
    error: Error = InvalidConfigError,
) -> T:
    """A finite number between `minimum` and `maximum` (a factor, a probability)."""
    if not _is_number(value):
        raise error(f"{name} must be a number, got {_typed(value)}")
    assert isinstance(value, int | float)
    if not (minimum <= value <= maximum and _finite(value)):  # NaN fails every comparison
        rule = (f"between {minimum:g} and {maximum:g}" if math.isfinite(maximum)
                else f"a finite number >= {minimum:g}")
        raise error(f"{name} must be {rule}, got {shown(value)}")
    return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def flag(name: str, value: T, *, allow_none: bool = False) -> T:
    """True or False (a truthy string such as "no" is not a yes)."""
    if isinstance(value, bool) or (value is None and allow_none):
        return value
    rule = "True, False or None" if allow_none else "True or False"
    raise InvalidConfigError(f"{name} must be {rule}, got {_typed(value)}")


def instance(
    name: str,
    value: T,
    *types: type,
    allow_none: bool = False,
    error: Error = InvalidConfigError,
) -> T:
    """An instance of one of `types` (a class itself is refused: `retry=RetryPolicy` is a
    forgotten `()`). An int type does not admit a bool unless bool is listed too."""
    if value is None and allow_none:
        return value
    if isinstance(value, types) and (bool in types or not isinstance(value, bool)):
        return value
    names = [_a(t.__name__) for t in types] + (["None"] if allow_none else [])
    raise error(f"{name} must be {_alternatives(names)}, got {_typed(value)}")


def one_of(name: str, value: T, choices: Collection[str], *types: type) -> T:
    """One of the strings in `choices`, or an instance of one of `types`."""
    if (isinstance(value, str) and value in choices) or isinstance(value, types):
        return value
    names = [repr(choice) for choice in choices] + [_a(t.__name__) for t in types]
    raise InvalidConfigError(f"{name} must be {_alternatives(names)}, got {_typed(value)}")


def function(name: str, value: T) -> T:
    """Something callable (a class is callable too, and fine: it makes its result)."""
    if callable(value):
        return value
    raise InvalidConfigError(f"{name} must be a function, got {_typed(value)}")


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'AEIOUaeiou' else 'a'} {noun}"


def _alternatives(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
