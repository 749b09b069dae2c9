"""A real HTTP server on 127.0.0.1 for tests, notebooks and the CLI - no mocks; and the test
kit that jobq's own tests and notebook 5 use, for your tests too.

The test kit:

    jobs = delayed_jobs([0.5, 1.0, 2.0])     # Job 0, 1, 2: Delayed(0.5), Delayed(1.0), ...
    async with Pipeline(workers=2) as pipe:
        await pipe.submit_many(jobs)
    assert_each_job_ended_once(pipe)         # the accounting promise, checked from the trace
    assert peak_concurrency(pipe.trace) == 2 # the concurrency limit, read off the trace

The server:

    with LocalServer(latency=0.05) as server:
        url = server.url("/ok")              # "http://127.0.0.1:<free port>/ok"
        ...                                  # fetch it with jobq.http.HttpClient
        print(server.requests)               # how many requests it received

Why a thread of its own? The server runs an aiohttp application on its *own* event loop in
a daemon thread, with real time. So it keeps answering when

* the jobs run on a virtual clock: a listening socket registered with the virtual loop
  would stop that clock from ever jumping (see SPEC, "Virtual time and sockets"), and the
  server's sleeps must take real seconds, whatever the jobs' clock says;
* a notebook's loop is already running: `start()` is a plain blocking call, no `await`.

Routes (all GET; every route also takes `?latency=SECONDS`, which overrides the server's
default latency for that request):

    /ok?size=N            200, a body of N bytes (default: b"ok\\n")
    /status/{code}        that status (200..599)
    /slow/{seconds}       200 after that many seconds
    /big/{nbytes}         200 with a body of nbytes, streamed in chunks; add `?chunked=1` to
                          leave out Content-Length (the client only learns the size by reading)
    /flaky/{key}/{k}      the first k requests for `key` answer 500, later ones 200
    /redirect?to=URL      302 to URL (any URL: the client must decide what to follow)
    /auth/{user}/{pass}   200 only for HTTP Basic credentials user:pass, else 401 - shows that
                          a URL like http://user:pass@host/ still sends its password
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType

from aiohttp import web

from jobq.errors import InvalidConfigError
from jobq.jobs import Delayed, Job
from jobq.pipeline import Pipeline, RunResult
from jobq.trace import FINAL_KINDS, Event, EventKind, Trace

__all__ = ["LocalServer", "assert_each_job_ended_once", "delayed_jobs", "peak_concurrency"]

# Loopback only: a test server must never be reachable from the network.
_HOST = "127.0.0.1"
_CHUNK = b"x" * (64 * 1024)
# How long stop() lets requests still being answered finish before they are cancelled.
# aiohttp waits this long twice (before and after cancelling), so stop() takes <= ~0.5 s.
_SHUTDOWN_GRACE = 0.25

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LocalServer:
    """An aiohttp server on 127.0.0.1 at a free port, in its own thread and event loop."""

    def __init__(self, *, latency: float = 0.0) -> None:
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise InvalidConfigError(f"LocalServer.latency must be seconds, got {latency!r}")
        if not (latency >= 0 and math.isfinite(latency)):
            raise InvalidConfigError(
                f"LocalServer.latency must be >= 0 and finite seconds, got {latency!r}"
            )
        self._latency = float(latency)
        # Counters are written by the server thread and read by the caller's thread.
        self._lock = threading.Lock()
        self._requests = 0
        self._flaky_seen: dict[str, int] = {}
        # Set while running; all three belong to the server thread.
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._port: int | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Start serving; returns once the port is listening. Does nothing if already running."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._thread_main, args=(ready, failure), name="jobq-LocalServer", daemon=True
        )
        thread.start()
        # 10 s is generous: binding a loopback port takes milliseconds.
        if not ready.wait(timeout=10.0):
            raise RuntimeError("LocalServer did not start listening within 10 s")
        if failure:
            thread.join()
            raise RuntimeError("LocalServer failed to start") from failure[0]
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join the thread. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None:
            # asyncio objects are not thread-safe: ask the server's loop to set its own event.
            loop.call_soon_threadsafe(stop_event.set)
        thread.join()
        self._loop = self._stop_event = self._port = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # `async with` for symmetry with HttpClient. Starting and stopping block the caller for a
    # moment (milliseconds; up to ~0.5 s if requests are still being answered) - fine in a test
    # or notebook, and it keeps the caller's loop free of the server's sockets.
    async def __aenter__(self) -> LocalServer:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- what callers read ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def latency(self) -> float:
        """Seconds every response waits before it is sent (unless `?latency=` overrides)."""
        return self._latency

    @property
    def port(self) -> int:
        if self._port is None or self._thread is None:
            raise RuntimeError("LocalServer is not running: call start() or use `with`")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{_HOST}:{self.port}"

    def url(self, path: str) -> str:
        """The full URL of `path` on this server, e.g. `server.url("/slow/0.5")`."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def requests(self) -> int:
        """How many requests the server has received so far (every route, every status)."""
        with self._lock:
            return self._requests

    def __repr__(self) -> str:
        # No port: it changes on every run, and notebooks compare their outputs.
        state = "running" if self.running else "stopped"
        return f"<LocalServer {state} latency={self._latency:.3f}s>"

    # ---- the server thread ------------------------------------------------------------------

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        # A plain SelectorEventLoop, not asyncio.run(): that would follow the current event
        # loop policy, which a virtual-clock test or nest_asyncio may have replaced. This
        # loop must run on real time, whatever the rest of the process does.
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            runner.run(self._serve(ready, failure))

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        app_runner = web.AppRunner(
            self._make_app(),
            access_log=None,  # no log line per request: notebooks compare their output
            # When a client gives up (say, its read_timeout fired), cancel the handler
            # instead of letting /slow/60 sleep on and hold up stop().
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_GRACE,
        )
        # We open the listening socket ourselves (aiohttp serves on it, and closes it in
        # cleanup) because stopping must take it out of the loop first: see the `finally`.
        listener: socket.socket | None = None
        try:
            # Port 0: the operating system picks a free port, so parallel runs never clash.
            listener = socket.create_server((_HOST, 0))
            await app_runner.setup()
            await web.SockSite(app_runner, listener).start()
            self._port = listener.getsockname()[1]
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            await app_runner.cleanup()
            if listener is not None:
                listener.close()
            return
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            # Stop accepting *before* closing anything. asyncio accepts in two steps, one loop
            # pass apart: the listener's reader callback takes a socket from the kernel and
            # starts a task; in the next pass that task wraps the socket in a transport and
            # registers it with the asyncio.Server. If the Server is closed in between, the
            # registration fails (CPython gh-109564) and the socket is dropped unclosed: it
            # warns later, in whatever test the garbage collector runs in. Waiting a few
            # passes first only moves that window, since a client may connect at any moment.
            # So: unregister the reader (no socket is accepted after this line; a connection
            # still queued in the kernel is reset when the listener closes), then let every
            # socket already accepted finish its second step while the Server is still open.
            asyncio.get_running_loop().remove_reader(listener.fileno())
            # The loop runs callbacks in the order they were scheduled, so a second step still
            # pending runs in this pass and schedules connection_made for the next: after two
            # passes aiohttp knows every connection, and cleanup() below closes them all.
            for _ in range(2):
                await asyncio.sleep(0)
            # Closes the listening socket, lets handlers still running finish (within the
            # grace period, else cancels them), then closes every connection.
            await app_runner.cleanup()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_and_delay])
        app.router.add_get("/ok", self._ok)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/slow/{seconds}", self._slow)
        app.router.add_get("/big/{nbytes}", self._big)
        app.router.add_get("/flaky/{key}/{k}", self._flaky)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/auth/{user}/{password}", self._auth)
        return app

    @web.middleware
    async def _count_and_delay(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        with self._lock:
            self._requests += 1
        latency = self._latency
        if "latency" in request.query:
            latency = _seconds(request.query["latency"], "latency")
        if latency > 0:
            # Real seconds: this is the server's own loop, never the jobs' virtual clock.
            await asyncio.sleep(latency)
        return await handler(request)

    # ---- routes -----------------------------------------------------------------------------

    async def _ok(self, request: web.Request) -> web.Response:
        if "size" in request.query:
            return web.Response(body=b"x" * _count(request.query["size"], "size"))
        return web.Response(body=b"ok\n")

    async def _status(self, request: web.Request) -> web.Response:
        code = _count(request.match_info["code"], "code")
        if not 200 <= code <= 599:
            raise web.HTTPBadRequest(text=f"status code must be 200..599, got {code}\n")
        # 204 and 304 must not carry a body.
        body = None if code in (204, 304) else f"status {code}\n"
        return web.Response(status=code, text=body)

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(_seconds(request.match_info["seconds"], "seconds"))
        return web.Response(body=b"slow\n")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        nbytes = _count(request.match_info["nbytes"], "nbytes")
        response = web.StreamResponse()
        if request.query.get("chunked") == "1":
            response.enable_chunked_encoding()
        else:
            response.content_length = nbytes
        await response.prepare(request)
        # Streamed: the server never holds more than one chunk, however big the body.
        remaining = nbytes
        try:
            while remaining > 0:
                piece = _CHUNK[: min(remaining, len(_CHUNK))]
                await response.write(piece)
                remaining -= len(piece)
            await response.write_eof()
        except ConnectionResetError:
            # The client hung up mid-body - exactly what a size cap does. Expected here, so
            # no traceback in the server log (a notebook would show it on stderr).
            pass
        return response

    async def _flaky(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        k = _count(request.match_info["k"], "k")
        with self._lock:
            seen = self._flaky_seen.get(key, 0)
            self._flaky_seen[key] = seen + 1
        # Decided by the per-key request count alone, so a retry demo fails the same way
        # on every run, whatever the timing.
        if seen < k:
            return web.Response(status=500, text=f"flaky {key}: failure {seen + 1} of {k}\n")
        return web.Response(text=f"flaky {key}: ok after {k} failures\n")

    async def _redirect(self, request: web.Request) -> web.Response:
        target = request.query.get("to")
        if not target:
            raise web.HTTPBadRequest(text="/redirect needs ?to=URL\n")
        raise web.HTTPFound(location=target)

    async def _auth(self, request: web.Request) -> web.Response:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            sent = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            sent = ""
        wanted = f"{request.match_info['user']}:{request.match_info['password']}"
        if scheme.lower() == "basic" and sent == wanted:
            return web.Response(text="authorized\n")
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="jobq"'},
                                   text="wrong or missing credentials\n")


def _count(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, got {text!r}\n") from None
    if value < 0:
        raise web.HTTPBadRequest(text=f"{name} must be >= 0, got {value}\n")
    return value


def _seconds(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be seconds, got {text!r}\n") from None
    if not (value >= 0 and math.isfinite(value)):
        raise web.HTTPBadRequest(text=f"{name} must be >= 0 and finite, got {value}\n")
    return value


# ---- the test kit -------------------------------------------------------------------------------


def delayed_jobs(delays: Iterable[float], start_id: int = 0, *,
                 payload: bytes = b"payload") -> list[Job]:
    """Jobs start_id, start_id + 1, ... that sleep for the given seconds, then execute."""
    return [Job(start_id + i, payload, Delayed(d)) for i, d in enumerate(delays)]


# Events after which a job holds no worker slot (any attempt it was running is over).
_ATTEMPT_ENDS = frozenset({EventKind.ATTEMPT_FAILED} | FINAL_KINDS)


def peak_concurrency(trace: Trace | Iterable[Event]) -> int:
    """The most attempts that were running at one instant - what `workers` must bound.

    Replays the trace in the order things happened (not sorted by time: on a virtual clock
    a slot is freed and taken again at the same instant, and that is not two at once).
    """
    running: set[int | None] = set()  # jobs whose attempt has started and not ended
    peak = 0
    for event in trace:
        if event.kind is EventKind.STARTED:
            running.add(event.job)
            peak = max(peak, len(running))
        elif event.kind in _ATTEMPT_ENDS:
            running.discard(event.job)
    return peak


def _ids(ids: Iterable[int | None], limit: int = 20) -> str:
    shown = sorted(ids, key=lambda i: (i is None, i or 0))
    text = ", ".join(str(i) for i in shown[:limit])
    return text + (f", ... ({len(shown)} in all)" if len(shown) > limit else "")


def assert_each_job_ended_once(
    run: Pipeline | RunResult | Trace, *, accepted: Iterable[int] | None = None
) -> None:
    """Check jobq's accounting promise: every accepted job ended exactly once.

    Reads the trace: each ENQUEUED (an acceptance) must be followed by exactly one final
    event (SUCCEEDED, DEAD_LETTERED or CANCELLED) of that job - a replayed job is accepted,
    and ends, once more - and nothing ends that was not accepted. For a stopped Pipeline or a
    RunResult the report must agree (`lost == 0`, `submitted` = acceptances). `accepted`:
    the ids you expect to have been accepted, if you know them.

    Raises AssertionError naming the ids: never ended, ended twice, ended without being
    accepted. Needs a trace that keeps its events (not `Trace(keep=False)`).
    """
    trace = run if isinstance(run, Trace) else run.trace
    if not trace.keep:
        raise ValueError("assert_each_job_ended_once reads the trace's events, and this trace "
                         "keeps none (Trace(keep=False)): run with trace=True")
    open_jobs: set[int | None] = set()
    acceptances: list[int | None] = []
    ended: set[int | None] = set()
    accepted_again: list[int | None] = []  # ENQUEUED again while still open
    twice: list[int | None] = []
    unaccepted: list[int | None] = []
    for event in trace.events:
        if event.kind is EventKind.ENQUEUED:
            if event.job in open_jobs:
                accepted_again.append(event.job)
            open_jobs.add(event.job)
            acceptances.append(event.job)
        elif event.kind in FINAL_KINDS:
            if event.job in open_jobs:
                open_jobs.discard(event.job)
            elif event.job in ended:
                twice.append(event.job)
            else:
                unaccepted.append(event.job)
            ended.add(event.job)
    problems = []
    if open_jobs:
        problems.append(f"never ended: {_ids(open_jobs)}")
    if twice:
        problems.append(f"ended twice: {_ids(twice)}")
    if unaccepted:
        problems.append(f"ended without being accepted: {_ids(unaccepted)}")
    if accepted_again:
        problems.append(f"accepted again before they ended: {_ids(accepted_again)}")
    if accepted is not None:
        expected, seen = set(accepted), set(acceptances)
        if expected - seen:
            problems.append(f"expected but never accepted: {_ids(expected - seen)}")
        if seen - expected:
            problems.append(f"accepted but not expected: {_ids(seen - expected)}")
    if not isinstance(run, Trace):
        report = run.report  # a pipeline still running raises ReportNotReadyError here
        if report.lost:
            problems.append(f"the report counts {report.lost} lost")
        if report.submitted != len(acceptances):
            problems.append(f"the report counts {report.submitted} submitted, the trace "
                            f"{len(acceptances)} accepted")
    if problems:
        raise AssertionError("each accepted job must end exactly once; " + "; ".join(problems))
