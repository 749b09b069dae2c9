"""`python -m jobq run ...` (or `jobq run ...`): jobs through a Pipeline, and how it went.

    python -m jobq run --jobs 200 --workers 4 --mix cpu=0.3,io=0.3,delay=0.4 --fail-rate 0.1
    python -m jobq run examples.my_jobs:jobs --workers 4

Without a TARGET the command runs a seeded mix: it starts its own LocalServer for the io
jobs, builds the jobs from `--seed` (same options, same jobs), and runs them with a
FailurePlan of `--fail-rate`. With TARGET (`module:function` or `path/to/file.py:function`)
it runs your jobs instead: whatever that function returns or yields (see _Feed). Either way
it prints how every job ended and the run's metrics as one aligned table, then (on stderr)
the first dead letters with their last error; `--trace` and `--plot` save the events and a
dashboard. A progress bar with rate, retries and dead letters is drawn on stderr when that
is a terminal (_ProgressWatch). Ctrl-C (SIGINT) or SIGTERM stops it gracefully; a second
one cuts the jobs still running. The exit code says how it went (EXIT_CODES below).

The problem: a command is judged by what it promises whatever happens around the process -
a Ctrl-C at any moment (during start-up, twice in a row, while the dashboard is drawn), a
reader that has gone (`| head -1`), a closed stderr (cron), a path that cannot be written,
a full disk - and, with TARGET, whatever your code does: fail to import, raise, yield
something that is not a job halfway through. Whatever happens, the exit code must say how it
went, and the report and files must be written if they can be. So: one signal handler for
the whole command that only records (`_Interrupts`), output paths and TARGET checked before
any job runs, a TARGET that fails later stops the intake but never the jobs it made already,
and every write - the summary, each file, each status line - able to fail on its own
without taking the others, or the exit code, with it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import difflib
import importlib
import inspect
import itertools
import math
import os
import random
import signal
import stat
import sys
import time
import traceback
import warnings
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO, Any

from jobq import __version__
from jobq import validation as check
from jobq.clock import run_virtual
from jobq.errors import (
    AccountingError,
    InvalidConfigError,
    InvalidJobError,
    InvisibleCpuWarning,
    NotImportableError,
    PipelineClosedError,
)
from jobq.jobs import AsyncIo, Blocking, Call, CpuBound, Delayed, Job, JobType
from jobq.metrics import Metrics
from jobq.offload import ExecutorKind
from jobq.pipeline import Pipeline, ShutdownReport
from jobq.progress import CountingProgress, make_terminal_progress
from jobq.retry import FailurePlan, RetryPolicy
from jobq.testing import LocalServer
from jobq.trace import Event, EventKind, Trace

__all__ = [
    "RunOptions",
    "Target",
    "build_parser",
    "format_table",
    "main",
    "make_jobs",
    "parse_mix",
]

EXIT_OK = 0
EXIT_DEAD_LETTERS = 1
EXIT_USAGE = 2  # argparse's own code for a bad command line; also a TARGET that fails
EXIT_INTERRUPTED = 3
EXIT_INTERNAL = 4
EXIT_OUTPUT = 5

EXIT_CODES = """\
exit codes:
  0  every job succeeded
  1  the run finished, but some jobs were dead-lettered (failed every attempt)
  2  bad command-line usage, or a TARGET that fails: it cannot be imported, is not a
     function of no arguments, raises, or gives something that is not a job (the jobs it
     gave before that still ran, and were reported)
  3  interrupted by SIGINT/SIGTERM (at any moment, start-up and output included): graceful
     shutdown ran, the report was printed, the files were written
  4  internal error: a job was lost (lost != 0) or a pipeline stage crashed - a bug in jobq
  5  output could not be written: the summary (stdout closed, or its reader gone), or the
     --trace / --plot file (a full disk); the jobs ran, stderr says what was lost
  when several apply, the first of 4, 2, 5, 3, 1 wins
