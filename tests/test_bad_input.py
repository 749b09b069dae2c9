"""Bad input is refused with a clear error that names the field and the value - and nothing
that was accepted before it is lost.

Each case builds the bad thing *inside a running pipeline* that already accepted good jobs,
checks the error type and message, and then checks that the good jobs still finish.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

import jobq
from jobq import (
    AsyncIo,
    CpuBound,
    Delayed,
    DuplicateJobError,
    FailurePlan,
    HttpConnectError,
    HttpLimits,
    HttpTimeoutError,
    InvalidConfigError,
    InvalidJobError,
    Job,
    Pipeline,
    PipelineClosedError,
    ResponseTooLargeError,
    ResultStatus,
    RetryPolicy,
    Trace,
)
from jobq.testing import LocalServer

GOOD = [Job(i, b"ok", Delayed(0.5)) for i in range(3)]

# (what is built, the error type, words the message must contain: the field and the value)
CASES: list[tuple[str, Callable[[], object], type[Exception], list[str]]] = [
    ("negative delay", lambda: Delayed(-1.5), InvalidJobError, ["Delayed.delay", "-1.5"]),
    ("negative timedelta", lambda: Delayed(timedelta(seconds=-2)), InvalidJobError,
     ["Delayed.delay", "-2"]),
    ("NaN delay", lambda: Delayed(math.nan), InvalidJobError, ["Delayed.delay", "nan"]),
    ("infinite delay", lambda: Delayed(math.inf), InvalidJobError, ["Delayed.delay", "inf"]),
    ("string delay", lambda: Delayed("5"), InvalidJobError,  # type: ignore[arg-type]
     ["Delayed.delay", "'5'"]),
    ("negative iterations", lambda: CpuBound(-5), InvalidJobError,
     ["CpuBound.iterations", "-5"]),
    ("float iterations", lambda: CpuBound(2.5), InvalidJobError,  # type: ignore[arg-type]
     ["CpuBound.iterations", "2.5"]),
    ("bool iterations", lambda: CpuBound(True), InvalidJobError,
     ["CpuBound.iterations", "True"]),
    ("ftp URL", lambda: AsyncIo("ftp://example.org/file"), InvalidJobError,
     ["AsyncIo.url", "ftp"]),
    ("file URL", lambda: AsyncIo("file:///etc/passwd"), InvalidJobError,
     ["AsyncIo.url", "file"]),
    ("malformed URL", lambda: AsyncIo("http://[::1"), InvalidJobError,
     ["AsyncIo.url", "http://[::1"]),
    ("URL with a bad port", lambda: AsyncIo("http://127.0.0.1:http/"), InvalidJobError,
     ["AsyncIo.url", "127.0.0.1:http"]),
    ("URL without host", lambda: AsyncIo("http:///path"), InvalidJobError,
     ["AsyncIo.url", "http:///path"]),
    ("URL that is not a str", lambda: AsyncIo(b"http://x"), InvalidJobError,  # type: ignore[arg-type]
     ["AsyncIo.url", "bytes"]),
    ("str payload", lambda: Job(9, "text", Delayed(1)), InvalidJobError,  # type: ignore[arg-type]
     ["Job.payload", "str"]),
    ("bytearray payload", lambda: Job(9, bytearray(b"x"), Delayed(1)),  # type: ignore[arg-type]
     InvalidJobError, ["Job.payload", "bytearray"]),
    ("str id", lambda: Job("9", b"", Delayed(1)), InvalidJobError,  # type: ignore[arg-type]
     ["Job.id", "'9'"]),
    ("capacity 0", lambda: Pipeline(capacity=0), InvalidConfigError, ["capacity", "0"]),
    ("capacity bool", lambda: Pipeline(capacity=True), InvalidConfigError,
     ["capacity", "True"]),
    ("workers 0", lambda: Pipeline(workers=0), InvalidConfigError, ["workers", "0"]),
    ("workers float", lambda: Pipeline(workers=2.0), InvalidConfigError,  # type: ignore[arg-type]
     ["workers", "2.0"]),
    ("negative drain_timeout", lambda: Pipeline(drain_timeout=-1), InvalidConfigError,
     ["drain_timeout", "-1"]),
    ("unknown executor", lambda: Pipeline(executor="gpu"), InvalidConfigError,  # type: ignore[arg-type]
     ["executor", "gpu"]),
    ("max_retries -1", lambda: RetryPolicy(max_retries=-1), InvalidConfigError,
     ["RetryPolicy.max_retries", "-1"]),
    ("max_retries float", lambda: RetryPolicy(max_retries=1.5), InvalidConfigError,  # type: ignore[arg-type]
     ["RetryPolicy.max_retries", "1.5"]),
    ("base_delay negative", lambda: RetryPolicy(base_delay=-0.1), InvalidConfigError,
     ["RetryPolicy.base_delay", "-0.1"]),
    ("base_delay NaN", lambda: RetryPolicy(base_delay=math.nan), InvalidConfigError,
     ["RetryPolicy.base_delay", "nan"]),
    ("max_delay infinite", lambda: RetryPolicy(max_delay=math.inf), InvalidConfigError,
     ["RetryPolicy.max_delay", "inf"]),
    ("factor < 1", lambda: RetryPolicy(factor=0.5), InvalidConfigError,
     ["RetryPolicy.factor", "0.5"]),
    ("jitter > 1", lambda: RetryPolicy(jitter=2.0), InvalidConfigError,
     ["RetryPolicy.jitter", "2.0"]),
    ("jitter NaN", lambda: RetryPolicy(jitter=math.nan), InvalidConfigError,
     ["RetryPolicy.jitter", "nan"]),
    ("connect_timeout 0", lambda: HttpLimits(connect_timeout=0), InvalidConfigError,
     ["HttpLimits.connect_timeout", "0"]),
    ("read_timeout NaN", lambda: HttpLimits(read_timeout=math.nan), InvalidConfigError,
     ["HttpLimits.read_timeout", "nan"]),
    ("total_timeout bool", lambda: HttpLimits(total_timeout=True), InvalidConfigError,
     ["HttpLimits.total_timeout", "True"]),
    ("total_timeout infinite", lambda: HttpLimits(total_timeout=math.inf), InvalidConfigError,
     ["HttpLimits.total_timeout", "inf"]),
    ("max_response_bytes 0", lambda: HttpLimits(max_response_bytes=0), InvalidConfigError,
     ["HttpLimits.max_response_bytes", "0"]),
    ("max_redirects -1", lambda: HttpLimits(max_redirects=-1), InvalidConfigError,
     ["HttpLimits.max_redirects", "-1"]),
    ("fail_rate > 1", lambda: FailurePlan(fail_rate=1.5), InvalidConfigError,
     ["FailurePlan.fail_rate", "1.5"]),
    ("fail_rate NaN", lambda: FailurePlan(fail_rate=math.nan), InvalidConfigError,
     ["FailurePlan.fail_rate", "nan"]),
    ("fail_first negative", lambda: FailurePlan(fail_first={4: -1}), InvalidConfigError,
     ["FailurePlan.fail_first[4]", "-1"]),
    ("producers 0", lambda: jobq.run([], producers=0), InvalidConfigError, ["producers", "0"]),
]


async def _with_good_jobs_around(bad: Callable[[], object], error: type[Exception],
                                 words: list[str]) -> None:
    async with Pipeline(workers=2, executor="inline") as pipe:
        for job in GOOD:
            await pipe.submit(job)
        with pytest.raises(error) as caught:
            made = bad()
            if asyncio.iscoroutine(made):
                await made
        message = str(caught.value)
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
        await pipe.submit(Job(100, b"after", Delayed(0.1)))  # the pipeline still takes jobs
    report = pipe.report
    assert (report.submitted, report.succeeded, report.lost) == (4, 4, 0)


@pytest.mark.parametrize(("name", "bad", "error", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name_and_accepted_jobs_finish(
    name: str, bad: Callable[[], object], error: type[Exception], words: list[str]
) -> None:
    jobq.run_virtual(_with_good_jobs_around(bad, error, words), deadline=60)


def test_duplicate_id_and_submit_after_shutdown_are_refused() -> None:
    async def main() -> None:
        pipe = Pipeline(workers=1, capacity=2, executor="inline")
        await pipe.start()
        for job in GOOD:
            await pipe.submit(job)
        with pytest.raises(DuplicateJobError, match=r"Job\.id 1\b"):
            await pipe.submit(Job(1, b"other", Delayed(0)))
        with pytest.raises(DuplicateJobError, match=r"Job\.id 2\b"):
            pipe.submit_nowait(Job(2, b"other", Delayed(0)))
        with pytest.raises(InvalidJobError, match=r"takes a Job or a job type .*, got str"):
            await pipe.submit("job")  # type: ignore[arg-type]
        shutdown = asyncio.create_task(pipe.shutdown())
        for _ in range(2):  # shutdown() starts its task; the task begins: draining
            await asyncio.sleep(0)
        assert pipe.state is jobq.PipelineState.DRAINING
        with pytest.raises(PipelineClosedError, match=r"draining; job 7 was not accepted"):
            await pipe.submit(Job(7, b"", Delayed(0)))
        with pytest.raises(PipelineClosedError, match="job 8"):
            pipe.submit_nowait(Job(8, b"", Delayed(0)))
        report = await shutdown
        assert (report.submitted, report.succeeded, report.lost) == (3, 3, 0)
        with pytest.raises(PipelineClosedError, match="stopped; job 7"):
            await pipe.submit(Job(7, b"", Delayed(0)))
        ids = sorted(e.job for e in pipe.trace if e.kind is jobq.EventKind.ENQUEUED)
        assert ids == [0, 1, 2]  # refused jobs left no trace of acceptance

    jobq.run_virtual(main(), deadline=60)


# -- settings of the wrong type or out of range (one table, every public setting) ------------


def _setting(owner: str, make: Callable[..., object], setting: str, value: object,
             shown: str | None = None) -> tuple[str, Callable[[], object], list[str]]:
    """A row: building `make(setting=value)` must be refused naming `owner.setting` and
    showing the value (its repr, unless `shown` says what part of it to look for)."""
    label = f"{owner}{setting}={value!r:.20}"
    return (label, lambda: make(**{setting: value}), [owner + setting, shown or repr(value)])


def _run_with(**settings: object) -> object:
    return jobq.run([Job(1, b"", Delayed(0.1))], **settings)  # type: ignore[arg-type]


P, R, F, H = "Pipeline.", "RetryPolicy.", "FailurePlan.", "HttpLimits."
BAD_SETTINGS: list[tuple[str, Callable[[], object], list[str]]] = [
    # Pipeline: counts
    _setting(P, Pipeline, "workers", True),
    _setting(P, Pipeline, "workers", 0),
    _setting(P, Pipeline, "workers", "4"),
    _setting(P, Pipeline, "capacity", 2.5),
    _setting(P, Pipeline, "capacity", None),
    _setting(P, Pipeline, "total", -5),
    _setting(P, Pipeline, "total", True),
    _setting(P, Pipeline, "total", "10"),
    # Pipeline: where CPU work runs and what it runs
    _setting(P, Pipeline, "executor", None),
    _setting(P, Pipeline, "executor", 42),
    _setting(P, Pipeline, "executor", "gpu"),
    _setting(P, Pipeline, "executor", ThreadPoolExecutor, "ThreadPoolExecutor"),  # the class
    _setting(P, Pipeline, "cpu_function", None),
    _setting(P, Pipeline, "cpu_function", "cpu_work"),
    _setting(P, Pipeline, "cpu_cost", math.inf),
    _setting(P, Pipeline, "cpu_cost", math.nan),
    _setting(P, Pipeline, "cpu_cost", -0.5),
    _setting(P, Pipeline, "cpu_cost", True),
    _setting(P, Pipeline, "cpu_cost", "0.1"),
    # Pipeline: policies, which were silently misused before
    _setting(P, Pipeline, "retry", 3),
    _setting(P, Pipeline, "retry", {"max_retries": 3}),
    _setting(P, Pipeline, "retry", RetryPolicy, "RetryPolicy"),  # the class, not an instance
    _setting(P, Pipeline, "failures", "x"),
    _setting(P, Pipeline, "failures", {3: 2}),
    _setting(P, Pipeline, "http", {"read_timeout": 1.0}),
    _setting(P, Pipeline, "http", 5.0),
    # Pipeline: switches
    _setting(P, Pipeline, "trace", "yes"),
    _setting(P, Pipeline, "trace", None),
    _setting(P, Pipeline, "trace", 1),
    _setting(P, Pipeline, "keep_results", "no"),
    _setting(P, Pipeline, "keep_results", None),
    _setting(P, Pipeline, "progress", "auto"),
    _setting(P, Pipeline, "progress", 1),
    # Pipeline: the drain deadline (math.inf is allowed: no limit)
    _setting(P, Pipeline, "drain_timeout", "5"),
    _setting(P, Pipeline, "drain_timeout", True),
    _setting(P, Pipeline, "drain_timeout", math.nan),
    _setting(P, Pipeline, "drain_timeout", -math.inf),
    _setting(P, Pipeline, "drain_timeout", 10**400, "1000"),
    # RetryPolicy
    _setting(R, RetryPolicy, "max_retries", True),
    _setting(R, RetryPolicy, "max_retries", "3"),
    _setting(R, RetryPolicy, "max_retries", None),
    _setting(R, RetryPolicy, "base_delay", True),
    _setting(R, RetryPolicy, "base_delay", "0.1"),
    _setting(R, RetryPolicy, "factor", "2"),
    _setting(R, RetryPolicy, "factor", math.nan),
    _setting(R, RetryPolicy, "factor", math.inf),
    _setting(R, RetryPolicy, "factor", True),
    _setting(R, RetryPolicy, "max_delay", None),
    _setting(R, RetryPolicy, "max_delay", -1),
    _setting(R, RetryPolicy, "jitter", "0.5"),
    _setting(R, RetryPolicy, "jitter", -0.1),
    _setting(R, RetryPolicy, "jitter", True),
    _setting(R, RetryPolicy, "seed", "1"),
    _setting(R, RetryPolicy, "seed", 1.5),
    _setting(R, RetryPolicy, "seed", True),
    # FailurePlan
    _setting(F, FailurePlan, "fail_first", [3]),
    _setting(F, FailurePlan, "fail_first", None),
    _setting(F, FailurePlan, "fail_first", {"3": 1}, "'3'"),
    _setting(F, FailurePlan, "fail_first", {True: 1}, "True"),
    _setting(F, FailurePlan, "fail_first", {3: 1.5}, "1.5"),
    _setting(F, FailurePlan, "fail_first", {3: True}, "True"),
    _setting(F, FailurePlan, "fail_rate", "0.1"),
    _setting(F, FailurePlan, "fail_rate", True),
    _setting(F, FailurePlan, "fail_rate", -0.1),
    _setting(F, FailurePlan, "seed", "x"),
    _setting(F, FailurePlan, "seed", None),
    _setting(F, FailurePlan, "seed", True),
    _setting(F, FailurePlan, "crash", 7),
    _setting(F, FailurePlan, "crash", [7]),
    _setting(F, FailurePlan, "crash", {"7"}, "'7'"),
    _setting(F, FailurePlan, "crash", {7.0}, "7.0"),
    _setting(F, FailurePlan, "crash", frozenset({False}), "False"),
    # HttpLimits
    _setting(H, HttpLimits, "connect_timeout", "5"),
    _setting(H, HttpLimits, "read_timeout", None),
    _setting(H, HttpLimits, "total_timeout", -1.0),
    _setting(H, HttpLimits, "max_response_bytes", 1.5),
    _setting(H, HttpLimits, "max_response_bytes", True),
    _setting(H, HttpLimits, "max_response_bytes", "1000"),
    _setting(H, HttpLimits, "max_redirects", None),
    _setting(H, HttpLimits, "max_redirects", True),
    # jobq.run: its own settings, and Pipeline's passed through it
    _setting("jobq.run(", _run_with, "producers", True),
    _setting("jobq.run(", _run_with, "producers", "2"),
    _setting("jobq.run(", _run_with, "virtual_time", "yes"),
    _setting("jobq.run(", _run_with, "virtual_time", 1),
    _setting("jobq.run(", _run_with, "virtual_time", None),
    _setting("jobq.run(", _run_with, "drain_timeout", "5"),
    _setting("jobq.run(", _run_with, "drain_timeout", True),
    _setting("jobq.run(", _run_with, "deadline", "5"),
    _setting("jobq.run(", _run_with, "deadline", -1),
    _setting("jobq.run(", _run_with, "deadline", math.nan),
    _setting("jobq.run(", _run_with, "deadline", True),
    _setting("jobq.run(", _run_with, "deadline", math.inf),  # None says "no limit"
    _setting(P, _run_with, "retry", 3),
    _setting(P, _run_with, "failures", "x"),
]


@pytest.mark.parametrize(("name", "bad", "words"), BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS])
def test_a_bad_setting_is_refused_by_name_and_value_and_accepted_jobs_finish(
    name: str, bad: Callable[[], object], words: list[str]
) -> None:
    jobq.run_virtual(_with_good_jobs_around(bad, InvalidConfigError, words), deadline=60)


def test_good_settings_of_every_kind_are_accepted() -> None:
    """The checks refuse what is wrong, not what is merely unusual."""
    with ThreadPoolExecutor(1) as pool:
        for settings in [
            {"executor": pool}, {"executor": "thread"}, {"trace": Trace(keep=False)},
            {"trace": False}, {"progress": None}, {"total": 0}, {"cpu_cost": 0},
            {"cpu_cost": 1e-9}, {"drain_timeout": math.inf}, {"drain_timeout": 0},
            {"retry": RetryPolicy(max_retries=0, factor=1, jitter=1)},
            {"failures": FailurePlan(fail_first={1: 0}, crash={-1}, fail_rate=1)},
            {"http": HttpLimits(max_redirects=0)}, {"cpu_function": len},
        ]:
            Pipeline(**settings)  # type: ignore[arg-type]
    assert FailurePlan(crash=frozenset({7})).crashes(7)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("drain_timeout", "5"),
        ("drain_timeout", True),  # before: accepted, as a drain of 1 second
        ("drain_timeout", math.nan),
        ("drain_timeout", -1),
        ("cancel_queued", "yes"),  # before: truthy, so the queue was cancelled
        ("cancel_queued", None),
    ],
)
def test_a_refused_shutdown_loses_nothing_and_the_pipeline_still_shuts_down(
    setting: str, value: object
) -> None:
    async def main() -> None:
        pipe = Pipeline(workers=1, capacity=5, executor="inline")
        async with pipe:
            for job in [Job(i, b"", Delayed(5)) for i in range(3)]:
                await pipe.submit(job)
            with pytest.raises(InvalidConfigError) as caught:
                await pipe.shutdown(**{setting: value})  # type: ignore[arg-type]
            message = str(caught.value)
            assert f"Pipeline.shutdown({setting}=" in message and repr(value) in message, message
            assert pipe.state is jobq.PipelineState.RUNNING  # refused before anything changed
            await pipe.submit(Job(3, b"after", Delayed(1)))  # still accepting
        report = pipe.report
        assert (report.submitted, report.succeeded, report.lost, report.drained) == (4, 4, 0, True)

    jobq.run_virtual(main(), deadline=600)


# -- the virtual deadline of jobq.run ---------------------------------------------------------

TEN_HOURS = 10 * 3600.0


def _thirty_hours() -> list[Job]:
    """Three jobs of 10 virtual hours, one after another: 30 hours, past the 24 h default."""
    return [Job(i, b"", Delayed(TEN_HOURS)) for i in range(3)]


async def test_run_past_24_virtual_hours_names_its_deadline_and_how_to_change_it() -> None:
    with pytest.raises(jobq.VirtualDeadlineExceeded) as caught:
        await jobq.run(_thirty_hours(), workers=1, executor="inline", virtual_time=True)
    message = str(caught.value)
    for words in ("virtual deadline of 86400 s (24 h)", "deadline=", "jobq.run", "None"):
        assert words in message, message


@pytest.mark.parametrize("deadline", [2 * 86_400.0, None])
async def test_run_with_a_longer_deadline_or_none_finishes_past_24_virtual_hours(
    deadline: float | None,
) -> None:
    result = await jobq.run(_thirty_hours(), workers=1, executor="inline", virtual_time=True,
                            deadline=deadline)
    assert (result.report.succeeded, result.report.lost) == (3, 0)
    assert max(r.finished_at for r in result.results) == 3 * TEN_HOURS


# -- delays too big for a float ---------------------------------------------------------------


@pytest.mark.parametrize("delay", [10**400, -(10**400), 10**5000],
                         ids=["1e400", "-1e400", "1e5000"])
def test_a_delay_too_big_for_a_float_is_refused_as_bad_input(delay: int) -> None:
    with pytest.raises(InvalidJobError, match=r"Delayed\.delay") as caught:
        Delayed(delay)
    assert "digits" in str(caught.value)  # the value is shown, shortened


def test_huge_finite_delays_are_accepted_like_any_finite_delay() -> None:
    assert Delayed(1e300).delay == 1e300
    assert Delayed(10**300).delay == 1e300
    assert Delayed(timedelta.max).delay == timedelta.max.total_seconds()
    with pytest.raises(InvalidJobError, match=r"Delayed\.delay must be >= 0"):
        Delayed(timedelta.min)


# -- AsyncIo jobs against a real local server ----------------------------------------------


def _closed_port() -> int:
    """A loopback port that nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def server() -> object:
    with LocalServer() as running:
        yield running


