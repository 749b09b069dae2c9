"""`python -m jobq run ...` (or `jobq run ...`): a seeded mix of jobs through a Pipeline.

    python -m jobq run --jobs 200 --workers 4 --mix cpu=0.3,io=0.3,delay=0.4 --fail-rate 0.1

The command starts its own LocalServer for the io jobs, builds the jobs from `--seed`
(same options, same jobs), runs them with a FailurePlan of `--fail-rate`, and prints how
every job ended and the run's metrics as one aligned table. `--trace` and `--plot` save the
events and a dashboard. Ctrl-C (SIGINT) or SIGTERM stops it gracefully; a second one cuts
the jobs still running. The exit code says how it went (EXIT_CODES below).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from jobq.clock import run_virtual
from jobq.errors import AccountingError
from jobq.jobs import AsyncIo, CpuBound, Delayed, Job, JobType
from jobq.metrics import Metrics
from jobq.offload import ExecutorKind
from jobq.pipeline import Pipeline, ShutdownReport
from jobq.retry import FailurePlan, RetryPolicy
from jobq.testing import LocalServer
from jobq.trace import Trace

__all__ = ["RunOptions", "build_parser", "format_table", "main", "make_jobs", "parse_mix"]

EXIT_OK = 0
EXIT_DEAD_LETTERS = 1
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_INTERRUPTED = 3
EXIT_INTERNAL = 4

EXIT_CODES = """\
exit codes:
  0  every job succeeded
  1  the run finished, but some jobs were dead-lettered (failed every attempt)
  2  bad command-line usage
  3  interrupted by SIGINT/SIGTERM: graceful shutdown ran, the report was printed
  4  internal error: a job was lost (lost != 0) or a pipeline stage crashed - a bug in jobq