"""

KINDS = ("cpu", "io", "delay")
# The seeded mix's own options, and their defaults. Their parser defaults are None, so that
# _complete() can tell an option given from one left out: with TARGET, giving one is an
# error.
DEFAULT_JOBS = 200
DEFAULT_MIX = "cpu=0.3,io=0.3,delay=0.4"
DEFAULT_CPU_ITERATIONS = 50_000
DEFAULT_MAX_DELAY = 0.2
MIX_ONLY = {"jobs": "--jobs", "mix": "--mix", "cpu_iterations": "--cpu-iterations",
            "max_delay": "--max-delay"}
# Failing on purpose is how the seeded mix shows retries; your own jobs fail only when asked.
DEFAULT_FAIL_RATE = 0.1
# Dead letters listed after the summary, unless --show-dead-letters says otherwise.
DEFAULT_SHOWN_DEAD_LETTERS = 5
MAX_ERROR_SHOWN = 200  # characters of each one's last error (the trace keeps it whole)
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


def _count_or_all(text: str) -> int | None:
    """--show-dead-letters: an integer >= 0, or "all" (None: no limit)."""
    if text.strip().lower() == "all":
        return None
    try:
        return _integer(0)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 or 'all', got {text!r}") \
            from None


def _output_file(text: str) -> Path:
    """A path the command can write to, checked before the run: a typo, a missing directory
    or a read-only place must not cost a whole run, found out only at the end.

    Checked by opening it: the one test that knows every reason it may fail (a missing
    directory, a parent that is a file, no permission, a read-only disk, /proc), also for
    root, to whom os.access() says yes to nearly everything. Opened for appending, which
    leaves an existing file as it was; a file created only by the check is removed again.
    A path that exists and is not a regular file (a FIFO, /dev/full) is only asked with
    os.access(): opening a FIFO and closing it again would tell its reader the output has
    ended. A full disk shows only on writing; the command reports that after the run.
    """
    path = Path(text)
    try:
        mode: int | None = path.stat().st_mode  # follows links: what a write would reach
    except OSError:
        mode = None  # not there yet (or not reachable: opening it below says why)
    if mode is not None and stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: it is a directory")
    if mode is not None and not stat.S_ISREG(mode):
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write {text!r}: permission denied")
        return path
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileNotFoundError) and not path.parent.is_dir():
            reason = f"directory {str(path.parent)!r} does not exist"
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {reason}") from None
    if mode is None:  # created by the check (through a dangling link, the link's target)
        Path(os.path.realpath(path)).unlink(missing_ok=True)
    return path


def _image_file(text: str) -> Path:
    """An output path (see _output_file) whose extension names a format matplotlib writes -
    asked of matplotlib itself, imported only when --plot is given (it takes a moment)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ModuleNotFoundError:  # a usage error, not a traceback (matplotlib is an extra)
        raise argparse.ArgumentTypeError("needs matplotlib: pip install 'jobq[plot]'") from None

    formats = FigureCanvasBase.get_supported_filetypes()
    if Path(text).suffix[1:].lower() not in formats:
        known = ", ".join(f".{name}" for name in sorted(formats))
        raise argparse.ArgumentTypeError(
            f"cannot save a dashboard as {text!r}: the name must end in one of {known}"
        )
    return _output_file(text)


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
    """The `jobq` command line (its `run` command included). What parse_args() returns is
    not complete yet: main() checks the combinations and fills in the defaults that depend
    on TARGET (--jobs, --mix, --cpu-iterations, --max-delay and --fail-rate are None when
    not given) before it makes RunOptions."""
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(the `jobq` parser, its `run` subparser). main() reports what only it can check - a
    combination of options, TARGET - through the subparser, as argparse reports the rest:
    "jobq run: error: ..." below the usage of `jobq run`."""
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
    parser.add_argument("--version", action="version", version=f"jobq {__version__}",
                        help="print jobq's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a seeded mix of cpu / io / delay jobs, or your own, and print how it went",
        description="Run jobs through a jobq Pipeline and print a summary: a seeded mix of\n"
                    "cpu / io / delay jobs, or your own - the jobs a function of yours\n"
                    "returns or yields (TARGET):\n"
                    "\n"
                    "  python -m jobq run --jobs 200 --mix cpu=0.3,io=0.3,delay=0.4\n"
                    "  python -m jobq run examples.my_jobs:jobs --workers 4\n"
                    "\n"
                    "Ctrl-C or SIGTERM stops gracefully (drains); a second one cancels the\n"
                    "jobs still running.",
        epilog=EXIT_CODES,
        formatter_class=raw,
    )
    run.add_argument("target", nargs="?", metavar="TARGET",
                     help="your jobs: module:function (examples.my_jobs:jobs, looked up from "
                          "the current directory first) or path/to/file.py:function. The "
                          "function is called with no arguments, may be async, and returns "
                          "or yields the jobs: Job(...)s or bare job types (Call, Blocking, "
                          "CpuBound, AsyncIo, Delayed). Without TARGET: the seeded mix below")
    size = run.add_argument_group("the run")
    size.add_argument("--workers", type=_integer(1), default=4, metavar="N",
                      help="jobs running at once (default: %(default)s)")
    size.add_argument("--capacity", type=_integer(1), default=10, metavar="N",
                      help="queue capacity: the producer waits while this many jobs are "
                           "queued (default: %(default)s)")
    size.add_argument("--executor", choices=("process", "thread", "inline"), default="process",
                      help="where CpuBound and Blocking jobs run (default: %(default)s)")
    size.add_argument("--virtual-time", action="store_true",
                      help="run on jobq's virtual clock: delays and backoffs are skipped while "
                           "no real work (an io request, a cpu job) is in flight; cpu jobs "
                           "then take no virtual time (they run between two instants)")
    size.add_argument("--drain-timeout", type=_seconds, default=10.0, metavar="S",
                      help="after SIGINT/SIGTERM: seconds (of the run's clock) to let queued "
                           "and running jobs finish before they are cancelled "
                           "(default: %(default)s)")

    mix = run.add_argument_group(
        "the seeded mix", "without TARGET only: with TARGET, your function makes the jobs,\n"
                          "and these options are refused")
    mix.add_argument("--jobs", type=_integer(1), metavar="N",
                     help=f"how many jobs to submit (default: {DEFAULT_JOBS})")
    mix.add_argument("--mix", type=parse_mix, metavar="KIND=SHARE,...",
                     help=f"shares of cpu / io / delay jobs, adding up to 1 "
                          f"(default: {DEFAULT_MIX})")
    mix.add_argument("--cpu-iterations", type=_integer(0), metavar="N",
                     help=f"work per cpu job, about 0.2 us per iteration "
                          f"(default: {DEFAULT_CPU_ITERATIONS})")
    mix.add_argument("--max-delay", type=_seconds, metavar="S",
                     help=f"delay jobs sleep a uniform 0..S seconds (default: {DEFAULT_MAX_DELAY})")

    fail = run.add_argument_group("failures")
    fail.add_argument("--fail-rate", type=_fraction, metavar="P",
                      help=f"probability that any one attempt fails on purpose, to watch retries "
                           f"(default: {DEFAULT_FAIL_RATE}; with TARGET: 0)")
    fail.add_argument("--seed", type=_integer(), default=1, metavar="N",
                      help="seeds the failures, and the seeded mix: its jobs, delays and io "
                           "latencies (default: %(default)s)")
    fail.add_argument("--retries", type=_integer(0), default=3, metavar="N",
                      help="retries after a failed attempt before the job is dead-lettered "
                           "(default: %(default)s)")
    fail.add_argument("--base-delay", type=_seconds, default=0.1, metavar="S",
                      help="backoff before the first retry; it doubles for each next one "
                           "(default: %(default)s)")

    out = run.add_argument_group("output")
    out.add_argument("--trace", type=_output_file, metavar="FILE.jsonl",
                     help="save every event as JSON lines (jobq.Trace.from_jsonl reads them)")
    out.add_argument("--plot", type=_image_file, metavar="FILE.png",
                     help="save a dashboard of the run as an image (.png, .svg, .pdf, ...)")
    out.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="draw a progress bar on stderr, with elapsed time, rate, retries and "
                          "dead letters (default: only when stderr is a terminal, so a log "
                          "file gets no bar)")
    out.add_argument("--show-dead-letters", type=_count_or_all,
                     default=DEFAULT_SHOWN_DEAD_LETTERS, metavar="N",
                     help="after the summary, list the first N dead-lettered jobs with their "
                          "last error on stderr; 'all' lists every one, 0 none "
                          "(default: %(default)s)")
    out.add_argument("--bounded-memory", action="store_true",
                     help="keep no events and no results (memory does not grow with the "
                          "number of jobs); --trace is then streamed to its file; --plot is "
                          "not possible")
    _add_worker_parser(commands)  # `jobq worker`: see the section "the worker command"
    return parser, run


def _complete(run: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check what argparse cannot check alone, and fill in the defaults that depend on
    TARGET. Exits with code 2 (run.error) at the first problem, as argparse does."""
    if args.progress is None:  # neither --progress nor --no-progress
        args.progress = _is_terminal(sys.stderr)
    if args.bounded_memory and args.plot:
        run.error("argument --plot: not possible with --bounded-memory, which keeps no events "
                  "to draw (use --trace to stream them to a file)")
    if args.target is not None:
        # Refused, not ignored: `--jobs 50` with TARGET surely expects 50 jobs, and would
        # silently get whatever the function makes.
        for name, flag in MIX_ONLY.items():
            if getattr(args, name) is not None:
                run.error(f"argument {flag}: not possible with TARGET {args.target!r}, whose "
                          f"function makes the jobs ({', '.join(MIX_ONLY.values())} shape "
                          f"the seeded mix only)")
        # Imported now, after every option was checked and before anything starts: a typo in
        # TARGET is a usage error, like a typo in an option.
        try:
            args.target = _load_target(args.target)
        except _TargetError as exc:
            run.error(f"argument TARGET {args.target!r}: {exc}")
    defaults = {"jobs": DEFAULT_JOBS, "mix": parse_mix(DEFAULT_MIX),
                "cpu_iterations": DEFAULT_CPU_ITERATIONS, "max_delay": DEFAULT_MAX_DELAY,
                "fail_rate": DEFAULT_FAIL_RATE if args.target is None else 0.0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


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
    show_dead_letters: int | None  # None: all
    bounded_memory: bool
    target: Target | None  # None: the seeded mix (jobs, mix, cpu_iterations, max_delay)

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


# -- your own jobs: TARGET ----------------------------------------------------------------
# `jobq run module:function` takes its jobs from a function of yours. What can be checked
# without running it - the module imports, the name is there, it is a function that needs no
# arguments - is checked with the command line (_load_target): a mistake there is a usage
# error, found before anything starts. What the function does is found out as it runs
# (_Feed).

# What a TARGET may give: a Job, or a bare job type (the pipeline gives it the next free id).
ITEM_TYPES = (Job, CpuBound, AsyncIo, Delayed, Call, Blocking)
_ITEM_NAMES = "a Job or a job type (Call, Blocking, CpuBound, AsyncIo, Delayed)"


class _TargetError(Exception):
    """TARGET cannot be used, or failed while making the jobs. One line: it is printed as
    the reason the command exits with code 2. (The command's own, never raised out of it:
    jobq.errors holds the errors of the library.)"""


@dataclass(frozen=True)
class Target:
    """TARGET, imported: the text as given (`examples.my_jobs:jobs`) and the function."""

    text: str
    function: Callable[[], object]


def _load_target(text: str) -> Target:
    """Import the function `text` names - `module:function` or `path/to/file.py:function`
    (the function part may be dotted: `module:obj.method`) - without calling it. Raises
    _TargetError saying what is wrong.

    A module name is looked up from the current directory first, as `python -m` does - for
    the `jobq` console script too, which would not otherwise look there. A file is imported
    as a module named after it, from its own directory, as `python path/to/file.py` runs
    it. Either way the function has an importable name, and a process pool needs one: a
    Blocking job's function is sent to the pool's processes by name, and each of them starts
    with a copy of our sys.path (multiprocessing sends it), so it finds the module too.
    """
    where, colon, name = text.rpartition(":")
    if not (colon and where and name):
        missing = "module" if colon and not where else "function"
        raise _TargetError(f"names no {missing}: write MODULE:FUNCTION (examples.my_jobs:jobs) "
                           f"or PATH.py:FUNCTION (examples/my_jobs.py:jobs)")
    if where.endswith(".py") or "/" in where or os.sep in where:
        module = _import_file(where)
    else:
        if not all(part.isidentifier() for part in where.split(".")):
            raise _TargetError(f"{where!r} is neither a module name (package.module) nor a "
                               f"path to a .py file")
        _look_in_first(os.getcwd())
        module = _import(where)
    function = _attribute(module, name)
    return Target(text, function)


def _look_in_first(directory: str) -> None:
    """Put `directory` first on sys.path, unless it is on it already (`python -m` puts the
    current directory there, as "" or as its path)."""
    if directory in sys.path or (directory == os.getcwd() and "" in sys.path):
        return
    sys.path.insert(0, directory)


def _import_file(where: str) -> ModuleType:
    path = Path(where)
    if path.suffix != ".py":
        raise _TargetError(f"{where!r} is not a .py file")
    if not path.is_file():
        raise _TargetError(f"there is no file {where!r}")
    name = path.stem
    if not name.isidentifier():
        raise _TargetError(f"{where!r} cannot be imported: {name!r} is not a module name "
                           f"(letters, digits and _ only; rename the file)")
    _look_in_first(str(path.resolve().parent))
    module = _import(name)
    # Imported by its name, so the name may be taken: by a module imported already (the
    # standard library's `queue`, say) or by one found earlier on sys.path. Running that
    # one instead would be a confusing mistake.
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != path.resolve():
        taken_by = _shown_path(found) if found else "a built-in module"
        raise _TargetError(f"{where!r} cannot be imported as module {name!r}: that name is "
                           f"taken by {taken_by} - rename the file")
    return module


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Not found: the module itself (or its package), or something *it* imports?
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise _TargetError(f"no module named {missing!r} (looked in the current directory, "
                               f"{os.getcwd()}, then the installed packages)") from None
        raise _TargetError(f"importing {name!r} failed: {_failure(exc)}") from None
    except (Exception, SystemExit) as exc:  # a module may run anything when imported
        raise _TargetError(f"importing {name!r} failed: {_failure(exc)}") from None


def _attribute(module: ModuleType, dotted: str) -> Callable[[], object]:
    """The function `dotted` names in `module`, checked to be callable with no arguments."""
    value: object = module
    owner = f"module {module.__name__!r}"  # what `value` is, for messages
    walked = [module.__name__]
    for part in dotted.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            close = difflib.get_close_matches(part, dir(value), n=1)
            hint = f" - did you mean {close[0]!r}?" if close else ""
            raise _TargetError(f"{owner} has no attribute {part!r}{hint}") from None
        walked.append(part)
        owner = ".".join(walked)
    if not callable(value):
        raise _TargetError(f"{owner} is {_a(value)} {check.shown(value)}, not a function")
    try:
        signature: inspect.Signature | None = inspect.signature(value)
    except (TypeError, ValueError):  # no signature to read (some built-ins): calling will tell
        signature = None
    if signature is not None:
        try:
            signature.bind()
        except TypeError:
            needed = [name for name, parameter in signature.parameters.items()
                      if parameter.default is parameter.empty
                      and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)]
            raise _TargetError(f"{owner} needs arguments ({', '.join(needed)}); TARGET's "
                               f"function is called with none") from None
    return value


