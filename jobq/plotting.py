"""Pictures of a run, drawn from its trace - the same events the metrics are computed from.

Every function answers one question, and says so in its title:

    plot_concurrency_trace   Who ran what, when?
    plot_backpressure        When did the producer wait?
    plot_shutdown_timeline   What did shutdown do?
    plot_retry_timeline      How did retries play out?
    plot_cpu_offload         Does CPU work starve the event loop?
    plot_dashboard           How did the run go?  (four panels and the key numbers)
    plot_littles_law         Does Little's law hold?  (jobs in the system, and λ·W)

Each takes the data plus `ax=None` and returns the Axes it drew on (a new figure of a fixed
size when `ax` is None), so a notebook can put several in one figure. One colour means one
thing everywhere: `STATUS_COLOURS` for how an attempt or job ended, `KIND_COLOURS` for the
job type. A hatched bar is an attempt that failed (a retry may follow), in every plot.

Time axes say whether they show virtual seconds (the virtual clock) or real ones, as the
trace's header says (`virtual=None`; a trace without one is taken as virtual). On the real
clock they count seconds since the run started - not the loop's monotonic time - so a trace
loaded from a file is drawn as it was live: `plot_dashboard(Trace.from_jsonl("run.jsonl"))`.

This is the only jobq module that imports matplotlib. It never chooses a backend: the
notebook (inline) or the test run (MPLBACKEND=Agg) does.
"""

from __future__ import annotations

import statistics
import zlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

try:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
except ModuleNotFoundError as exc:  # matplotlib is the `plot` extra, not a core dependency
    if exc.name != "matplotlib":
        raise
    raise ModuleNotFoundError(
        "jobq.plotting needs matplotlib, which is jobq's `plot` extra: "
        "pip install 'jobq[plot]' (in a checkout of jobq: pip install -e '.[plot]')",
        name="matplotlib",
    ) from exc

from jobq.metrics import (
    Metrics,
    Span,
    blocked_intervals,
    queue_depth_series,
    sig3,
    worker_spans,
)
from jobq.trace import FINAL_KINDS, Event, EventKind, Trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "KIND_COLOURS",
    "STATUS_COLOURS",
    "plot_backpressure",
    "plot_concurrency_trace",
    "plot_cpu_offload",
    "plot_dashboard",
    "plot_littles_law",
    "plot_retry_timeline",
    "plot_shutdown_timeline",
]

# Colour-blind-safe (Paul Tol's palettes). Defined once: green always means "succeeded".
STATUS_COLOURS: dict[str, str] = {
    "succeeded": "#228833",
    "failed": "#EE7733",  # one attempt failed; a retry may follow
    "dead-lettered": "#CC3311",
    "cancelled": "#777777",
    "running": "#DDDDDD",  # still running when the trace ended
}
KIND_COLOURS: dict[str, str] = {
    "cpu": "#4477AA",
    "io": "#66CCEE",
    "delay": "#AA3377",
    "unknown": "#BBBBBB",
}
# Your own jobs are named after their function: each name gets a colour of this palette
# (Paul Tol's "muted"), chosen from the name itself, so a function has the same colour in
# every plot and every run.
FUNCTION_COLOURS = ("#CC6677", "#332288", "#DDCC77", "#117733", "#882255", "#44AA99",
                    "#999933", "#88CCEE")


def colour_of_kind(kind: str, colours: Mapping[str, str] = KIND_COLOURS) -> str:
    """The colour of a job kind: the seed's kinds have their own, a function name gets one
    of FUNCTION_COLOURS (by a checksum of the name: the same in every run)."""
    if kind in colours:
        return colours[kind]
    return FUNCTION_COLOURS[zlib.crc32(kind.encode()) % len(FUNCTION_COLOURS)]


BLOCKED_COLOUR = "#EE7733"  # producer waiting: the shading of plot_backpressure
QUEUE_COLOUR = "#4477AA"

FIGSIZE = (9.0, 4.0)  # every single plot; the dashboard is bigger
DASHBOARD_FIGSIZE = (14.0, 9.0)
_BAR_HEIGHT = 0.6
_LABEL_BARS_UP_TO = 60  # write job ids into bars only while they stay legible
_PATCH_BARS_UP_TO = 1_000  # more bars than this are drawn as one collection per row

