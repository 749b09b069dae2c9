"""The command line: `python -m jobq run ...` - usage errors, a small run, its files, signals,
and your own jobs (`jobq run module:function`, with the functions of tests/cli_targets.py).

Cheap checks call `jobq.cli.main([...])` in this process; the runs that must be a real
program (the `-m` entry point, a process pool importing your module, signal drills) start
`python -m jobq` in a subprocess, from the repository's root.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

import jobq
from jobq import EventKind, Trace, metrics_from_trace
from jobq.cli import format_table, main, parse_mix
from jobq.offload import CpuOffload

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix signals")

# Where `python -m jobq run examples.my_jobs:jobs` is meant to be run from.
ROOT = Path(__file__).resolve().parent.parent

# Generous: a loaded CI machine may be slow, and a hang must fail rather than block forever.
STARTUP_TIMEOUT = 60.0
EXIT_TIMEOUT = 60.0


def table(stdout: str) -> dict[str, str]:
    """The printed summary as {label: value}: labels and values are 2+ spaces apart."""
    rows = {}
    for line in stdout.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


# -- usage ----------------------------------------------------------------------------


def test_help_lists_the_run_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "exit codes:" in out


def test_run_help_lists_options_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for option in ("--jobs", "--workers", "--capacity", "--mix", "--fail-rate", "--seed",
                   "--retries", "--base-delay", "--cpu-iterations", "--max-delay",
                   "--executor", "--drain-timeout", "--trace", "--plot", "--virtual-time",
                   "--progress", "--no-progress", "--show-dead-letters", "--bounded-memory"):
        assert option in out
    assert "(default: 200)" in out and "(default: cpu=0.3,io=0.3,delay=0.4)" in out
    assert "4 internal error" in out and "5 output could not be written" in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--mix", "cpu=0.5,io=0.6"], "--mix"),  # adds up to 1.1
        (["--mix", "gpu=1"], "--mix"),
        (["--mix", "cpu=0.5,cpu=0.5"], "--mix"),
        (["--mix", "cpu=lots"], "--mix"),
        (["--mix", "cpu=-0.5,io=1.5"], "--mix"),
        (["--jobs", "-5"], "--jobs"),
        (["--jobs=-5"], "--jobs"),
        (["--jobs", "ten"], "--jobs"),
        (["--workers", "0"], "--workers"),
        (["--capacity", "0"], "--capacity"),
        (["--fail-rate", "1.5"], "--fail-rate"),
        (["--retries", "-1"], "--retries"),
        (["--max-delay", "nan"], "--max-delay"),
        (["--base-delay", "inf"], "--base-delay"),
        (["--drain-timeout", "-1"], "--drain-timeout"),
        (["--cpu-iterations", "1.5"], "--cpu-iterations"),
        (["--executor", "gpu"], "--executor"),
        (["--trace", "/no/such/directory/run.jsonl"], "--trace"),
        (["--plot", "run.png", "--bounded-memory"], "--plot"),
        (["--show-dead-letters", "-1"], "--show-dead-letters"),
        (["--show-dead-letters", "some"], "--show-dead-letters"),
    ],
)
def test_bad_usage_exits_2_naming_the_option(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", *argv])
    assert exit_.value.code == 2
    assert f"argument {named}" in capsys.readouterr().err


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    installed = importlib.metadata.version("jobq")
    assert installed == jobq.__version__  # the metadata and the package agree
    assert capsys.readouterr().out == f"jobq {installed}\n"


def test_python_m_jobq_and_the_console_script_print_the_version() -> None:
    commands = [[sys.executable, "-m", "jobq", "--version"]]
    script = Path(sys.executable).parent / "jobq"
    if script.exists():
        commands.append([str(script), "--version"])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=EXIT_TIMEOUT)
        assert (done.returncode, done.stdout) == (0, f"jobq {jobq.__version__}\n"), done.stderr


def test_mix_shares_must_add_up_to_1_within_1e_9() -> None:
    assert parse_mix("cpu=0.1,io=0.2,delay=0.7") == {"cpu": 0.1, "io": 0.2, "delay": 0.7}
    assert parse_mix("delay=1") == {"cpu": 0.0, "io": 0.0, "delay": 1.0}
    assert parse_mix(f"cpu={1 - 1e-10}")["cpu"] == 1 - 1e-10
    with pytest.raises(Exception, match="add up to 1"):
        parse_mix(f"cpu={1 - 1e-8}")


def test_format_table_aligns_every_section_on_the_same_columns() -> None:
    text = format_table([("one", [("a", "1"), ("longer label", "22")]), ("two", [("b", "333")])])
    rows = [line for line in text.splitlines() if line[:1] in ("a", "l", "b")]
    assert len({len(line) for line in rows}) == 1  # values right-aligned on one edge
    assert text.splitlines()[1] == "-" * len(rows[0])


# -- runs -----------------------------------------------------------------------------


# Small jobs: on the virtual clock, real work in flight (an io request, a cpu job) holds the
# clock, so delays next to it pass at the real rate.
SMALL = ["run", "--jobs", "40", "--virtual-time", "--no-progress", "--cpu-iterations", "2000",
         "--max-delay", "0.05"]


@pytest.mark.parametrize(("fail_rate", "code"), [("0", 0), ("1", 1)])
def test_small_run_exit_code_follows_the_fail_rate(
    fail_rate: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # Threads, not processes: the same path through the pipeline without a pool's start-up.
    assert main([*SMALL, "--executor", "thread", "--fail-rate", fail_rate]) == code
    rows = table(capsys.readouterr().out)
    assert rows["submitted"] == "40" and rows["lost"] == "0"
    assert rows["succeeded"] == ("40" if code == 0 else "0")
    assert rows["dead-lettered"] == ("0" if code == 0 else "40")
    assert rows["retries"] == ("0" if code == 0 else str(40 * 3))


def test_trace_and_plot_files_agree_with_the_printed_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, plot = tmp_path / "run.jsonl", tmp_path / "run.png"
    code = main([*SMALL, "--executor", "thread", "--workers", "3",
                 "--trace", str(trace), "--plot", str(plot)])
    rows = table(capsys.readouterr().out)
    assert code == (0 if rows["dead-lettered"] == "0" else 1)
    loaded = metrics_from_trace(Trace.from_jsonl(trace), workers=3)
    assert loaded.jobs == 40
    for label, value in loaded.summary_rows():
        assert rows[label] == value, label
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert plot.stat().st_size > 10_000  # a real picture, not an empty canvas


def test_bounded_memory_streams_the_trace_to_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "run.jsonl"
    main([*SMALL, "--executor", "thread", "--bounded-memory", "--trace", str(trace)])
    rows = table(capsys.readouterr().out)
    assert rows["lost"] == "0"
    loaded_trace = Trace.from_jsonl(trace)
    # The streamed file describes itself too, like the kept trace's file.
    assert loaded_trace.header is not None and loaded_trace.header.workers == 4
    loaded = metrics_from_trace(loaded_trace, workers=4)
    assert loaded.jobs == 40 and rows["jobs ended"] == "40"
    for label, value in loaded.summary_rows():
        assert rows[label] == value, label


def test_python_m_jobq_runs_with_a_process_pool() -> None:
    """The real entry point, default executor: the pool's children import jobq.__main__
    as __mp_main__ and must not start a second run."""
    done = subprocess.run([sys.executable, "-m", "jobq", *SMALL], capture_output=True,
                          text=True, timeout=EXIT_TIMEOUT)
    rows = table(done.stdout)
    assert rows["lost"] == "0" and rows["submitted"] == "40", done.stderr
    assert done.returncode == (0 if rows["dead-lettered"] == "0" else 1), done.stderr
    assert done.stderr.count("started:") == 1


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "jobq"
    if not script.exists():
        pytest.skip("the jobq console script is not installed next to this Python")
    done = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True,
                          timeout=EXIT_TIMEOUT)
    assert done.returncode == 0 and "--bounded-memory" in done.stdout


# -- dead letters -----------------------------------------------------------------------
# Every attempt fails: 40 dead letters, listed after the summary on stderr.
ALL_FAIL = [*SMALL, "--executor", "thread", "--fail-rate", "1", "--retries", "1"]
DEAD_LETTER = re.compile(r"^  job (\d+) \((cpu|io|delay), 2 attempts\): (InjectedFailure: .*)$")


def _dead_letter_lines(err: str) -> list[tuple[int, str]]:
    return [(int(m[1]), m[3]) for line in err.splitlines() if (m := DEAD_LETTER.match(line))]


def test_the_first_dead_letters_are_listed_with_their_error_and_how_to_see_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(ALL_FAIL) == 1
    out, err = capsys.readouterr()
    rows = table(out)  # the table is as it was, and alone on stdout
    assert rows["dead-lettered"] == "40" and "job " not in out
    assert "jobq: 40 jobs were dead-lettered; the first 5 (job id, kind, attempts: last " \
           "error):" in err, err
    shown = _dead_letter_lines(err)
    assert len(shown) == 5, err
    for job_id, error in shown:
        assert error == f"InjectedFailure: the failure plan fails attempt 2 of job {job_id}"
    assert ("  ... and 35 more: --show-dead-letters all lists them all; --trace FILE keeps "
            "every attempt's error") in err
    assert err.strip().splitlines()[-1] == "jobq: 40 jobs did not succeed (exit 1)"


def test_show_dead_letters_all_lists_every_one_as_the_trace_has_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    trace = tmp_path / "run.jsonl"
    assert main([*ALL_FAIL, "--show-dead-letters", "all", "--trace", str(trace)]) == 1
    err = capsys.readouterr().err
    assert "jobq: 40 jobs were dead-lettered (job id, kind" in err and "more:" not in err
    recorded = [(event.job, event.info)
                for event in Trace.from_jsonl(trace).of_kind(EventKind.DEAD_LETTERED)]
    assert _dead_letter_lines(err) == recorded  # in the order they gave up, last error each


@pytest.mark.parametrize(("option", "listed"), [(["--show-dead-letters", "0"], 0),
                                                (["--show-dead-letters", "3"], 3)])
def test_show_dead_letters_n_lists_n_and_names_the_trace_file(
    option: list[str], listed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    trace = tmp_path / "run.jsonl"
    assert main([*ALL_FAIL, *option, "--trace", str(trace)]) == 1
    err = capsys.readouterr().err
    assert len(_dead_letter_lines(err)) == listed
    if listed:
        assert (f"... and {40 - listed} more: --show-dead-letters all lists them all; every "
                f"one, with each attempt's error, is in {trace}") in err
    else:
        assert "dead-lettered" not in err


def test_dead_letters_come_after_the_summary_table() -> None:
    # One stream for both, as a terminal shows them: the table, the list, the outcome.
    done = subprocess.run([sys.executable, "-m", "jobq", *ALL_FAIL, "--show-dead-letters", "2"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=EXIT_TIMEOUT, cwd=ROOT)
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    listed = lines.index("jobq: 40 jobs were dead-lettered; the first 2 (job id, kind, "
                         "attempts: last error):")
    rows = [i for i, line in enumerate(lines) if re.fullmatch(r"\S.*\S {2,}\S.*", line)]
    assert len(rows) > 20 and max(rows) < listed  # every row of the table came before
    assert [bool(DEAD_LETTER.match(line)) for line in lines[listed + 1:listed + 3]] == [True] * 2
    assert lines[listed + 3].startswith("  ... and 38 more:")
    assert lines[-1] == "jobq: 40 jobs did not succeed (exit 1)"


# -- the progress bar: in a terminal only, unless asked -----------------------------------

BAR_RUN = ["run", "--jobs", "40", "--mix", "delay=1", "--max-delay", "0.05", "--virtual-time",
           "--executor", "thread", "--fail-rate", "0.5", "--retries", "1"]
BAR_FRAME = re.compile(r"jobs: +\d+%\|")  # "jobs:  30%|███   | 12/40 [...]"
BAR_END = re.compile(r"jobs: 100%\|[^|]*\| 40/40 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ jobs/s, "
                     r"retries=(\d+) dead=(\d+)\]")


def _run_in_a_terminal(*argv: str) -> tuple[int, str, str]:
    """`python -m jobq *argv` with its stderr on a pseudo-terminal of 100 x 24 (a size of 0 x
    0, a bare pty's, would draw nothing) and its stdout on a pipe: (exit code, stdout, what
    the terminal got)."""
    import fcntl
    import pty
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "jobq", *argv], stdout=subprocess.PIPE,
                                stderr=terminal, text=True, cwd=ROOT)
    finally:
        os.close(terminal)  # the child has its own copy; its exit ends our reads
    chunks: list[bytes] = []

    def read() -> None:  # at once, as a terminal does: a full pty would block the child
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=EXIT_TIMEOUT)
        reader.join(timeout=EXIT_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    return proc.returncode, out, b"".join(chunks).decode()


def test_in_a_terminal_the_bar_shows_rate_elapsed_retries_and_dead_letters() -> None:
    code, out, terminal = _run_in_a_terminal(*BAR_RUN)
    rows = table(out)
    assert code == (1 if rows["dead-lettered"] != "0" else 0), terminal
    assert int(rows["retries"]) > 0 and int(rows["dead-lettered"]) > 0  # seed 1: both
    last = BAR_END.findall(terminal)
    assert last, terminal
    # The final frame's counts are the summary's.
    assert last[-1] == (rows["retries"], rows["dead-lettered"]), terminal
    assert "jobq: started:" in terminal and "did not succeed (exit 1)" in terminal


def test_in_a_terminal_no_progress_still_turns_the_bar_off() -> None:
    code, out, terminal = _run_in_a_terminal(*BAR_RUN, "--no-progress")
    assert code == 1 and table(out)["submitted"] == "40", terminal  # seed 1: dead letters
    assert not BAR_FRAME.search(terminal) and "jobs/s" not in terminal, terminal
    assert "jobq: started:" in terminal


@pytest.mark.parametrize(("flag", "drawn"), [(None, False), ("--progress", True)])
def test_a_log_file_gets_no_bar_unless_asked(
    flag: str | None, drawn: bool, tmp_path: Path,
) -> None:
    log = tmp_path / "jobq.log"
    with log.open("w") as stderr:
        done = subprocess.run([sys.executable, "-m", "jobq", *BAR_RUN, *([flag] if flag else [])],
                              stdout=subprocess.PIPE, stderr=stderr, text=True,
                              timeout=EXIT_TIMEOUT, cwd=ROOT)
    text = log.read_bytes().decode()  # as written: read_text() would turn "\r" into "\n"
    assert table(done.stdout)["submitted"] == "40", text
    assert "jobq: started:" in text  # the status lines are there either way
    assert ("\r" in text) == drawn and bool(BAR_END.search(text)) == drawn, text
    if not drawn:
        assert not BAR_FRAME.search(text), text


# -- signal drills --------------------------------------------------------------------


class Running:
    """`python -m jobq run ...` in a subprocess; its stderr is read line by line as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, text: str) -> None:
        """Wait until a line containing `text` has been printed on stderr."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"exited before printing {text!r}:\n{self.stderr}"
            self.stderr += line
            if text in line:
                return

    def finish(self) -> tuple[int, dict[str, str]]:
        """Wait for the exit; (exit code, the printed table)."""
        assert self.proc.stdout is not None
        # Wait first, read after: a hung run fails here instead of blocking the read forever
        # (the summary is a few kB, so it never fills the pipe while we wait).
        code = self.proc.wait(timeout=EXIT_TIMEOUT)
        out = self.proc.stdout.read()
        self._reader.join(timeout=EXIT_TIMEOUT)
        while (line := self._lines.get_nowait()) is not None:
            self.stderr += line
        return code, table(out)


class Start(Protocol):
    def __call__(self, *args: str, group: bool = False) -> Running: ...


@pytest.fixture
def start() -> Iterator[Start]:
    """Start `python -m jobq run --no-progress *args`, and return once it says "started:".
    `group`: in a process group of its own, as a terminal runs a command."""
    procs: list[subprocess.Popen[str]] = []

    def launch(*args: str, group: bool = False) -> Running:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobq", "run", "--no-progress", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=group, cwd=ROOT,
        )
        procs.append(proc)
        running = Running(proc)
        running.wait_for("started:")
        return running

    yield launch
    for proc in procs:  # a failed test must not leave a run behind
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# Enough work to last many seconds in real time; a signal cuts it short.
DELAYS = ["--jobs", "1000", "--mix", "delay=1", "--max-delay", "0.5", "--fail-rate", "0"]
THREAD_CPU = ["--jobs", "1000", "--mix", "cpu=0.5,delay=0.5", "--executor", "thread",
              "--cpu-iterations", "200000", "--max-delay", "0.5", "--fail-rate", "0"]


def _assert_drained(code: int, rows: dict[str, str], stderr: str) -> None:
    assert code == 3, stderr
    assert rows["lost"] == "0" and rows["drained before the deadline"] == "yes", stderr
    assert 0 < int(rows["submitted"]) < 1000  # stopped producing
    assert rows["succeeded"] == rows["submitted"], rows  # ...and finished what it accepted
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("sig", "work"), [(signal.SIGINT, DELAYS), (signal.SIGTERM, THREAD_CPU)])
def test_a_signal_drains_reports_and_exits_3(
    start: Start, sig: signal.Signals, work: list[str]
) -> None:
    run = start(*work)
    time.sleep(0.5)  # let some jobs finish first: a drain in the middle of a run
    run.proc.send_signal(sig)
    code, rows = run.finish()
    assert f"{sig.name}: stopping" in run.stderr
    _assert_drained(code, rows, run.stderr)
    assert run.stderr.splitlines()[-1] == "jobq: interrupted; shut down gracefully (exit 3)"


def test_a_second_sigint_cancels_the_jobs_still_running(start: Start) -> None:
    # Long delays and a long drain deadline: only the second signal can end this quickly.
    run = start("--jobs", "100", "--mix", "delay=1", "--max-delay", "20",
                "--drain-timeout", "60", "--fail-rate", "0")
    time.sleep(0.3)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for("stopping")  # two quick signals could merge into one before delivery
    run.proc.send_signal(signal.SIGINT)
    code, rows = run.finish()
    assert code == 3, run.stderr
    assert int(rows["cancelled: interrupted"]) > 0 and rows["lost"] == "0", run.stderr
    assert rows["drained before the deadline"] == "no"
    assert "cancelling the jobs still running" in run.stderr
    # The last line says what happened: not "shut down gracefully".
    assert run.stderr.splitlines()[-1] == (
        "jobq: interrupted twice; cancelled the jobs still running (exit 3)")


def test_a_drain_deadline_that_passes_says_it_cancelled_the_jobs_still_running(
    start: Start,
) -> None:
    run = start("--jobs", "100", "--mix", "delay=1", "--max-delay", "20",
                "--drain-timeout", "0.5", "--fail-rate", "0")
    time.sleep(0.3)
    run.proc.send_signal(signal.SIGINT)
    code, rows = run.finish()
    assert code == 3, run.stderr
    assert rows["drained before the deadline"] == "no" and rows["lost"] == "0", run.stderr
    assert int(rows["cancelled: interrupted"]) > 0, run.stderr
    assert run.stderr.splitlines()[-1] == (
        "jobq: interrupted; the drain deadline passed: cancelled the jobs still running "
        "(exit 3)")


def _report_sigint() -> int:
    """Runs in a pool process: 1 if that process ignores SIGINT."""
    return int(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)


def _pool_processes_ignore_sigint() -> bool:
    offload = CpuOffload("process", max_workers=1)
    try:
        return asyncio.run(offload.run(_report_sigint)) == 1
    finally:
        offload.close()


def test_ctrl_c_in_a_terminal_with_a_process_pool(start: Start) -> None:
    """A terminal's Ctrl-C sends SIGINT to the whole process group - the pool's processes
    too. They must leave it to the CLI, or their jobs die with KeyboardInterrupt."""
    assert _pool_processes_ignore_sigint(), "pool processes must leave Ctrl-C to the parent"
    run = start(*THREAD_CPU, "--executor", "process", group=True)
    time.sleep(1.0)  # the pool's processes start with the first cpu jobs
    os.killpg(run.proc.pid, signal.SIGINT)
    code, rows = run.finish()
    _assert_drained(code, rows, run.stderr)


# -- keeping its word whatever happens around the process -------------------------------
# Signals at awkward moments, a reader that has gone, a closed stderr, a path that cannot be
# written. Each drill is a real program receiving a real signal or a real broken pipe.

FINAL = (EventKind.SUCCEEDED, EventKind.DEAD_LETTERED, EventKind.CANCELLED)


def _jobs_in(trace: Path) -> int:
    """How many jobs ended in the trace file (each has exactly one final event)."""
    return len(Trace.from_jsonl(trace).of_kind(*FINAL))


# Runs the command with one function wrapped so that its Nth call first sends it signals:
# signals at an exact point of start-up, of the run or of the output, which no test
# could time from outside. Each is sent to this very thread, so it is delivered before
# pthread_kill returns - one delivery each (two SIGINTs pending at once would merge).
SIGNAL_INSIDE = """
import importlib, signal, sys, threading
module, _, path = sys.argv[1].partition(":")
owner = importlib.import_module(module)
*attributes, name = path.split(".")
for attribute in attributes:
    owner = getattr(owner, attribute)
