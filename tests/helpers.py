"""Small helpers the tests share: building jobs and reading concurrency off a trace."""

from __future__ import annotations

from jobq import Delayed, Job, Trace
from jobq.trace import FINAL_KINDS, EventKind


def delayed_jobs(delays: list[float], start_id: int = 0) -> list[Job]:
    return [Job(start_id + i, b"payload", Delayed(d)) for i, d in enumerate(delays)]


def ends_attempt(event_kind: EventKind, info: str | None) -> bool:
    """Does an event of this kind end a running attempt? (DEAD_LETTERED follows the
    ATTEMPT_FAILED that ended it; a cancel ends one only if it interrupted it.)"""
    return (
        event_kind in (EventKind.ATTEMPT_FAILED, EventKind.SUCCEEDED)
        or (event_kind is EventKind.CANCELLED and info == "interrupted")
    )


def max_concurrency(trace: Trace) -> int:
    """Most attempts running at one instant, replaying the trace in the order it happened."""
    running = peak = 0
    for event in trace:
        if event.kind is EventKind.STARTED:
            running += 1
            peak = max(peak, running)
        elif ends_attempt(event.kind, event.info):
            running -= 1
    assert running == 0, "an attempt started and never ended"
    return peak


def final_ids(trace: Trace) -> list[int]:
    return [e.job for e in trace if e.kind in FINAL_KINDS and e.job is not None]