_FINAL_STATUS = {
    EventKind.SUCCEEDED: "succeeded",
    EventKind.DEAD_LETTERED: "dead-lettered",
    EventKind.CANCELLED: "cancelled",
}
_STATUS_MARKERS = {"succeeded": "o", "dead-lettered": "X", "cancelled": "s"}
# The shutdown timeline tells the three cancel reasons apart by shape (all in the cancelled
# colour): cut mid-attempt, cut in a backoff pause, or never left the queue.
_CANCEL_MARKERS = {"interrupted": "s", "awaiting-retry": "D", "never-started": "v"}
_CANCEL_LABELS = {"interrupted": "job cancelled: interrupted",
                  "awaiting-retry": "job cancelled: awaiting retry",
                  "never-started": "job cancelled: never started"}
# Attempts that failed are hatched, whatever their colour: the bar's colour says the job's
# kind (or the outcome), the stripes say "this attempt failed" - so retries stand out.
_FAILED_OUTCOMES = frozenset({"failed", "dead-lettered"})
FAILED_HATCH = "////"
BACKOFF_COLOUR = "#555555"


# -- small shared helpers --------------------------------------------------------------


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = FIGSIZE) -> Axes:
    if ax is not None:
        return ax
    # Imported here, not at the top: `import jobq` should not load pyplot, and pyplot is
    # what binds a figure to a backend - which the caller chose, not us.
    import matplotlib.pyplot as plt

    _, new_ax = plt.subplots(figsize=figsize, layout="constrained")
    return new_ax


class _Timeline(list[Event]):
    """A run's events ready to draw (a list: each helper walks them once, and a generator
    could be walked only once), and the clock they were measured on.

    On the real clock an event's `t` is the loop's monotonic time - 1668.0 s since the
    machine booted, say, which tells a reader nothing - so the events are moved to count
    from the run's start: the header's `t0`, else the first event. Virtual time starts with
    the run already, and is left exactly as it is.
    """

    def __init__(self, events: Iterable[Event], virtual: bool) -> None:
        super().__init__(events)
        self.virtual = virtual


def _timeline(trace: Trace | Iterable[Event], virtual: bool | None) -> _Timeline:
    if isinstance(trace, _Timeline):
        return trace  # prepared already: the dashboard hands one to each of its panels
    header = trace.header if isinstance(trace, Trace) else None
    if virtual is None:  # as the trace says; without a header, virtual (as before headers)
        virtual = True if header is None or header.virtual is None else header.virtual
    events = list(trace)
    if virtual or not events:
        return _Timeline(events, virtual)
    origin = header.t0 if header is not None and header.t0 is not None else events[0].t
    return _Timeline((Event(e.seq, e.t - origin, e.kind, e.job, e.worker, e.attempt, e.info,
                            e.value) for e in events), virtual)


def _time_label(virtual: bool) -> str:
    return "time (virtual s)" if virtual else "time (s)"


def _legend_outside(ax: Axes, handles: Sequence[Patch | Line2D], title: str | None = None) -> None:
    # Right of the axes, so it never hides a bar; constrained layout makes room for it.
    ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False, fontsize="small")