real, signums, on_call = getattr(owner, name), sys.argv[2].split(","), int(sys.argv[3])
calls = 0

def signalled(*args, **kwargs):
    global calls
    calls += 1
    if calls == on_call:
        for signum in signums:
            signal.pthread_kill(threading.get_ident(), int(signum))
    return real(*args, **kwargs)

setattr(owner, name, signalled)
from jobq.cli import main
raise SystemExit(main(sys.argv[4:]))
"""


def _signal_inside(
    target: str, signals: Sequence[signal.Signals], *argv: str, on_call: int = 1
) -> subprocess.CompletedProcess[str]:
    """`jobq run --no-progress *argv` in a subprocess, receiving `signals` back to back as
    `target` ("module:attribute.path") is called for the `on_call`-th time."""
    return subprocess.run(
        [sys.executable, "-c", SIGNAL_INSIDE, target, ",".join(str(int(s)) for s in signals),
         str(on_call), "run", "--no-progress", *argv],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT,
    )


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGINT, signal.SIGINT)],
    ids=["SIGTERM-then-SIGINT", "three-SIGINTs"],
)
def test_signals_back_to_back_still_report_write_the_trace_and_exit_3(
    tmp_path: Path, signals: tuple[signal.Signals, ...]
) -> None:
    # All of them arrive while jobs run and before the loop could act on the first (they
    # come inside one call of Trace.emit, the 20th): the worst case for "a second signal
    # before the first has stopped the producer". Long delays and a long drain deadline:
    # only the second signal can end this quickly.
    trace = tmp_path / "run.jsonl"
    done = _signal_inside("jobq.trace:Trace.emit", signals, "--jobs", "100", "--mix", "delay=1",
                          "--max-delay", "20", "--drain-timeout", "60", "--fail-rate", "0",
                          "--trace", str(trace), on_call=20)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "cancelling the jobs still running" in done.stderr  # the second one was heard
    assert done.stderr.splitlines()[-1] == (
        "jobq: interrupted twice; cancelled the jobs still running (exit 3)")
    rows = table(done.stdout)
    assert rows["lost"] == "0" and int(rows["cancelled: interrupted"]) > 0, done.stderr
    assert _jobs_in(trace) == int(rows["submitted"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_during_start_up_stops_before_any_job_and_still_reports(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # io jobs: the command starts its LocalServer, and the signal comes as it does - before
    # the run (and its loop's signal handling) exists.
    trace = tmp_path / "run.jsonl"
    done = _signal_inside("jobq.testing:LocalServer.start", [sig], "--jobs", "40",
                          "--mix", "io=0.5,delay=0.5", "--executor", "thread",
                          "--virtual-time", "--trace", str(trace))
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{sig.name}: stopping" in done.stderr
    rows = table(done.stdout)
    assert rows["submitted"] == "0" and rows["lost"] == "0", done.stderr
    assert _jobs_in(trace) == 0


def test_a_signal_while_the_dashboard_is_drawn_still_writes_everything_and_exits_3(
    tmp_path: Path,
) -> None:
    trace, plot = tmp_path / "run.jsonl", tmp_path / "run.png"
    done = _signal_inside("jobq.plotting:plot_dashboard", [signal.SIGINT], *SMALL[1:],
                          "--executor", "thread", "--trace", str(trace), "--plot", str(plot))
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    rows = table(done.stdout)
    assert rows["submitted"] == "40" and rows["lost"] == "0", done.stderr
    assert _jobs_in(trace) == 40
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_stdout_nobody_reads_still_gets_the_files_written_and_exits_5(tmp_path: Path) -> None:
    trace, plot = tmp_path / "run.jsonl", tmp_path / "run.png"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone, as `| head -1` goes once it has its line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jobq", *SMALL, "--executor", "thread",
             "--trace", str(trace), "--plot", str(plot)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=EXIT_TIMEOUT,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "summary could not be written to stdout" in done.stderr
    assert _jobs_in(trace) == 40
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("stderr", ["closed", "broken"])
def test_a_closed_or_broken_stderr_costs_only_the_status_lines(
    tmp_path: Path, stderr: str
) -> None:
    # With the progress bar (--progress: stderr is no terminal here): it draws on stderr too.
    trace = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "jobq", "run", "--jobs", "40", "--mix", "delay=1",
               "--virtual-time", "--executor", "thread", "--max-delay", "0.05",
               "--fail-rate", "0", "--trace", str(trace), "--progress"]
    if stderr == "closed":  # `2>&-`, as cron may start a command
        done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", *command],
                              stdout=subprocess.PIPE, text=True, timeout=EXIT_TIMEOUT)
    else:  # a reader that has gone
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=write_end, text=True,
                                  timeout=EXIT_TIMEOUT)
        finally:
            os.close(write_end)
    rows = table(done.stdout)
    assert done.returncode == 0, done.stdout
    assert rows["succeeded"] == "40" and rows["lost"] == "0"
    assert "jobq:" not in done.stdout  # status lines never land on stdout instead
    assert _jobs_in(trace) == 40


@pytest.mark.parametrize(
    ("option", "where", "why"),
    [
        ("--trace", "{file}/run.jsonl", "Not a directory"),  # under a regular file
        ("--trace", "{dir}", "is a directory"),
        ("--trace", "{dir}/no/such/run.jsonl", "does not exist"),
        ("--trace", "/proc/jobq-run.jsonl", "cannot write"),  # root may not write there
        ("--plot", "{file}/run.png", "Not a directory"),
        ("--plot", "/proc/jobq-run.png", "cannot write"),
        ("--plot", "{dir}/run.xyz", ".png"),  # names the formats matplotlib can write
        ("--plot", "{dir}/run", ".png"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_refused_before_any_job_runs(
    option: str, where: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    path = where.format(file=a_file, dir=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([*SMALL, "--executor", "thread", option, path])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert f"argument {option}" in err and repr(path) in err and why in err, err
    assert out == "" and "started:" not in err
    assert not Path(path).is_file()  # the check left nothing behind


def test_checking_an_output_path_changes_nothing_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new, old = tmp_path / "new.jsonl", tmp_path / "old.png"
    old.write_text("keep me")
    with pytest.raises(SystemExit):  # refused for --jobs, after both paths were checked
        main(["run", "--trace", str(new), "--plot", str(old), "--jobs", "0"])
    assert not new.exists() and old.read_text() == "keep me"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    ("option", "extra"),
    [("--trace", []), ("--trace", ["--bounded-memory"]), ("--plot", [])],
)
def test_a_full_disk_at_write_time_keeps_the_report_and_exits_5(
    option: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full.png"  # --plot needs an image extension: a link to /dev/full
    full.symlink_to("/dev/full")
    path = "/dev/full" if option == "--trace" else str(full)
    code = main([*SMALL, "--executor", "thread", *extra, option, path])
    out, err = capsys.readouterr()
    rows = table(out)
    assert rows["submitted"] == "40" and rows["lost"] == "0"  # the report is not lost
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if "No space left on device" in line]
    assert len(failures) == 1 and option in failures[0] and path in failures[0], err
    assert code == 5, err


# -- your own jobs: jobq run module:function ---------------------------------------------
# The functions named here live in tests/cli_targets.py. In this process, runs use threads
# and the virtual clock (fast, same path through the pipeline); the process pool, the real
# entry points and signals are exercised in subprocesses.

QUICK = ["--executor", "thread", "--virtual-time", "--no-progress"]


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository's root, as a user would; whatever main() adds to sys.path
    (the directory TARGET is looked up in) is taken away again afterwards."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_run_help_shows_the_target_and_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[TARGET]" in out and "module:function" in out and "path/to/file.py:function" in out
    assert "python -m jobq run examples.my_jobs:jobs --workers 4" in out
    assert "(default: 0.1; with TARGET: 0)" in out  # --fail-rate


@pytest.mark.parametrize(
    ("option", "value"),
    [("--jobs", "5"), ("--mix", "delay=1"), ("--cpu-iterations", "10"), ("--max-delay", "0.1")],
)
@pytest.mark.usefixtures("at_root")
def test_an_option_of_the_seeded_mix_is_refused_with_a_target(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "examples.my_jobs:jobs", option, value])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert f"argument {option}: not possible with TARGET 'examples.my_jobs:jobs'" in err, err
    assert out == "" and "started:" not in err


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("no_such_module_xyz:jobs", "no module named 'no_such_module_xyz' (looked in the "
                                    "current directory"),
        ("examples.no_such_module:jobs", "no module named 'examples.no_such_module'"),
        ("tests.cli_targets:nope", "module 'tests.cli_targets' has no attribute 'nope'"),
        ("examples.my_jobs:job", "has no attribute 'job' - did you mean 'jobs'?"),
        ("tests.cli_targets:NOT_A_FUNCTION",
         "tests.cli_targets.NOT_A_FUNCTION is an int 42, not a function"),
        ("tests.cli_targets:needs_an_argument", "needs arguments (count); TARGET's function is "
                                                "called with none"),
        ("tests.cli_targets", "names no function: write MODULE:FUNCTION"),
        ("tests/no_such_file.py:jobs", "there is no file 'tests/no_such_file.py'"),
        ("not-a-module:jobs", "'not-a-module' is neither a module name"),
    ],
)
@pytest.mark.usefixtures("at_root")
def test_a_target_that_cannot_be_used_is_refused_before_anything_starts(
    target: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", target, *QUICK])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"jobq run: error: argument TARGET {target!r}: "), err
    assert why in message, err
    assert out == "" and "started:" not in err


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("import math\nmath.sqrt(-1)\n", "importing 'broken_{n}' failed: ValueError: math "
                                          "domain error ({path}, line 2)"),
        ("import no_such_dependency_xyz\n", "importing 'broken_{n}' failed: ModuleNotFoundError:"
                                            " No module named 'no_such_dependency_xyz' ({path},"
                                            " line 1)"),
        ("def jobs(:\n", "importing 'broken_{n}' failed: SyntaxError: invalid syntax "
                         "(broken_{n}.py, line 1)"),
        ("raise SystemExit(3)\n", "importing 'broken_{n}' failed: SystemExit: 3"),
    ],
    ids=["raises", "missing-dependency", "syntax-error", "sys.exit"],
)
def test_a_target_file_that_fails_to_import_names_the_error_and_its_line(
    source: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    n = request.node.callspec.id.replace("-", "_").replace(".", "_")  # a module name per case
    path = tmp_path / f"broken_{n}.py"
    path.write_text(source)
    with pytest.raises(SystemExit) as exit_:
        main(["run", f"{path}:jobs", *QUICK])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument TARGET '{path}:jobs': " + why.format(n=n, path=path) in err, err


def test_a_target_file_whose_name_is_taken_by_another_module_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Imported as module `queue`, the standard library's queue would be found instead.
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "queue.py"
    path.write_text("def jobs():\n    return []\n")
    with pytest.raises(SystemExit) as exit_:
        main(["run", f"{path}:jobs", *QUICK])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "cannot be imported as module 'queue': that name is taken by" in err, err


@pytest.mark.parametrize(
    ("target", "jobs", "kinds"),
    [
        ("tests.cli_targets:sync_jobs", 12, "delay 8, nap 4"),  # Jobs and bare job types
        ("tests.cli_targets:async_jobs", 10, "nap 10"),
        ("tests.cli_targets:coroutine_list", 6, "delay 3, nap 3"),
    ],
    ids=["generator", "async-generator", "coroutine-returning-a-list"],
)
@pytest.mark.usefixtures("at_root")
def test_the_jobs_a_target_gives_run_and_are_reported(
    target: str, jobs: int, kinds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", target, *QUICK]) == 0
    out, err = capsys.readouterr()
    rows = table(out)
    assert rows["jobs from"] == target
    assert rows["submitted"] == rows["succeeded"] == str(jobs) and rows["lost"] == "0"
    assert rows["jobs by kind"] == kinds  # your functions by name
    assert rows["retries"] == "0"  # --fail-rate is 0 with a TARGET unless given
    assert f"started: the jobs of {target}," in err


@pytest.mark.parametrize(
    ("target", "drawn", "not_drawn"),
    [("tests.cli_targets:sync_jobs", "jobs: 12", "%"),  # a generator: no total, a count
     ("tests.cli_targets:coroutine_list", "6/6", None)],  # a list: its length is the total
)
@pytest.mark.usefixtures("at_root")
def test_the_progress_bar_has_a_total_only_when_the_target_gives_a_list(
    target: str, drawn: str, not_drawn: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    # --progress: the bar is drawn by itself only in a terminal, and capsys is none.
    assert main(["run", target, "--executor", "thread", "--virtual-time", "--progress"]) == 0
    bar = capsys.readouterr().err.replace("\r", "\n")
    assert drawn in bar, bar
    if not_drawn is not None:
        assert not_drawn not in bar, bar


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("raises_at_once", "raised ValueError: no jobs today (tests/cli_targets.py, line "),
        ("returns_a_number", "returned an int 42, not jobs: return or yield them"),
        ("returns_nothing", "returned None, not jobs"),
    ],
)
@pytest.mark.usefixtures("at_root")
def test_a_target_that_fails_when_called_runs_nothing_and_exits_2(
    target: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "run.jsonl"
    code = main(["run", f"tests.cli_targets:{target}", *QUICK, "--bounded-memory",
                 "--trace", str(trace)])
    out, err = capsys.readouterr()
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"jobq: TARGET 'tests.cli_targets:{target}' {why}"), err
    assert last.endswith("; no job ran (exit 2)"), err
    assert out == ""  # no job, no report
    assert not trace.exists()  # nor an empty trace file


@pytest.mark.parametrize(
    ("target", "accepted", "why"),
    [
        ("raises_midway", 3, "raised RuntimeError: lost the connection to the job list "
                             "(tests/cli_targets.py, line "),
        ("bad_item", 3, "gave a str 'oops' as its item 4, not a Job or a job type"),
        ("coroutine_item", 1, "gave a coroutine, nap(...), as its item 2, not a Job or a job "
                              "type (Call, Blocking, CpuBound, AsyncIo, Delayed): give "
                              "Call(nap, ...)"),
        ("duplicate_ids", 2, "gave a job the pipeline refused, its item 3: Job.id 1 was "
                             "already submitted"),
    ],
)
@pytest.mark.usefixtures("at_root")
def test_a_target_that_fails_midway_still_runs_and_reports_the_jobs_it_gave(
    target: str, accepted: int, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "run.jsonl"
    code = main(["run", f"tests.cli_targets:{target}", *QUICK, "--trace", str(trace)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert f"jobq: TARGET 'tests.cli_targets:{target}' {why}" in err, err
    assert f"no more jobs are taken from it (those accepted before still run: {accepted})" in err
    rows = table(out)
    assert rows["submitted"] == rows["succeeded"] == str(accepted) and rows["lost"] == "0"
    assert _jobs_in(trace) == accepted
    assert err.strip().splitlines()[-1] == (
        f"jobq: TARGET 'tests.cli_targets:{target}' failed (see above); all {accepted} jobs "
        f"succeeded (exit 2)")


@pytest.mark.usefixtures("at_root")
def test_a_blocking_function_a_pool_cannot_import_is_refused_as_the_targets_mistake(
    capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused when submitted, before any pool process starts.
    code = main(["run", "tests.cli_targets:unimportable_blocking", "--executor", "process",
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert ("TARGET 'tests.cli_targets:unimportable_blocking' gave a job the pipeline refused, "
            "its item 1: Blocking.fn 'unimportable_blocking.<locals>.inner' is defined in a "
            "nested function") in err, err
    assert table(out)["submitted"] == "0"
    assert err.strip().splitlines()[-1].endswith("failed (see above); no job ran (exit 2)")


@pytest.mark.usefixtures("at_root")
def test_a_failed_target_outranks_dead_letters_and_fail_rate_applies_to_your_jobs(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "tests.cli_targets:bad_item", *QUICK, "--fail-rate", "1",
                 "--retries", "1"])
    rows = table(capsys.readouterr().out)
    assert code == 2  # not 1: the run was not the one asked for
    assert rows["dead-lettered"] == "3" and rows["retries"] == "3"


def test_the_example_runs_through_python_m_jobq_with_a_process_pool(tmp_path: Path) -> None:
    """The command README and CLI.md show, from the repository's root: the pool's processes
    import examples.my_jobs by name to run its Blocking jobs."""
    trace = tmp_path / "run.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "jobq", "run", "examples.my_jobs:jobs", "--workers", "4",
         "--no-progress", "--trace", str(trace)],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert rows["submitted"] == rows["succeeded"] == "20" and rows["lost"] == "0", done.stderr
    assert rows["executor"] == "process" and rows["jobs by kind"] == "crunch 5, fetch 15"
    loaded = metrics_from_trace(Trace.from_jsonl(trace), workers=4)
    assert loaded.by_kind == {"crunch": 5, "fetch": 15}  # grouped by your functions' names
    assert "Traceback" not in done.stderr


def test_a_target_given_by_file_path_runs_blocking_jobs_in_a_process_pool() -> None:
    # Imported as module `cli_targets` from tests/: the pool's processes must find it too.
    done = subprocess.run(
        [sys.executable, "-m", "jobq", "run", "tests/cli_targets.py:blocking_jobs",
         "--no-progress"],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert rows["succeeded"] == "8" and rows["jobs by kind"] == "square 8", done.stderr


def test_the_console_script_finds_a_target_in_the_current_directory() -> None:
    # Unlike `python -m`, a console script does not put the current directory on sys.path;
    # jobq does, for TARGET - and the pool's processes inherit it.
    script = Path(sys.executable).parent / "jobq"
    if not script.exists():
        pytest.skip("the jobq console script is not installed next to this Python")
    done = subprocess.run([str(script), "run", "examples.my_jobs:jobs", "--no-progress",
                           "--virtual-time"],
                          capture_output=True, text=True, timeout=EXIT_TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert table(done.stdout)["succeeded"] == "20"


def test_sigint_during_a_target_run_drains_reports_and_exits_3(start: Start) -> None:
    run = start("tests.cli_targets:slow_jobs", "--executor", "thread")
    time.sleep(0.5)  # some jobs end first: a drain in the middle of a run
    run.proc.send_signal(signal.SIGINT)
    code, rows = run.finish()
    assert "SIGINT: stopping" in run.stderr
    _assert_drained(code, rows, run.stderr)
    assert rows["jobs from"] == "tests.cli_targets:slow_jobs"


def test_sigint_while_the_target_function_is_called_stops_before_any_job(
    start: Start,
) -> None:
    # slow_to_start awaits a minute before it returns its jobs: the signal cancels it.
    run = start("tests.cli_targets:slow_to_start", "--executor", "thread")
    time.sleep(0.3)
    run.proc.send_signal(signal.SIGINT)
    code, rows = run.finish()
    assert code == 3, run.stderr
    assert rows["submitted"] == "0" and rows["lost"] == "0", run.stderr
    assert "Traceback" not in run.stderr