def _io_run(jobs: list[Job], limits: HttpLimits, retries: int = 1) -> jobq.RunResult:
    async def main() -> jobq.RunResult:
        return await jobq.run(GOOD + jobs, workers=3, executor="inline", http=limits,
                              retry=RetryPolicy(max_retries=retries, base_delay=0.01))

    return jobq.run_virtual(main(), deadline=600)


def _dead(result: jobq.RunResult, job_id: int) -> list[str]:
    assert result.report.lost == 0
    assert result.report.succeeded == len(GOOD)  # the good jobs were not held up
    (dead,) = [r for r in result.results if r.status is ResultStatus.DEAD_LETTERED]
    assert dead.job_id == job_id
    return [a.error or "" for a in result.dead_letters.get(job_id).attempts]


def test_unreachable_port_is_dead_lettered_with_a_connect_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/ok"
    result = _io_run([Job(50, b"", AsyncIo(url))], HttpLimits(connect_timeout=2.0), retries=2)
    errors = _dead(result, 50)
    assert len(errors) == 3  # tried, retried twice, then given up
    assert all(e.startswith(HttpConnectError.__name__) and url in e for e in errors)


def test_server_slower_than_the_timeout_is_an_http_timeout(server: LocalServer) -> None:
    url = server.url("/slow/3")
    result = _io_run([Job(51, b"", AsyncIo(url))], HttpLimits(read_timeout=0.2))
    errors = _dead(result, 51)
    assert all(e.startswith(HttpTimeoutError.__name__) and "read_timeout=0.2" in e
               for e in errors)