def _draw_spans(
    ax: Axes,
    spans: Sequence[Span],
    row: Mapping[int, int],
    row_of: Literal["worker", "job"],
    colour_of: Mapping[str, str],
    key_of: Literal["kind", "outcome"],
) -> list[str]:
    """Draw each span as a horizontal bar; return the colour keys used, in legend order."""
    groups: dict[str, list[Span]] = {}
    for span in spans:
        groups.setdefault(getattr(span, key_of), []).append(span)
    order = [k for k in colour_of if k in groups] + sorted(k for k in groups if k not in colour_of)
    total = max((s.end for s in spans), default=0.0) - min((s.start for s in spans), default=0.0)
    for key in order:
        colour = colour_of_kind(key, colour_of)
        group = groups[key]
        # Failed attempts apart: they are drawn hatched (white stripes on the colour).
        parts = [([s for s in group if s.outcome not in _FAILED_OUTCOMES], None),
                 ([s for s in group if s.outcome in _FAILED_OUTCOMES], FAILED_HATCH)]
        for part, hatch in parts:
            if not part:
                continue
            if len(spans) <= _PATCH_BARS_UP_TO:
                ys = [row[getattr(s, row_of)] for s in part]
                ax.barh(ys, [s.duration for s in part], left=[s.start for s in part],
                        height=_BAR_HEIGHT, color=colour, edgecolor="white", linewidth=0.8,
                        hatch=hatch, label=key)
            else:
                # One collection per row, not one patch per bar: matplotlib places every patch
                # on its own (~2 ms each - 20 s for 10,000 bars). And no white edge: at this
                # density a bar is narrower than its edge, which would paint the row white
                # (the white edge colour is kept for the hatch's stripes only).
                by_row: dict[int, list[tuple[float, float]]] = {}
                for s in part:
                    by_row.setdefault(row[getattr(s, row_of)], []).append((s.start, s.duration))
                for i, (y, xranges) in enumerate(by_row.items()):
                    ax.broken_barh(xranges, (y - _BAR_HEIGHT / 2, _BAR_HEIGHT),
                                   facecolors=colour, edgecolors="white", linewidth=0,
                                   hatch=hatch, label=key if i == 0 else None)  # one entry
        # A zero-width bar is invisible - e.g. CPU work on the virtual clock costs no virtual
        # time. A tick mark keeps it on the picture.
        instant = [s for s in group if s.duration == 0]
        if instant:
            ax.plot([s.start for s in instant], [row[getattr(s, row_of)] for s in instant],
                    "|", color=colour_of_kind(key, colour_of), markersize=14, mew=2)
    if len(spans) <= _LABEL_BARS_UP_TO and total > 0:
        for s in spans:
            if s.duration >= 0.04 * total:
                if row_of == "job":
                    text = f"#{s.attempt}"
                else:  # a retry says which attempt it is: job 7's second try is "7#2"
                    text = str(s.job) if s.attempt == 1 else f"{s.job}#{s.attempt}"
                # On a patch of the bar's own colour: readable across a hatched bar's stripes.
                patch = colour_of_kind(getattr(s, key_of), colour_of)
                ax.text(s.start + s.duration / 2, row[getattr(s, row_of)], text,
                        ha="center", va="center", fontsize=7, color="white",
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": patch,
                              "edgecolor": "none"})
    return order


def _backoff_gaps(spans: Sequence[Span], events: Sequence[Event]) -> list[tuple[Span, float]]:
    """Each backoff pause, as (the failed attempt before it, when the pause ended): at the
    next attempt's start or, for a job that shutdown cancelled while it waited, then."""
    by_job: dict[int, list[Span]] = {}
    for s in spans:
        by_job.setdefault(s.job, []).append(s)
    cancelled_at = {e.job: e.t for e in events
                    if e.kind is EventKind.CANCELLED and e.job in by_job}
    gaps: list[tuple[Span, float]] = []
    for job, attempts in by_job.items():
        # Only after a failed attempt: a dead-lettered job that is replayed later did not
        # wait out a backoff in between.
        gaps += [(a, b.start) for a, b in pairwise(attempts) if a.outcome == "failed"]
        if attempts[-1].outcome == "failed" and job in cancelled_at:
            gaps.append((attempts[-1], cancelled_at[job]))
    return gaps


def _failed_patch(colour: str, label: str) -> Patch:
    return Patch(facecolor=colour, edgecolor="white", hatch=FAILED_HATCH, label=label)


def _outcome_patch(outcome: str, label: str) -> Patch:
    """A legend entry for an attempt outcome, hatched if the attempt failed (as its bars)."""
    if outcome in _FAILED_OUTCOMES:
        return _failed_patch(STATUS_COLOURS[outcome], label)
    return Patch(color=STATUS_COLOURS[outcome], label=label)


def _rows(ax: Axes, labels: Sequence[str], ylabel: str) -> None:
    ax.set_yticks(range(len(labels)), labels)
    if labels:
        ax.set_ylim(len(labels) - 0.5, -0.5)  # first row on top, like a table
    ax.set_ylabel(ylabel)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center",
            color="#777777")


# -- the plots -------------------------------------------------------------------------