class _Feed:
    """The run's jobs, taken one at a time as the producer asks for them (so a generator of
    a million jobs is never a list): the seeded mix, or what TARGET's function gives.

    TARGET's function is your code, and may fail at two moments:
    * when called (`open`): it raises, or returns something that is not jobs. No job exists
      yet, so nothing runs: _TargetError, exit 2 - like a bad command line.
    * while the jobs are taken (`submit_all`): its generator raises, or gives an item that
      is not a job, or one submit refuses (a duplicate id). The jobs taken before were
      accepted - a promise - so they still run and are reported. The failure is kept in
      `error`, no more jobs are taken, and the run drains as if it had ended; exit 2.
    """

    def __init__(self, target: Target | None, mix: Iterator[Job] | None = None,
                 total: int | None = None) -> None:
        self.target = target
        self._items: Iterable[object] | AsyncIterable[object] | None = mix
        self._iterator: Iterator[object] | AsyncIterator[object] | None = None
        self.total = total  # known up front for the mix, and for a TARGET that gives a list
        self.accepted = 0
        self.error: str | None = None  # why TARGET stopped giving jobs; None: it did not fail

    def describe(self, options: RunOptions) -> str:
        """For the "started:" line."""
        if self.target is None:
            return f"{options.jobs} jobs"
        return f"the jobs of {self.target.text}"

    async def open(self) -> None:
        """Call TARGET's function - awaiting what it returns, if that is awaitable - and check
        that the jobs it gave can be iterated. Raises _TargetError."""
        if self.target is None:
            return
        name = self.target.text
        try:
            made = self.target.function()
            if inspect.isawaitable(made):  # an async def, or a function returning a future
                made = await made
        except (Exception, SystemExit) as exc:  # your code: anything may come out of it
            raise _TargetError(f"TARGET {name!r} raised {_failure(exc)}; no job ran") from None
        if isinstance(made, ITEM_TYPES):
            raise _TargetError(f"TARGET {name!r} returned a single {type(made).__name__}, not "
                               f"jobs: return a list of jobs, or yield them; no job ran")
        if isinstance(made, (str, bytes)) or not isinstance(made, (Iterable, AsyncIterable)):
            what = "None" if made is None else f"{_a(made)} {check.shown(made)}"
            raise _TargetError(
                f"TARGET {name!r} returned {what}, not jobs: return or yield them (an "
                f"iterable, an async iterable, or a coroutine giving one); no job ran")
        if isinstance(made, Sized):
            self.total = len(made)
        self._items = made

    async def submit_all(self, pipe: Pipeline) -> None:
        """Submit every job, in order, each waiting for space in the queue. TARGET's failure
        ends it early (kept in `error`); PipelineClosedError (shutdown began) is raised."""
        try:
            while (item := await self._next()) is not _END:
                try:
                    await pipe.submit(self._check(item))
                except (InvalidJobError, NotImportableError) as exc:  # a duplicate id, say
                    if self.target is None:
                        raise  # a bug in make_jobs
                    raise _TargetError(f"gave a job the pipeline refused, its item "
                                       f"{self.accepted + 1}: {str(exc).rstrip('.')}") from None
                self.accepted += 1
        except _TargetError as exc:
            assert self.target is not None
            self.error = f"TARGET {self.target.text!r} {exc}"
        finally:
            await self.close()

    async def _next(self) -> object:
        """The next item, or _END. TARGET's failure comes out as _TargetError."""
        try:
            if self._iterator is None:
                assert self._items is not None, "open() first"
                items = self._items
                self._iterator = aiter(items) if isinstance(items, AsyncIterable) else iter(items)
            if isinstance(self._iterator, AsyncIterator):
                return await anext(self._iterator)
            return next(self._iterator)
        except (StopIteration, StopAsyncIteration):
            return _END
        except (Exception, SystemExit) as exc:
            if self.target is None:
                raise
            raise _TargetError(f"raised {_failure(exc)} when asked for its item "
                               f"{self.accepted + 1}") from None

    def _check(self, item: object) -> Job | JobType:
        """`item` if it is a job; else _TargetError, saying what to give instead."""
        if isinstance(item, ITEM_TYPES):
            return item
        position = f"its item {self.accepted + 1}"
        if inspect.iscoroutine(item):
            # `yield fetch(1)` for `yield Call(fetch, 1)`: the commonest slip. Closed, so
            # Python does not add a "never awaited" warning to our message.
            name = getattr(item, "__qualname__", "fn")
            item.close()
            raise _TargetError(f"gave a coroutine, {name}(...), as {position}, not "
                               f"{_ITEM_NAMES}: give Call({name}, ...) - the function and its "
                               f"arguments - not {name}(...)")
        hint = ""
        if callable(item):
            hint = ": wrap a function - Call(fn, ...) for async def, Blocking(fn, ...) for def"
        raise _TargetError(f"gave {_a(item)} {check.shown(item)} as {position}, not "
                           f"{_ITEM_NAMES}{hint}")

    async def close(self) -> None:
        """Close TARGET's generator, if it has one: its `finally` blocks run now, on this
        loop (an async generator left open would be finalised by the loop, late, or not at
        all). Idempotent."""
        iterator, self._iterator = self._iterator, None
        # getattr: an iterator need not be a generator (a list's has nothing to close).
        try:
            if isinstance(iterator, AsyncIterator):
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            elif iterator is not None:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except (Exception, SystemExit) as exc:
            if self.target is not None and self.error is None:
                self.error = (f"TARGET {self.target.text!r} raised {_failure(exc)} when its "
                              f"generator was closed")