@pytest.mark.parametrize("chunked", [False, True])
def test_response_over_the_size_cap_is_refused(server: LocalServer, chunked: bool) -> None:
    url = server.url("/big/200000" + ("?chunked=1" if chunked else ""))
    result = _io_run([Job(52, b"", AsyncIo(url))], HttpLimits(max_response_bytes=100_000))
    errors = _dead(result, 52)
    assert all(e.startswith(ResponseTooLargeError.__name__) and "max_response_bytes=100000" in e
               for e in errors)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_a_redirect_to_a_non_http_scheme_is_not_followed(server: LocalServer,
                                                         target: str) -> None:
    url = server.url(f"/redirect?to={target}")
    before = server.requests
    result = _io_run([Job(53, b"", AsyncIo(url))], HttpLimits(), retries=0)
    (error,) = _dead(result, 53)
    assert "redirect" in error and re.search(r"only http and https", error), error
    assert server.requests - before == 1  # one request, the redirect was not followed


def test_local_server_listens_on_loopback_only(server: LocalServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    # Nothing answers on the machine's other addresses at that port.
    try:
        others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None,
                                                            socket.AF_INET)}
    except OSError:
        others = set()
    for address in others - {"127.0.0.1"}:
        if address.startswith("127."):
            continue
        with socket.socket() as sock, pytest.raises(OSError):
            sock.settimeout(1.0)
            sock.connect((address, server.port))
    with socket.create_connection(("127.0.0.1", server.port), timeout=1.0) as sock:
        # ... but loopback does. Send a whole request and read the answer, so the server is
        # done with this connection before the module's server stops: a connection accepted
        # in the very instant aiohttp shuts down can escape its cleanup (and warn, unclosed).
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