def plot_concurrency_trace(
    trace: Trace | Iterable[Event],
    *,
    ax: Axes | None = None,
    virtual: bool | None = None,
    colour_by: Literal["kind", "outcome"] = "kind",
) -> Axes:
    """Who ran what, when? One row per worker slot, one bar per attempt (job id inside).

    Colour by job `"kind"` (cpu / io / delay) or by `"outcome"` of the attempt. No more
    than N rows can be busy at any time - that is the concurrency limit, visible. Retries
    show too: a failed attempt is hatched, the thin line after it is the backoff pause (the
    worker keeps its slot while it waits), and the retry's bar says which attempt it is
    ("7#2"). `virtual`: which clock the axis counts (None: as the trace's header says).
    """
    if colour_by not in ("kind", "outcome"):
        raise ValueError(f"colour_by must be 'kind' or 'outcome', got {colour_by!r}")
    ax = _new_axes(ax)
    events = _timeline(trace, virtual)
    spans = worker_spans(events)
    workers = sorted({s.worker for s in spans})
    row = {w: i for i, w in enumerate(workers)}
    colours = KIND_COLOURS if colour_by == "kind" else STATUS_COLOURS
    keys = _draw_spans(ax, spans, row, "worker", colours, colour_by)
    gaps = _backoff_gaps(spans, events)
    if gaps:
        ax.hlines([row[a.worker] for a, _ in gaps], [a.end for a, _ in gaps],
                  [end for _, end in gaps], color=BACKOFF_COLOUR, linewidth=1.2, zorder=1)
    _rows(ax, [f"worker {w}" for w in workers], "worker slot")
    ax.set_xlabel(_time_label(events.virtual))
    ax.set_title("Who ran what, when?")
    if spans:
        handles: list[Patch | Line2D]
        if colour_by == "kind":
            handles = [Patch(color=colour_of_kind(k, colours), label=k) for k in keys]
            if any(s.outcome in _FAILED_OUTCOMES for s in spans):
                handles.append(_failed_patch(KIND_COLOURS["unknown"], "failed attempt"))
        else:
            handles = [_outcome_patch(k, k) for k in keys]
        if gaps:
            handles.append(Line2D([], [], color=BACKOFF_COLOUR, linewidth=1.2,
                                  label="backoff pause"))
        _legend_outside(ax, handles, "job kind" if colour_by == "kind" else "attempt outcome")
    else:
        _empty(ax, "no attempts in this trace")
    return ax


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping waits (several producers) shaded once: the union of the intervals."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def plot_backpressure(
    trace: Trace | Iterable[Event],
    *,
    capacity: int | None = None,
    ax: Axes | None = None,
    virtual: bool | None = None,
) -> Axes:
    """When did the producer wait? Queue depth over time, with the producer's waits shaded.

    Backpressure in one picture: the depth climbs to the capacity line, and exactly then
    the shading starts - the producer is held until a worker takes a job out. `capacity`:
    None draws the capacity the trace's header has, if any.
    """
    ax = _new_axes(ax)
    if capacity is None and isinstance(trace, Trace) and trace.header is not None:
        capacity = trace.header.capacity
    events = _timeline(trace, virtual)
    virtual = events.virtual
    times, depths = queue_depth_series(events)
    handles: list[Patch | Line2D] = []
    if times:
        (line,) = ax.step(times, depths, where="post", color=QUEUE_COLOUR, linewidth=1.8,
                          label="queue depth")
        handles.append(line)
    waits = _merge(blocked_intervals(events))
    for start, end in waits:
        ax.axvspan(start, end, color=BLOCKED_COLOUR, alpha=0.25, linewidth=0)
    if waits:
        handles.append(Patch(color=BLOCKED_COLOUR, alpha=0.25, label="producer blocked"))
    if capacity is not None:
        cap_line = ax.axhline(capacity, color="black", linestyle="--", linewidth=1,
                              label=f"capacity ({capacity})")
        handles.append(cap_line)
    top = max([*depths, float(capacity or 0), 1.0])
    ax.set_ylim(0, top * 1.12 + 0.2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_time_label(virtual))
    ax.set_ylabel("jobs in queue")
    ax.set_title("When did the producer wait?")
    if handles:
        _legend_outside(ax, handles)
    else:
        _empty(ax, "no queue events in this trace")
    return ax


