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
    assert report is not None
    assert (report.submitted, report.succeeded, report.lost) == (4, 4, 0)


@pytest.mark.parametrize(("name", "bad", "error", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_by_name_and_accepted_jobs_finish(
    name: str, bad: Callable[[], object], error: type[Exception], words: list[str]
) -> None:
    jobq.run_virtual(_with_good_jobs_around(bad, error, words), deadline=60)


def test_duplicate_id_and_submit_after_shutdown_are_refused() -> None:
    async def main() -> None:
        pipe = Pipeline(workers=1, capacity=2, executor="inline")
        await pipe.__aenter__()
        for job in GOOD:
            await pipe.submit(job)
        with pytest.raises(DuplicateJobError, match=r"Job\.id 1\b"):
            await pipe.submit(Job(1, b"other", Delayed(0)))
        with pytest.raises(DuplicateJobError, match=r"Job\.id 2\b"):
            pipe.submit_nowait(Job(2, b"other", Delayed(0)))
        with pytest.raises(InvalidJobError, match="takes a Job, got str"):
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