_END = object()  # what _Feed._next returns when the jobs have run out


def _a(value: object) -> str:
    """'a str', 'an int': the type of `value`, with its article."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _failure(exc: BaseException) -> str:
    """`exc` in one line, with where it was raised: 'ValueError: no (my_jobs.py, line 12)'."""
    text = " ".join(str(exc).split()).rstrip(".")  # one line, whatever the message holds
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    where = _where(exc)
    return f"{what} ({where})" if where else what


def _where(exc: BaseException) -> str | None:
    """The line of *your* code the exception came from: the innermost frame outside jobq,
    the standard library and the installed packages - `Delayed(-1)` fails inside jobq, but
    the line to fix is the one that wrote it. None if there is no such frame (a SyntaxError
    names its line in its message; importlib is all its traceback holds)."""
    library = tuple({os.path.dirname(os.path.abspath(__file__)) + os.sep,
                     os.path.join(sys.prefix, ""), os.path.join(sys.base_prefix, "")})
    yours = [frame for frame in traceback.extract_tb(exc.__traceback__)
             if not frame.filename.startswith("<")  # "<frozen importlib._bootstrap>"
             and not os.path.abspath(frame.filename).startswith(library)]
    if not yours:
        return None
    return f"{_shown_path(yours[-1].filename)}, line {yours[-1].lineno}"


def _shown_path(filename: str) -> str:
    """A path relative to the current directory if it is below it, else as it is."""
    relative = os.path.relpath(filename)
    return filename if relative.startswith("..") else relative


# -- status lines, and streams that fail --------------------------------------------------


def _to_stderr(text: str) -> None:
    """Write `text` on stderr, if there is one that works; never raise.

    Status lines are a courtesy: stderr may be closed (`2>&-`, as cron may start a command;
    Python then sets sys.stderr to None - and print(file=None) would write on *stdout*), or
    its reader may have gone (a broken pipe). Neither may cost the run or its exit code.
    """
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        _discard(stream)


def _is_terminal(stream: IO[str] | None) -> bool:
    """Is `stream` a terminal? (Where the progress bar is drawn by default: a file or a pipe
    - a log - would get every frame of it.) False for a closed or a replaced stream."""
    if stream is None:
        return False
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):  # closed, or not a file at all
        return False


def _say(message: str, *, new_line: bool = False) -> None:
    """A status line on stderr, so stdout holds only the summary. `new_line`: start on a
    line of its own, below a progress bar that may be drawn on the current line."""
    prefix = "\n" if new_line else ""
    _to_stderr(f"{prefix}jobq: {message}\n")


def _discard(stream: IO[str]) -> None:
    """Point a failed stream's file descriptor at /dev/null.

    Later writes to it - ours, tqdm's, and the interpreter's own flush at exit - then succeed
    and go nowhere. Without this the flush at exit fails again, prints "Exception ignored"
    and turns our exit code into 120 (the advice of the Python docs on SIGPIPE).
    """
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (a test's capture)
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _keep_standard_fds_open() -> None:
    """Open /dev/null on file descriptors 0-2 where one is closed (`2>&-`).

    Otherwise the next file or socket opened takes the lowest free number - 2 - and whatever
    is written to "stderr" goes into it: by a process-pool worker, which inherits fd 2 as its
    stderr, or by C code. sys.stderr stays None: Python decided that at start-up.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