def plot_shutdown_timeline(
    trace: Trace | Iterable[Event],
    *,
    ax: Axes | None = None,
    virtual: bool | None = None,
) -> Axes:
    """What did shutdown do? Attempts per worker, shutdown phases, and how every job ended.

    Dotted lines mark the phases (stop accepting, drain, cancel, ...). A marker sits where
    each job ended, in the colour of its final status; a cancelled job's marker has the shape
    of its reason (■ interrupted, ◆ awaiting retry, ▼ never started). The thin line after a
    failed attempt is the backoff pause - up to the retry, or to the cut. Jobs that ended
    without a worker (cancelled while still queued) sit on the "queue" row.
    """
    ax = _new_axes(ax)
    events = _timeline(trace, virtual)
    virtual = events.virtual
    spans = worker_spans(events)
    workers = sorted({s.worker for s in spans}
                     | {e.worker for e in events if e.kind in FINAL_KINDS and e.worker is not None})
    row = {w: i for i, w in enumerate(workers)}
    queue_row = len(workers)
    labels = [f"worker {w}" for w in workers] + ["queue"]
    _draw_spans(ax, spans, row, "worker", STATUS_COLOURS, "outcome")
    # Backoff pauses: the worker keeps its slot while the job waits for its retry - and a
    # job cut in the pause has a line up to its ◆.
    gaps = _backoff_gaps(spans, events)
    if gaps:
        ax.hlines([row[a.worker] for a, _ in gaps], [a.end for a, _ in gaps],
                  [end for _, end in gaps], color=BACKOFF_COLOUR, linewidth=1.2, zorder=1)

    # Final statuses: many jobs can end at one instant on one row (a cancelled queue);
    # draw one marker per place and status (for a cancelled job: per reason), with a count.
    ends: dict[tuple[float, int, str], int] = {}
    for e in events:
        if e.kind in FINAL_KINDS:
            where = row[e.worker] if e.worker is not None else queue_row
            ending = _FINAL_STATUS[e.kind]
            if e.kind is EventKind.CANCELLED and e.info in _CANCEL_MARKERS:
                ending = e.info  # the reason; a reason we do not know stays "cancelled"
            key = (e.t, where, ending)
            ends[key] = ends.get(key, 0) + 1
    markers = {**_STATUS_MARKERS, **_CANCEL_MARKERS}
    for ending, marker in markers.items():
        points = [(t, y, n) for (t, y, s), n in ends.items() if s == ending]
        if not points:
            continue
        colour = STATUS_COLOURS.get(ending, STATUS_COLOURS["cancelled"])
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, s=55,
                   color=colour, edgecolors="black", linewidths=0.6, zorder=3)
        for t, y, n in points:
            if n > 1:
                ax.annotate(f"×{n}", (t, y), xytext=(6, 5), textcoords="offset points",
                            fontsize=8)

    # Phases: one dotted line per instant, names joined if several began at once. The names
    # go in an empty band above the first row, on two alternating levels so that phases
    # close in time do not write over each other.
    phases: dict[float, list[str]] = {}
    for e in events:
        if e.kind is EventKind.PHASE:
            phases.setdefault(e.t, []).append(e.info or "phase")
    times = [e.t for e in events]
    middle = (min(times) + max(times)) / 2 if times else 0.0
    for i, (t, names) in enumerate(sorted(phases.items())):
        ax.axvline(t, color="black", linestyle=":", linewidth=1.2)
        right = t <= middle  # write towards the middle, so no name runs off the axes
        ax.annotate(" / ".join(names), (t, -1.25 + 0.45 * (i % 2)), xytext=(3 if right else -3, 0),
                    textcoords="offset points", fontsize=8, va="center",
                    ha="left" if right else "right")

    _rows(ax, labels, "")
    if phases:
        ax.set_ylim(len(labels) - 0.5, -1.6)  # room for the band of phase names
    ax.set_xlabel(_time_label(virtual))
    ax.set_title("What did shutdown do?")
    outcomes = [k for k in STATUS_COLOURS if any(s.outcome == k for s in spans)]
    handles: list[Patch | Line2D] = [_outcome_patch(k, f"attempt {k}") for k in outcomes]
    if gaps:
        handles.append(Line2D([], [], color=BACKOFF_COLOUR, linewidth=1.2,
                              label="backoff pause"))
    labels_of = {**{s: f"job {s}" for s in _STATUS_MARKERS}, **_CANCEL_LABELS}
    handles += [
        Line2D([], [], linestyle="", marker=markers[s], markersize=7,
               markerfacecolor=STATUS_COLOURS.get(s, STATUS_COLOURS["cancelled"]),
               markeredgecolor="black", label=labels_of[s])
        for s in markers if any(k[2] == s for k in ends)
    ]
    if phases:
        handles.append(Line2D([], [], color="black", linestyle=":", label="shutdown phase"))
    if handles:
        _legend_outside(ax, handles)
    else:
        _empty(ax, "no attempts in this trace")
    return ax