"""

KINDS = ("cpu", "io", "delay")
DEFAULT_MIX = "cpu=0.3,io=0.3,delay=0.4"
# io jobs ask the local server to wait 0..IO_LATENCY_MAX real seconds: enough to overlap
# requests, little enough that thousands of them still finish quickly.
IO_LATENCY_MAX = 0.02


# -- checking the command line ------------------------------------------------------------
# Each `type=` function raises ArgumentTypeError; argparse then prints
# "argument --jobs: must be an integer >= 1, got -5" and exits with code 2.


def _integer(low: int | None = None) -> Callable[[str], int]:
    rule = "an integer" if low is None else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return parse


def _number(text: str, rule: str, ok: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
    if not ok(value):  # nan fails every comparison, so it lands here too
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def _seconds(text: str) -> float:
    return _number(text, "a finite number of seconds >= 0", lambda v: math.isfinite(v) and v >= 0)


def _fraction(text: str) -> float:
    return _number(text, "a number between 0 and 1", lambda v: 0 <= v <= 1)


def _output_file(text: str) -> Path:
    # Checked before the run, so a typo in a directory does not cost the whole run.
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    return path


def parse_mix(text: str) -> dict[str, float]:
    """'cpu=0.3,io=0.3,delay=0.4' -> shares by kind; a kind left out gets share 0."""
    shares = dict.fromkeys(KINDS, 0.0)
    seen: set[str] = set()
    for part in text.split(","):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or name not in KINDS:
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} in {text!r} is not NAME=SHARE with NAME one of "
                f"{', '.join(KINDS)}"
            )
        if name in seen:
            raise argparse.ArgumentTypeError(f"{name!r} appears twice in {text!r}")
        seen.add(name)
        shares[name] = _number(value, f"a share >= 0 for {name!r} in {text!r}",
                               lambda v: math.isfinite(v) and v >= 0)
    total = math.fsum(shares.values())
    if abs(total - 1) > 1e-9:
        raise argparse.ArgumentTypeError(f"shares must add up to 1, got {total!r} in {text!r}")
    return shares


# -- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Raw description: keeps the epilog's exit-code table as written. Defaults are written
    # into each help text ("%(default)s"), so on/off flags do not show a confusing one.
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="jobq",
        description="jobq: an asyncio job queue with backpressure, retries, metrics and\n"
                    "graceful shutdown.",
        epilog=EXIT_CODES,
        formatter_class=raw,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a seeded mix of cpu / io / delay jobs and print how it went",
        description="Run a seeded mix of jobs through a jobq Pipeline and print a summary.\n"
                    "Ctrl-C or SIGTERM stops gracefully (drains); a second one cancels the\n"
                    "jobs still running.",
        epilog=EXIT_CODES,
        formatter_class=raw,
    )
    size = run.add_argument_group("the run")
    size.add_argument("--jobs", type=_integer(1), default=200, metavar="N",
                      help="how many jobs to submit (default: %(default)s)")
    size.add_argument("--workers", type=_integer(1), default=4, metavar="N",
                      help="jobs running at once (default: %(default)s)")
    size.add_argument("--capacity", type=_integer(1), default=10, metavar="N",
                      help="queue capacity: the producer waits while this many jobs are "
                           "queued (default: %(default)s)")
    size.add_argument("--executor", choices=("process", "thread", "inline"), default="process",
                      help="where cpu jobs run (default: %(default)s)")
    size.add_argument("--virtual-time", action="store_true",
                      help="run on jobq's virtual clock: delays and backoffs are skipped while "
                           "no real work (an io request, a cpu job) is in flight")
    size.add_argument("--drain-timeout", type=_seconds, default=10.0, metavar="S",
                      help="after SIGINT/SIGTERM: seconds (of the run's clock) to let queued "
                           "and running jobs finish before they are cancelled "
                           "(default: %(default)s)")

    mix = run.add_argument_group("the jobs")
    mix.add_argument("--mix", type=parse_mix, default=DEFAULT_MIX, metavar="KIND=SHARE,...",
                     help="shares of cpu / io / delay jobs, adding up to 1 "
                          "(default: %(default)s)")
    mix.add_argument("--seed", type=_integer(), default=1, metavar="N",
                     help="seeds the job mix, the delays, the io latencies and the failures "
                          "(default: %(default)s)")
    mix.add_argument("--cpu-iterations", type=_integer(0), default=50_000, metavar="N",
                     help="work per cpu job, about 0.2 us per iteration (default: %(default)s)")
    mix.add_argument("--max-delay", type=_seconds, default=0.2, metavar="S",
                     help="delay jobs sleep a uniform 0..S seconds (default: %(default)s)")

    fail = run.add_argument_group("failures")
    fail.add_argument("--fail-rate", type=_fraction, default=0.1, metavar="P",
                      help="probability that any one attempt fails on purpose "
                           "(default: %(default)s)")
    fail.add_argument("--retries", type=_integer(0), default=3, metavar="N",
                      help="retries after a failed attempt before the job is dead-lettered "
                           "(default: %(default)s)")
    fail.add_argument("--base-delay", type=_seconds, default=0.1, metavar="S",
                      help="backoff before the first retry; it doubles for each next one "
                           "(default: %(default)s)")

    out = run.add_argument_group("output")
    out.add_argument("--trace", type=_output_file, metavar="FILE.jsonl",
                     help="save every event as JSON lines (jobq.Trace.from_jsonl reads them)")
    out.add_argument("--plot", type=_output_file, metavar="FILE.png",
                     help="save a dashboard of the run as an image")
    out.add_argument("--no-progress", dest="progress", action="store_false",
                     help="do not draw the progress bar (on stderr)")
    out.add_argument("--bounded-memory", action="store_true",
                     help="keep no events and no results (memory does not grow with --jobs); "
                          "--trace is then streamed to its file; --plot is not possible")
    return parser


@dataclass(frozen=True)
class RunOptions:
    """The checked options of `jobq run` (argparse's Namespace, with types)."""

    jobs: int
    workers: int
    capacity: int
    executor: ExecutorKind  # argparse's `choices` keep it to these three
    virtual_time: bool
    drain_timeout: float
    mix: dict[str, float]
    seed: int
    cpu_iterations: int
    max_delay: float
    fail_rate: float
    retries: int
    base_delay: float
    trace: Path | None
    plot: Path | None
    progress: bool
    bounded_memory: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


# -- the jobs -----------------------------------------------------------------------------


def make_jobs(options: RunOptions, ok_url: str | None) -> Iterator[Job]:
    """The seeded job mix, made one at a time as the producer asks (so --bounded-memory
    never holds a list of every job). `ok_url` is the local server's /ok, if io jobs run."""
    rng = random.Random(options.seed)
    kinds = [kind for kind in KINDS if options.mix[kind] > 0]
    weights = [options.mix[kind] for kind in kinds]
    for job_id in range(options.jobs):
        kind = rng.choices(kinds, weights)[0]
        job_type: JobType
        if kind == "cpu":
            job_type = CpuBound(options.cpu_iterations)
        elif kind == "io":
            assert ok_url is not None, "io jobs need the local server"
            job_type = AsyncIo(f"{ok_url}?latency={rng.uniform(0, IO_LATENCY_MAX):.4f}")
        else:
            job_type = Delayed(rng.uniform(0, options.max_delay))
        yield Job(job_id, f"job {job_id}".encode(), job_type)


# -- running, with signals ----------------------------------------------------------------


def _say(message: str, *, new_line: bool = False) -> None:
    """A status line on stderr, so stdout holds only the summary. `new_line`: start on a
    line of its own, below a progress bar that may be drawn on the current line."""
    prefix = "\n" if new_line else ""
    print(f"{prefix}jobq: {message}", file=sys.stderr, flush=True)


class _Interrupts:
    """SIGINT / SIGTERM during a run: the first one stops gracefully, the second one cuts.

    Installed with `loop.add_signal_handler`, so the handler runs as an ordinary callback on
    the loop - never in the middle of the pipeline's bookkeeping, as a KeyboardInterrupt
    raised at an arbitrary line could.
    """

    def __init__(self, pipe: Pipeline, drain_timeout: float, progress: bool) -> None:
        self._pipe = pipe
        self._drain_timeout = drain_timeout
        self._progress = progress
        self.received = asyncio.Event()
        self._count = 0
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # Windows, or not the main thread: Ctrl-C keeps its default
            self._installed.append(sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._count += 1
        if self._count == 1:
            _say(f"{sig.name}: stopping - no new jobs; draining queued and running jobs "
                 f"(up to {self._drain_timeout:g} s); {sig.name} again cancels them",
                 new_line=self._progress)
            self.received.set()
        elif self._count == 2:
            _say(f"{sig.name} again: cancelling the jobs still running", new_line=self._progress)
            self._pipe.token.cancel()  # "stop now": the drain ends, running jobs are cut


async def _produce_and_drain(pipe: Pipeline, jobs: Iterator[Job]) -> None:
    await pipe.submit_many(jobs)
    await pipe.wait_drained()


async def _execute(
    options: RunOptions, jobs: Iterator[Job]
) -> tuple[Pipeline, ShutdownReport, bool]:
    """Run `jobs` until done or interrupted; (the pipeline, its report, interrupted?)."""
    pipe = _make_pipeline(options)
    interrupts = _Interrupts(pipe, options.drain_timeout, options.progress)
    interrupts.install()
    try:
        # Printed once the signal handlers are in place (a test waits for it before it sends
        # a signal), and before the pipeline starts and draws its progress bar.
        clock = "virtual" if options.virtual_time else "real"
        _say(f"started: {options.jobs} jobs, {options.workers} workers, "
             f"{options.executor} executor, {clock} time")
        async with pipe:
            work = asyncio.create_task(_produce_and_drain(pipe, jobs))
            stop = asyncio.create_task(interrupts.received.wait())
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            interrupted = stop.done()
            stop.cancel()
            if interrupted:
                work.cancel()  # stop producing; a job not yet accepted is simply not submitted
            await asyncio.wait({work})
            if not work.cancelled():
                work.result()  # a crash of the pipeline is not hidden
            # On a normal end everything has drained already; after a signal the deadline
            # applies (a second signal cuts it short through pipe.token).
            report = await pipe.shutdown(
                drain_timeout=options.drain_timeout if interrupted else None
            )
        return pipe, report, interrupted
    finally:
        interrupts.remove()


def _make_pipeline(options: RunOptions) -> Pipeline:
    trace: bool | Trace = True
    if options.bounded_memory:
        # No events and no results in memory; the trace file, if any, is written as we go.
        trace = Trace(keep=False, path=options.trace) if options.trace else False
    return Pipeline(
        workers=options.workers,
        capacity=options.capacity,
        executor=options.executor,
        retry=RetryPolicy(max_retries=options.retries, base_delay=options.base_delay),
        failures=FailurePlan(fail_rate=options.fail_rate, seed=options.seed),
        trace=trace,
        keep_results=not options.bounded_memory,
        progress=options.progress,
        total=options.jobs,
    )


# -- printing -----------------------------------------------------------------------------


def format_table(sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    """Titled sections of (label, value) rows as one table: labels left, values right.

    One pair of column widths for every section, so the values line up down the whole table.
    """
    rows = [row for _, section in sections for row in section]
    label_width = max((len(label) for label, _ in rows), default=0)
    value_width = max((len(value) for _, value in rows), default=0)
    rule = "-" * (label_width + 2 + value_width)
    lines: list[str] = []
    for title, section in sections:
        if lines:
            lines.append("")
        lines += [title, rule]
        lines += [f"{label:<{label_width}}  {value:>{value_width}}" for label, value in section]
    return "\n".join(lines)


def _summary(options: RunOptions, report: ShutdownReport, metrics: Metrics, wall: float) -> str:
    clock = "virtual" if options.virtual_time else "real"
    run_rows = [
        ("workers / queue capacity", f"{options.workers} / {options.capacity}"),
        ("executor", options.executor),
        ("clock", clock),
        ("wall time (s)", f"{wall:.2f}"),
    ]
    ended = [(name, str(count)) for name, count in report.rows()]
    ended.append(("drained before the deadline", "yes" if report.drained else "no"))
    return format_table([
        ("run", run_rows),
        ("how the jobs ended", ended),
        (f"metrics ({clock} seconds)", metrics.summary_rows()),
    ])


def _exit_code(report: ShutdownReport, interrupted: bool) -> tuple[int, str]:
    if report.lost:
        return EXIT_INTERNAL, f"{report.lost} jobs were lost - a bug in jobq"
    if interrupted:
        return EXIT_INTERRUPTED, "interrupted; shut down gracefully"
    if report.succeeded == report.submitted:
        return EXIT_OK, f"all {report.submitted} jobs succeeded"
    return EXIT_DEAD_LETTERS, f"{report.submitted - report.succeeded} jobs did not succeed"


def _save_plot(options: RunOptions, pipe: Pipeline, metrics: Metrics, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a file, not a window: works without a display, and before pyplot
    import matplotlib.pyplot as plt

    from jobq.plotting import plot_dashboard

    fig = plot_dashboard(pipe.trace, metrics, workers=options.workers,
                         capacity=options.capacity, virtual=options.virtual_time)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the command --------------------------------------------------------------------------


def run_command(options: RunOptions) -> int:
    """`jobq run`: returns the exit code."""
    # The server runs in a thread of its own with real time (see jobq.testing), so it keeps
    # answering whatever clock the jobs run on.
    server = LocalServer().start() if options.mix["io"] > 0 else None
    try:
        jobs = make_jobs(options, server.url("/ok") if server else None)
        started = time.perf_counter()
        if options.virtual_time:
            # No virtual deadline: the run ends when its jobs do, or at Ctrl-C.
            pipe, report, interrupted = run_virtual(_execute(options, jobs), deadline=None)
        else:
            pipe, report, interrupted = asyncio.run(_execute(options, jobs))
        wall = time.perf_counter() - started
    except KeyboardInterrupt:  # Ctrl-C before the handlers were installed or after removal
        _say("interrupted")
        return EXIT_INTERRUPTED
    except AccountingError as exc:
        _say(f"internal accounting error: {exc}")
        return EXIT_INTERNAL
    except Exception:
        # A crashed pipeline stage is a bug in jobq, not a verdict on the jobs: keep exit 1
        # meaning "some jobs were dead-lettered", and show where it broke.
        traceback.print_exc()
        _say("internal error: a pipeline stage crashed")
        return EXIT_INTERNAL
    finally:
        if server is not None:
            server.stop()

    metrics = pipe.metrics()
    print(_summary(options, report, metrics, wall), flush=True)
    if options.trace and not options.bounded_memory:  # bounded: streamed during the run
        pipe.trace.to_jsonl(options.trace)
    if options.trace:
        _say(f"trace written to {options.trace}")
    if options.plot:
        _save_plot(options, pipe, metrics, options.plot)
        _say(f"dashboard written to {options.plot}")
    code, outcome = _exit_code(report, interrupted)
    _say(f"{outcome} (exit {code})")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The `jobq` command. Returns the exit code; bad usage exits with 2 (argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bounded_memory and args.plot:
        # parser.error prints usage and exits with code 2, like any other usage error.
        parser.error("argument --plot: not possible with --bounded-memory, which keeps no "
                     "events to draw (use --trace to stream them to a file)")
    return run_command(RunOptions.from_args(args))