# -- signals ------------------------------------------------------------------------------


class _Interrupts:
    """SIGINT / SIGTERM from main()'s first line to its last: the first one stops gracefully
    (no new jobs, the rest drain), the second one cuts the jobs still running.

    A signal may land anywhere, and where it lands decides what can safely be done:

        start-up   parsing, the LocalServer starting, the loop being made
        the run    the pipeline on its loop
        output     the summary, the trace file, the dashboard (a big one takes a minute)

    One Python-level handler (`catch`) covers all three, and it only *records* the signal.
    Python's default - KeyboardInterrupt raised at whatever line was running, halfway through
    starting the server or drawing the dashboard - left a traceback and no report. During
    the run the handler also hands the signal to the loop (`call_soon_threadsafe`), where
    `act` runs as an ordinary callback: never in the middle of the pipeline's bookkeeping.
    Signals recorded during start-up are acted on the moment the run begins (it begins
    stopped). Signals during the output let it finish; then the command exits 3.

    Why not loop.add_signal_handler for the run: removing it afterwards puts the *default*
    handlers back, and a SIGTERM before ours are reinstalled would kill the process.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []  # every signal so far, in order
        self.acted = 0  # how many of them the run has acted on (the first two count)
        self._previous: dict[signal.Signals, Any] = {}  # handlers to restore on release()
        # Set while the run is on (attach .. detach): the loop to hand signals to, and what
        # acting on them needs.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pipe: Pipeline | None = None
        self._drain_timeout = 0.0
        self._progress = False
        self._stopping: asyncio.Event | None = None
        self.cut = False  # a second signal cancelled the running jobs (pipe.token)
        self._run_over = False
        self._exit_code: int | None = None  # see exiting()

    def catch(self) -> None:
        """Install the recording handler (main() does it first thing)."""
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._record)
            except ValueError:  # not the main thread: signals keep what they had
                continue

    def release(self) -> None:
        """Restore the handlers catch() replaced (main() may run inside a bigger program)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # Python runs this in the main thread between two bytecodes of whatever it was doing:
        # record, and leave the acting to a safe point.
        if self._exit_code is not None:
            os._exit(self._exit_code)  # see exiting()
        sig = signal.Signals(signum)
        self.received.append(sig)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed a moment ago
                self._loop.call_soon_threadsafe(self.act)
        elif self._run_over:
            # Say it now - the dashboard may take a minute - with one raw write: sys.stderr
            # may be halfway through a write of its own, and its buffer is not reentrant.
            with contextlib.suppress(OSError):
                os.write(2, f"jobq: {sig.name}: the jobs have ended; finishing the output, "
                            "then exiting\n".encode())

    def attach(self, drain_timeout: float, progress: bool) -> asyncio.Event:
        """The run begins (on its loop): from now on signals are acted on as they come.
        Returns the event a first signal sets: "stop producing and drain" - also before the
        pipeline exists, while TARGET's function is called (a slow one is then cancelled)."""
        self._drain_timeout, self._progress = drain_timeout, progress
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        return self._stopping

    def watch(self, pipe: Pipeline) -> None:
        """The run's pipeline exists: a second signal from now on cancels its running jobs.
        (One that came before had none to cancel: the first one stopped the run before it
        submitted any.)"""
        self._pipe = pipe

    def detach(self) -> None:
        """The run is over: signals from now on are recorded for the exit code only."""
        self._loop = self._pipe = self._stopping = None
        self._run_over = True

    def exiting(self, code: int) -> None:
        """The program has said its outcome and returns `code`; what is left is the
        interpreter's exit. It may wait for a thread (a cpu job cut at the deadline runs on
        in its thread): a signal now ends that wait and the process, with `code`. Once exit
        handlers run, signals are ignored outright - Python then puts the default handlers
        back, and a late SIGINT would still end the process as killed (exit -2)."""
        self._exit_code = code
        atexit.register(self._ignore)

    def _ignore(self) -> None:
        for sig in self._previous:  # the signals catch() took over
            signal.signal(sig, signal.SIG_IGN)

    def act(self) -> None:
        """On the loop: act on every signal not acted on yet, in the order they came."""
        if self._stopping is None:
            return  # the run is over (a callback scheduled just before it ended)
        while self.acted < len(self.received):
            sig = self.received[self.acted]
            self.acted += 1
            if self.acted == 1:
                _say(f"{sig.name}: stopping - no new jobs; draining queued and running jobs "
                     f"(up to {self._drain_timeout:g} s); {sig.name} again cancels them",
                     new_line=self._progress)
                self._stopping.set()
            elif self.acted == 2:
                _say(f"{sig.name} again: cancelling the jobs still running",
                     new_line=self._progress)
                if self._pipe is not None:
                    self._pipe.token.cancel()  # "stop now": the drain ends, running jobs are cut
                    self.cut = True


# -- running ------------------------------------------------------------------------------


class _TraceFile:
    """`--trace` with `--bounded-memory`: each event is written to the file as it happens.

    The command keeps the file itself, as a listener of the run's Trace, so a write that
    fails - a full disk - is its to handle: writing stops, the first error is kept, and the
    run goes on (the jobs do not depend on their trace); it is reported with the rest of
    the output (exit 5). The file is opened (emptied) at the first event, not before: a
    TARGET that fails before the run leaves it as it was.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: OSError | None = None
        self.trace: Trace | None = None  # the run's trace, whose header the file starts with
        self._file: IO[str] | None = None
        self._opened = False

    def write(self, event: Event) -> None:
        if not self._opened:
            self._opened = True
            try:
                self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - close()
                header = None if self.trace is None else self.trace.header
                if header is not None:  # so that Trace.from_jsonl + plot need nothing else
                    self._file.write(header.to_json() + "\n")
            except OSError as exc:
                self.error = exc
        if self._file is not None:
            try:
                self._file.write(event.to_json() + "\n")
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        """Flush and close; idempotent (run_command calls it once the run has ended)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = self.error or exc
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails again
                file.close()