def plot_retry_timeline(
    trace: Trace | Iterable[Event],
    *,
    ax: Axes | None = None,
    virtual: bool | None = None,
) -> Axes:
    """How did retries play out? One row per job that retried or was dead-lettered.

    Bars are attempts (numbered, coloured by outcome), the thin line between them is the
    backoff pause - growing each time - and ✕ marks where a job gave up to the dead letters.
    """
    ax = _new_axes(ax)
    events = _timeline(trace, virtual)
    virtual = events.virtual
    retried = {e.job for e in events if e.job is not None
               and e.kind in (EventKind.RETRY_SCHEDULED, EventKind.DEAD_LETTERED)}
    row = {job: i for i, job in enumerate(sorted(retried))}  # rows in job-id order
    spans = [s for s in worker_spans(events) if s.job in row]
    _draw_spans(ax, spans, row, "job", STATUS_COLOURS, "outcome")

    # Backoff: from the end of one attempt to the start of the next - or, for a job that
    # shutdown cancelled while it waited, to that cancellation.
    gaps = _backoff_gaps(spans, events)
    if gaps:
        ax.hlines([row[a.job] for a, _ in gaps], [a.end for a, _ in gaps],
                  [end for _, end in gaps], color=BACKOFF_COLOUR, linewidth=1.2, zorder=1)
    cancelled_at = {e.job: e.t for e in events if e.kind is EventKind.CANCELLED and e.job in row}
    dead = [(e.t, row[e.job]) for e in events
            if e.kind is EventKind.DEAD_LETTERED and e.job in row]
    if dead:
        ax.scatter([d[0] for d in dead], [d[1] for d in dead], marker="X", s=90,
                   color=STATUS_COLOURS["dead-lettered"], edgecolors="black", linewidths=0.8,
                   zorder=3)

    cancels = [(t, row[job]) for job, t in cancelled_at.items()]
    if cancels:
        ax.scatter([c[0] for c in cancels], [c[1] for c in cancels], marker="s", s=55,
                   color=STATUS_COLOURS["cancelled"], edgecolors="black", linewidths=0.6,
                   zorder=3)

    _rows(ax, [f"job {job}" for job in retried], "")
    ax.set_xlabel(_time_label(virtual))
    ax.set_title("How did retries play out?")
    outcomes = [k for k in STATUS_COLOURS if any(s.outcome == k for s in spans)]
    handles: list[Patch | Line2D] = [_outcome_patch(k, f"attempt {k}") for k in outcomes]
    if gaps:
        handles.append(Line2D([], [], color=BACKOFF_COLOUR, linewidth=1.2,
                              label="backoff pause"))
    if dead:
        handles.append(Line2D([], [], linestyle="", marker="X", markersize=9,
                              markerfacecolor=STATUS_COLOURS["dead-lettered"],
                              markeredgecolor="black", label="gave up (dead letter)"))
    if cancels:
        handles.append(Line2D([], [], linestyle="", marker="s", markersize=7,
                              markerfacecolor=STATUS_COLOURS["cancelled"],
                              markeredgecolor="black", label="cancelled by shutdown"))
    if handles:
        _legend_outside(ax, handles)
    else:
        _empty(ax, "no job was retried or dead-lettered")
    return ax


_LAG_FLOOR_MS = 1e-3  # a log axis cannot show 0 ms; lags below 1 µs are drawn at 1 µs