class _ProgressWatch:
    """The command line's progress bar, kept by a listener of the run's Trace: one step per
    job that ended (its one final event), and the retries and dead letters so far next to it
    ("retries=3 dead=1", as the summary counts them: retries scheduled, jobs dead-lettered).
    """

    def __init__(self, bar: CountingProgress) -> None:
        self.bar = bar
        self.retries = 0
        self.dead = 0
        bar.set_counts(retries=0, dead=0)

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.RETRY_SCHEDULED:
            self.retries += 1
            self.bar.set_counts(retries=self.retries, dead=self.dead)
        elif kind is EventKind.DEAD_LETTERED:
            self.dead += 1
            self.bar.set_counts(retries=self.retries, dead=self.dead)
            self.bar.update(1)
        elif kind is EventKind.SUCCEEDED or kind is EventKind.CANCELLED:
            self.bar.update(1)


async def _produce_and_drain(pipe: Pipeline, feed: _Feed, progress: bool) -> None:
    try:
        await feed.submit_all(pipe)
    except PipelineClosedError:
        # Shutdown began while we waited for space: a second signal cancelled pipe.token
        # ("stop now") before the first had stopped us, or a stage crashed (shutdown()
        # raises about that). The job in hand was not accepted, so nothing is lost: stop
        # producing, as a producer that was cancelled does.
        return
    if feed.error is not None:
        # Said now, not only at the end: the jobs accepted before may take a while to drain.
        _say(f"{feed.error}; no more jobs are taken from it (those accepted before still "
             f"run: {feed.accepted})", new_line=progress)
    await pipe.wait_drained()


async def _until_stopped(work: Coroutine[Any, Any, None], stopping: asyncio.Event) -> None:
    """Run `work` to its end, unless `stopping` is set first: then cancel it - a job not yet
    accepted is not submitted, a TARGET function still working is cancelled."""
    task = asyncio.create_task(work)
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        task.cancel()
        await asyncio.wait({task, stop})
    if not task.cancelled():
        task.result()  # a crash of the pipeline, or TARGET's failure, is not hidden


async def _execute(
    options: RunOptions, feed: _Feed, interrupts: _Interrupts, trace_file: _TraceFile | None,
) -> tuple[Pipeline, ShutdownReport]:
    """Run the jobs of `feed` until done or interrupted; (the pipeline, its report). Raises
    _TargetError if TARGET's function fails when called: then nothing ran."""
    stopping = interrupts.attach(options.drain_timeout, options.progress)
    try:
        # Printed once signals are acted on as they come (a test waits for it before it sends
        # a signal), and before the pipeline starts and draws its progress bar.
        clock = "virtual" if options.virtual_time else "real"
        _say(f"started: {feed.describe(options)}, {options.workers} workers, "
             f"{options.executor} executor, {clock} time")
        interrupts.act()  # signals recorded during start-up: the run begins stopped
        try:
            if not stopping.is_set():
                # TARGET's function is called on the run's loop (and clock): it may be async.
                # Before the progress bar exists, which can then show a total if known.
                await _until_stopped(feed.open(), stopping)
            pipe = _make_pipeline(options, trace_file)
            interrupts.watch(pipe)
            # Drawn by the command, not by the pipeline (progress=False there): its bar is
            # the notebooks' one, which shows no rate, and no retries or dead letters.
            bar = make_terminal_progress(options.progress, feed.total)
            if options.progress:
                pipe.trace.subscribe(_ProgressWatch(bar))
            try:
                async with pipe:
                    if not stopping.is_set():
                        await _until_stopped(_produce_and_drain(pipe, feed, options.progress),
                                             stopping)
                    # On a normal end everything has drained already; after a signal the
                    # deadline applies (a second signal cuts it short through pipe.token).
                    report = await pipe.shutdown(
                        drain_timeout=options.drain_timeout if stopping.is_set() else None
                    )
            finally:
                bar.close()  # the last frame, with the final counts; then a new line
        finally:
            await feed.close()  # a generator stopped by a signal, or never started
        return pipe, report
    finally:
        interrupts.detach()


def _make_pipeline(options: RunOptions, trace_file: _TraceFile | None) -> Pipeline:
    trace: bool | Trace = True
    if options.bounded_memory:
        # No events and no results in memory; the trace file, if any, is written as we go.
        trace = Trace(keep=False)
        if trace_file is not None:
            trace_file.trace = trace  # its header goes first (the Pipeline fills it in)
            trace.subscribe(trace_file.write)
    return Pipeline(
        workers=options.workers,
        capacity=options.capacity,
        executor=options.executor,
        retry=RetryPolicy(max_retries=options.retries, base_delay=options.base_delay),
        failures=FailurePlan(fail_rate=options.fail_rate, seed=options.seed),
        trace=trace,
        keep_results=not options.bounded_memory,
        progress=False,  # the command draws its own bar (see _execute)
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
    run_rows = [("jobs from", options.target.text)] if options.target is not None else []
    run_rows += [
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


def _exit_code(report: ShutdownReport, interrupts: _Interrupts, output_lost: bool,
               feed: _Feed) -> tuple[int, str]:
    """(exit code, the outcome in words). When several apply: 4, then 2, then 5, then 3,
    then 1 - a lost job is a bug whatever else happened; a TARGET that failed means the run
    was not the one asked for, whatever became of it; and 3 promises the report and the
    files, some of which 5 says are missing."""
    if report.lost:
        return EXIT_INTERNAL, f"{report.lost} jobs were lost - a bug in jobq"
    if interrupts.acted:
        code = EXIT_INTERRUPTED
        if interrupts.cut:
            outcome = "interrupted twice; cancelled the jobs still running"
        elif not report.drained:
            outcome = "interrupted; the drain deadline passed: cancelled the jobs still running"
        else:
            outcome = "interrupted; shut down gracefully"
    else:
        if report.succeeded == report.submitted:
            code = EXIT_OK
            outcome = f"all {report.submitted} jobs succeeded" if report.submitted else "no job ran"
        else:
            code = EXIT_DEAD_LETTERS
            outcome = f"{report.submitted - report.succeeded} jobs did not succeed"
        if interrupts.received:  # only once the run was over
            code = EXIT_INTERRUPTED
            outcome += f"; interrupted ({interrupts.received[0].name}) while writing the output"
    if output_lost:
        code, outcome = EXIT_OUTPUT, f"{outcome}, but some output could not be written"
    if feed.target is not None and feed.error is not None:
        code, outcome = EXIT_USAGE, f"TARGET {feed.target.text!r} failed (see above); {outcome}"
    return code, outcome


def _save_plot(options: RunOptions, pipe: Pipeline, metrics: Metrics, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a file, not a window: works without a display, and before pyplot
    import matplotlib.pyplot as plt

    from jobq.plotting import plot_dashboard

    fig = plot_dashboard(pipe.trace, metrics, workers=options.workers,
                         capacity=options.capacity, virtual=options.virtual_time)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _print_summary(text: str) -> bool:
    """The summary on stdout; False if it could not be written: stdout closed (`>&-`), its
    reader gone (`| head -1` has its line: a broken pipe), a full disk."""
    stream = sys.stdout
    try:
        if stream is None:  # started with stdout closed; print() would just do nothing
            raise OSError("stdout is closed")
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError) as exc:
        if stream is not None:
            _discard(stream)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        _say(f"the summary could not be written to stdout: {reason}")
        return False
    return True


def _dead_letters(options: RunOptions, pipe: Pipeline) -> str:
    """The first --show-dead-letters dead letters - job id, kind, attempts, last error - and
    how to see the others; "" if there are none. For stderr: stdout holds only the table."""
    letters = pipe.dead_letters
    total, limit = len(letters), options.show_dead_letters
    shown = total if limit is None else min(limit, total)
    if not shown:
        return ""
    were = "1 job was" if total == 1 else f"{total} jobs were"
    which = "" if shown == total else f"; the first {shown}"
    lines = [f"jobq: {were} dead-lettered{which} (job id, kind, attempts: last error):"]
    for letter in itertools.islice(letters, shown):
        error = " ".join((letter.last_error or "no error recorded").split())
        if len(error) > MAX_ERROR_SHOWN:
            error = error[:MAX_ERROR_SHOWN - 3] + "..."
        lines.append(f"  job {letter.job.id} ({letter.job.kind}, {len(letter.attempts)} "
                     f"attempts): {error}")
    if shown < total:
        keeps = (f"every one, with each attempt's error, is in {options.trace}"
                 if options.trace else "--trace FILE keeps every attempt's error")
        lines.append(f"  ... and {total - shown} more: --show-dead-letters all lists them "
                     f"all; {keeps}")
    return "\n".join(lines) + "\n"


def _save(option: str, path: Path, what: str, write: Callable[[], None]) -> bool:
    """Write one output file; say where it went, or in one line why not. False if not."""
    try:
        write()
    except OSError as exc:
        _say(f"{option}: could not write {str(path)!r}: {exc.strerror or exc}")
        return False
    _say(f"{what} written to {path}")
    return True


def _write_output(options: RunOptions, pipe: Pipeline, report: ShutdownReport, wall: float,
                  trace_file: _TraceFile | None) -> bool:
    """The summary, then the files - each written whatever became of the others: a reader
    that has gone costs the summary, not the trace. False if anything could not be written."""
    metrics = pipe.metrics()
    written = _print_summary(_summary(options, report, metrics, wall))
    listing = _dead_letters(options, pipe)
    if listing:
        _to_stderr(listing)
    if options.trace:
        trace = options.trace

        def write_trace() -> None:
            if trace_file is not None:  # --bounded-memory: written during the run
                if trace_file.error is not None:
                    raise trace_file.error
            else:
                pipe.trace.to_jsonl(trace)

        written = _save("--trace", trace, "trace", write_trace) and written
    if options.plot:
        plot = options.plot
        written = _save("--plot", plot, "dashboard",
                        lambda: _save_plot(options, pipe, metrics, plot)) and written
    return written


# -- the command --------------------------------------------------------------------------


def run_command(options: RunOptions, interrupts: _Interrupts) -> int:
    """`jobq run`: returns the exit code. `interrupts`: main()'s signal handling."""
    # The server runs in a thread of its own with real time (see jobq.testing), so it keeps
    # answering whatever clock the jobs run on. Only the seeded mix's io jobs use it.
    needs_server = options.target is None and options.mix["io"] > 0
    server = LocalServer().start() if needs_server else None
    trace_file = _TraceFile(options.trace) if options.trace and options.bounded_memory else None
    try:
        if options.target is not None:
            feed = _Feed(options.target)
        else:
            feed = _Feed(None, make_jobs(options, server.url("/ok") if server else None),
                         total=options.jobs)
        started = time.perf_counter()
        run = _execute(options, feed, interrupts, trace_file)
        if options.virtual_time:
            # No virtual deadline: the run ends when its jobs do, or at Ctrl-C. The warning
            # that cpu jobs take no virtual time is for notebooks and programs; here --help
            # says so, and a Python warning in the middle of the report would be noise.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InvisibleCpuWarning)
                pipe, report = run_virtual(run, deadline=None)
        else:
            pipe, report = asyncio.run(run)
        wall = time.perf_counter() - started
    except _TargetError as exc:
        # TARGET's function failed when called: no job exists, nothing ran, nothing to report.
        _say(f"{exc} (exit {EXIT_USAGE})")
        return EXIT_USAGE
    except AccountingError as exc:
        _say(f"internal accounting error: {exc}")
        return EXIT_INTERNAL
    except Exception:
        # A crashed pipeline stage is a bug in jobq, not a verdict on the jobs: keep exit 1
        # meaning "some jobs were dead-lettered", and show where it broke.
        _to_stderr(traceback.format_exc())
        _say("internal error: a pipeline stage crashed")
        return EXIT_INTERNAL
    finally:
        if server is not None:
            server.stop()
        if trace_file is not None:
            trace_file.close()

    written = _write_output(options, pipe, report, wall, trace_file)
    code, outcome = _exit_code(report, interrupts, output_lost=not written, feed=feed)
    _say(f"{outcome} (exit {code})")
    return code


# -- the worker command: `jobq worker` (distributed mode, issue 12) -----------------------
# A separate command with its own options and exit codes; it shares the signal handling
# (_Interrupts), the status lines (_say) and the table (format_table) with `jobq run`.

EXIT_BROKER = 6

WORKER_EXIT_CODES = """\
exit codes:
  0  stopped by SIGINT/SIGTERM: drained, and gave back what it could not finish in time
     (another worker takes it over)
  2  bad command-line usage, or an --import module that cannot be imported
  4  internal error: a bug in jobq
  6  the Redis server could not be reached, refused the password, or was gone longer than
     --reconnect-timeout (what this worker held is taken over by others)
"""


def _positive_seconds(text: str) -> float:
    return _number(text, "a finite number of seconds > 0", lambda v: math.isfinite(v) and v > 0)


def _add_worker_parser(commands: Any) -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    worker: argparse.ArgumentParser = commands.add_parser(
        "worker",
        help="run jobs from a Redis queue, on any machine that reaches the server, until "
             "SIGINT/SIGTERM",
        description="Run jobs from a Redis queue (jobq's distributed mode): at most --workers\n"
                    "at once, from a consumer group shared with every other worker of the\n"
                    "queue. Producers submit with jobq.RedisPipeline(URL, NAME).\n"
                    "\n"
                    "  python -m jobq worker --redis redis://HOST:6379/0 --queue emails \\\n"
                    "      --workers 8 --import app.jobs\n"
                    "\n"
                    "Ctrl-C or SIGTERM stops reading, lets running jobs finish for\n"
                    "--drain-timeout seconds and gives back the rest; a second one gives\n"
                    "back at once. Delivery is at least once: make your jobs idempotent.",
        epilog=WORKER_EXIT_CODES,
        formatter_class=raw,
    )
    worker.add_argument("--redis", metavar="URL", default=None,
                        help="redis://[:PASSWORD@]HOST:PORT/DB (default: $JOBQ_REDIS_URL - the "
                             "better place for a password: a command line is visible to every "
                             "local user)")
    worker.add_argument("--queue", metavar="NAME", required=True,
                        help="the queue's name (the producer's RedisPipeline(URL, NAME))")
    worker.add_argument("--workers", type=_integer(1), default=4, metavar="N",
                        help="jobs running at once in this process (default: %(default)s)")
    worker.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE",
                        help="a module whose functions Call / Blocking jobs may name; "
                             "repeat for more. Only these: a job naming any other function "
                             "is dead-lettered")
    worker.add_argument("--executor", choices=("process", "thread", "inline"),
                        default="process",
                        help="where CpuBound and Blocking jobs run (default: %(default)s)")
    worker.add_argument("--visibility-timeout", type=_positive_seconds, default=30.0,
                        metavar="S",
                        help="a job held this long without a heartbeat (its worker died) is "
                             "taken over by another worker (default: %(default)s)")
    worker.add_argument("--drain-timeout", type=_seconds, default=10.0, metavar="S",
                        help="after SIGINT/SIGTERM: seconds to let running jobs finish before "
                             "they are given back (default: %(default)s)")
    worker.add_argument("--retries", type=_integer(0), default=3, metavar="N",
                        help="retries after a failed attempt before the job is dead-lettered "
                             "(default: %(default)s)")
    worker.add_argument("--base-delay", type=_seconds, default=0.1, metavar="S",
                        help="backoff before the first retry; it doubles for each next one "
                             "(default: %(default)s)")
    worker.add_argument("--max-deliveries", type=_integer(1), default=5, metavar="N",
                        help="a job delivered more often than this (its workers kept dying) "
                             "is dead-lettered without running again (default: %(default)s)")
    worker.add_argument("--reconnect-timeout", type=_positive_seconds, default=30.0,
                        metavar="S",
                        help="how long to keep reconnecting to a lost server before exiting "
                             "(default: %(default)s)")
    worker.add_argument("--events", action=argparse.BooleanOptionalAction, default=True,
                        help="write events for the merged trace (jobq.merged_trace); "
                             "--no-events saves a little time per job (default: on)")
    worker.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a status line on stderr every few seconds (default: only when "
                             "stderr is a terminal)")
    return worker


def worker_command(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    """`jobq worker`: returns the exit code (see WORKER_EXIT_CODES)."""
    from jobq.broker import BrokerError, redact_url
    from jobq.redis_worker import RedisWorker, WorkerReport

    worker_parser = _worker_parser()
    url = args.redis or os.environ.get("JOBQ_REDIS_URL")
    if not url:
        worker_parser.error("argument --redis: required (or set JOBQ_REDIS_URL)")
    _look_in_first(os.getcwd())  # --import finds modules of the current directory first
    for module in args.imports:
        try:
            _import(module)
        except _TargetError as exc:
            worker_parser.error(f"argument --import {module!r}: {exc}")
    progress = _is_terminal(sys.stderr) if args.progress is None else args.progress
    try:
        worker = RedisWorker(
            url, args.queue, workers=args.workers, imports=args.imports,
            visibility_timeout=args.visibility_timeout, drain_timeout=args.drain_timeout,
            retry=RetryPolicy(max_retries=args.retries, base_delay=args.base_delay),
            max_deliveries=args.max_deliveries, executor=args.executor,
            reconnect_timeout=args.reconnect_timeout, events=args.events)
    except (InvalidConfigError, ValueError) as exc:
        worker_parser.error(str(exc))

    async def work() -> WorkerReport:
        stopping = interrupts.attach(args.drain_timeout, progress=False)
        try:
            imports = ", ".join(args.imports) or "none"
            _say(f"started: worker {worker.name} on queue {args.queue!r} at "
                 f"{redact_url(url)}, {args.workers} slots, {args.executor} executor, "
                 f"imports: {imports}")
            interrupts.act()  # a signal during start-up: stop as soon as we run
            running = asyncio.create_task(worker.run())

            async def follow_signals() -> None:
                await stopping.wait()
                worker.stop()  # the first signal: drain
                # A second signal cuts. _Interrupts.act() runs on this loop and has no hook
                # for a worker (it cancels a Pipeline's token): look ten times a second.
                while interrupts.acted < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                worker.cut()

            async def show_progress() -> None:
                while progress:
                    await asyncio.sleep(5)
                    numbers = worker.statistics()
                    _say(", ".join(f"{name} {count}" for name, count in numbers.items()))

            helpers = [asyncio.create_task(follow_signals()), asyncio.create_task(
                show_progress())]
            try:
                return await running
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
        finally:
            interrupts.detach()

    try:
        report = asyncio.run(work())
    except BrokerError as exc:
        _say(f"{exc} (exit {EXIT_BROKER})")
        return EXIT_BROKER
    except Exception:
        _to_stderr(traceback.format_exc())
        _say(f"internal error: the worker crashed (exit {EXIT_INTERNAL})")
        return EXIT_INTERNAL
    rows = [(name, str(count)) for name, count in report.rows()]
    rows.append(("drained before the deadline", "yes" if report.drained else "no"))
    _print_summary(format_table([
        ("worker", [("process", report.process), ("slots", str(report.slots)),
                    ("queue", args.queue)]),
        ("its jobs", rows),
    ]))
    given = f"; gave back {report.given_back} job(s)" if report.given_back else ""
    _say(f"worker stopped{given} (exit {EXIT_OK})")
    return EXIT_OK


def _worker_parser() -> argparse.ArgumentParser:
    """The `worker` subparser, to report usage errors below its own usage line."""
    parser = argparse.ArgumentParser(prog="jobq", add_help=False)
    commands = parser.add_subparsers()
    return _add_worker_parser(commands)


def main(argv: Sequence[str] | None = None) -> int:
    """The `jobq` command. Returns the exit code; bad usage exits with 2 (argparse).

    `argv=None` (the console script, `python -m jobq`): this is the program, so its signal
    handler stays while the interpreter exits, and a signal then ends the process with the
    exit code just announced - never a KeyboardInterrupt or a kill (see
    _Interrupts.exiting). With an explicit `argv` (main() called from other code, such as a
    test) the handlers it replaced are restored.
    """
    _keep_standard_fds_open()
    # First thing: from here on a SIGINT / SIGTERM is recorded, never a KeyboardInterrupt or
    # a kill at whatever line happens to run (see _Interrupts).
    interrupts = _Interrupts()
    interrupts.catch()
    try:
        parser, run = _parsers()
        args = parser.parse_args(argv)
        if args.command == "worker":
            code = worker_command(args, interrupts)
        else:
            _complete(run, args)  # exits with code 2, like any other usage error
            code = run_command(RunOptions.from_args(args), interrupts)
    finally:
        if argv is not None:
            interrupts.release()
    if argv is None:
        interrupts.exiting(code)
    return code