def plot_cpu_offload(
    lags: Mapping[str, Sequence[float]],
    *,
    ax: Axes | None = None,
) -> Axes:
    """Does CPU work starve the event loop? Event-loop lag, in ms, for each way of running it.

    `lags` maps a mode ("inline", "threads", "processes") to heartbeat lag samples in
    milliseconds. A box per mode (median, quartiles, whiskers) with every sample as a dot;
    the y axis is logarithmic because inline CPU work is orders of magnitude worse.
    """
    for mode, samples in lags.items():
        if len(samples) == 0:
            raise ValueError(f"lags[{mode!r}] has no samples")
    ax = _new_axes(ax)
    modes = list(lags)
    data = [[max(_LAG_FLOOR_MS, float(x)) for x in lags[m]] for m in modes]
    ax.boxplot(data, tick_labels=modes, showfliers=False, widths=0.5,
               medianprops={"color": "black"})
    for i, samples in enumerate(data, start=1):
        # Spread the dots sideways by a fixed pattern, not randomness: same picture each run.
        offsets = [((k * 0.618) % 1.0 - 0.5) * 0.3 for k in range(len(samples))]
        ax.scatter([i + o for o in offsets], samples, s=10, alpha=0.5, color=QUEUE_COLOUR,
                   zorder=3)
        # The median as the box draws it (the mean of the middle two for an even count: the
        # upper one of them would label a 2-sample box with its maximum), beside its box at
        # its own height: it reads like a labelled tick.
        median = statistics.median(samples)
        ax.annotate(f"median\n{sig3(median)} ms", (i + 0.28, median), ha="left", va="center",
                    fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("event-loop lag (ms)")
    ax.set_xlabel("how the CPU-bound jobs ran")
    ax.set_title("Does CPU work starve the event loop?")
    return ax


def _latencies(events: Iterable[Event]) -> list[float]:
    """Enqueue-to-end time of every job that ended - what `Metrics.latency` summarises."""
    enqueued: dict[int, float] = {}
    out: list[float] = []
    for e in events:
        if e.job is None:
            continue
        if e.kind is EventKind.ENQUEUED:
            enqueued[e.job] = e.t
        elif e.kind in FINAL_KINDS and e.job in enqueued:
            out.append(e.t - enqueued.pop(e.job))
    return out


def _plot_latency_histogram(
    events: Sequence[Event], metrics: Metrics, ax: Axes, virtual: bool
) -> Axes:
    latencies = _latencies(events)
    use_ms = metrics.latency.max < 1.0
    scale, unit = (1000.0, "ms") if use_ms else (1.0, "s")
    unit_label = f"virtual {unit}" if virtual else unit
    if latencies:
        ax.hist([x * scale for x in latencies], bins=min(30, max(5, len(latencies) // 3)),
                color=KIND_COLOURS["unknown"], edgecolor="white")
        for name, value, style in (("p50", metrics.latency.p50, "-"),
                                   ("p95", metrics.latency.p95, "--"),
                                   ("p99", metrics.latency.p99, ":")):
            ax.axvline(value * scale, color="black", linestyle=style, linewidth=1.2,
                       label=f"{name} {sig3(value * scale)} {unit}")
        ax.legend(fontsize="small", frameon=False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _empty(ax, "no job ended")
    ax.set_xlabel(f"latency, enqueue to end ({unit_label})")
    ax.set_ylabel("jobs")
    ax.set_title("How long did jobs take?")
    return ax


_DASHBOARD_ROWS = (
    "jobs ended",
    "succeeded / dead-lettered / cancelled",
    "retries",
    "elapsed (s)",
    "throughput (jobs/s)",
    "latency mean (s)",
    "latency p50 / p95 / p99 (s)",
    "queue depth mean / max (jobs)",
    "worker utilisation (%)",
    "producer blocked (s)",
)


def plot_dashboard(
    trace: Trace | Iterable[Event],
    metrics: Metrics | None = None,
    *,
    workers: int | None = None,
    capacity: int | None = None,
    fig: Figure | None = None,
    virtual: bool | None = None,
) -> Figure:
    """How did the run go? Four panels: who ran what, queue depth, latencies, key numbers.

        plot_dashboard(Trace.from_jsonl("run.jsonl"))     # a saved run: the trace is enough

    What is not given comes from the trace: `workers`, `capacity` and the clock from its
    header (a trace without one: the worker slots seen in it, no capacity line, virtual
    time), and `metrics` computed from its events (`metrics_from_trace`). Metrics you pass
    should come from the same run - the pictures and the numbers then agree by construction.
    """
    header = trace.header if isinstance(trace, Trace) else None
    events = _timeline(trace, virtual)
    workers_label = "workers"
    if workers is None and header is not None:
        workers = header.workers
    if workers is None:  # an old file: count the slots that ran something (a lower bound)
        workers = 1 + max((e.worker for e in events
                           if e.kind is EventKind.STARTED and e.worker is not None), default=0)
        workers_label = "workers (seen in the trace)"
    if capacity is None and header is not None:
        capacity = header.capacity
    if metrics is None:
        from jobq.metrics import metrics_from_trace  # (here: the imports above stay as they are)

        metrics = metrics_from_trace(events, workers)
    if fig is None:
        import matplotlib.pyplot as plt  # lazily, as in _new_axes

        fig = plt.figure(figsize=DASHBOARD_FIGSIZE, layout="constrained")
    (ax_trace, ax_queue), (ax_latency, ax_numbers) = fig.subplots(2, 2)
    plot_concurrency_trace(events, ax=ax_trace)
    plot_backpressure(events, capacity=capacity, ax=ax_queue)
    _plot_latency_histogram(events, metrics, ax_latency, events.virtual)

    rows = dict(metrics.summary_rows())
    cells = [[workers_label, str(workers)]] + [[label, rows[label]] for label in _DASHBOARD_ROWS]
    if header is not None and header.executor is not None and header.clock is not None:
        # What the run was, as its trace says (one row: the table fills its panel already).
        cells.append(["executor / clock", f"{header.executor} / {header.clock}"])
    ax_numbers.axis("off")
    table = ax_numbers.table(cellText=cells, colLabels=["metric", "value"], loc="center",
                             cellLoc="left", colWidths=[0.72, 0.34])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1.0, 1.5)
    ax_numbers.set_title("What are the key numbers?")
    fig.suptitle("How did the run go?", fontsize=14)
    return fig


def plot_littles_law(
    trace: Trace | Iterable[Event],
    metrics: Metrics | None = None,
    *,
    ax: Axes | None = None,
    virtual: bool | None = None,
) -> Axes:
    """Does Little's law hold? Jobs in the system over time, their mean, and λ·W beside it.

    The step line is L(t): jobs enqueued and not ended yet. The solid horizontal line is its
    time-weighted mean over the measured window (first ENQUEUED to the last job event, as
    `Metrics.elapsed`): `metrics.in_system_mean`, Little's L. The dashed line is λ·W,
    throughput x mean latency. For a run seen from empty to empty the two lines are one: the
    area under L(t) is the sum of every job's time in the system, so
    area / elapsed = (jobs / elapsed) x (sum / jobs). A gap means jobs were still in the
    system at an edge of the window (a snapshot taken mid-run). `metrics`: the same run's
    (None: computed from the trace).
    """
    ax = _new_axes(ax)
    events = _timeline(trace, virtual)
    if metrics is None:
        from jobq.metrics import metrics_from_trace  # (here: the imports above stay as they are)

        metrics = metrics_from_trace(events, workers=1)  # the slots do not change L or λ·W
    # L(t) as the metrics count it: +1 at a job's ENQUEUED, -1 at its final event.
    in_system: set[int] = set()
    times: list[float] = []
    levels: list[int] = []
    for e in events:
        if e.job is None:
            continue
        if e.kind is EventKind.ENQUEUED and e.job not in in_system:
            in_system.add(e.job)
        elif e.kind in FINAL_KINDS and e.job in in_system:
            in_system.discard(e.job)
        else:
            continue
        times.append(e.t)
        levels.append(len(in_system))
    ax.set_title("Does Little's law hold? (L = λ·W)")
    ax.set_xlabel(_time_label(events.virtual))
    ax.set_ylabel("jobs in the system")
    if metrics.jobs == 0 or not times:
        _empty(ax, "no job ended")
        return ax
    start, end = times[0], times[0] + metrics.elapsed  # the window the means are taken over
    mean_l, lam_w = metrics.littles_law()
    ax.step(times, levels, where="post", color=QUEUE_COLOUR, linewidth=0.8,
            label="L(t): jobs in the system")
    # Drawn wide and pale, then λ·W dashed on top: where they agree, one line shows through
    # the other; a gap between them would be visible.
    ax.hlines(mean_l, start, end, color="#DDAA33", linewidth=5, alpha=0.8,
              label=f"time average of L(t) = {sig3(mean_l)} jobs")
    ax.hlines(lam_w, start, end, color="black", linestyles="--", linewidth=1.5,
              label=(f"λ·W = {sig3(metrics.throughput)} jobs/s × "
                     f"{sig3(metrics.latency.mean)} s = {sig3(lam_w)} jobs"))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize="small")
    return ax
