"""A real HTTP server and a real redis-server on 127.0.0.1 for tests, notebooks and the CLI -
no mocks; and the test kit that jobq's own tests and notebook 5 use, for your tests too.

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

The redis-server (Debian: `apt-get install -y redis-server`; `redis_server_path()` finds it
or names that command):

    with RedisServer(password="s3cret") as redis:
        url = redis.url                      # "redis://:s3cret@127.0.0.1:<free port>/0"
        ...                                  # redis.asyncio.from_url(url), from redis-py
        redis.restart()                      # same port and directory: the data survives

It is a child process, not a thread: its own program, in a temporary directory with
append-only persistence, stopped by its PID (and killed when Python exits, if nobody did).

Why a thread of its own? The HTTP server runs an aiohttp application on its *own* event loop in
a daemon thread, with real time. So it keeps answering when

* the jobs run on a virtual clock: a listening socket registered with the virtual loop
  would stop that clock from ever jumping (see the docstring of jobq/clock.py), and the
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
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from aiohttp import web

from jobq.errors import InvalidConfigError
from jobq.jobs import Delayed, Job
from jobq.pipeline import Pipeline, RunResult
from jobq.trace import FINAL_KINDS, Event, EventKind, Trace

__all__ = [
    "LocalServer",
    "RedisServer",
    "assert_each_job_ended_once",
    "delayed_jobs",
    "peak_concurrency",
    "redis_server_path",
]

# Loopback only: a test server must never be reachable from the network.
_HOST = "127.0.0.1"
_CHUNK = b"x" * (64 * 1024)
# How long stop() lets requests still being answered finish before they are cancelled.
# aiohttp waits this long twice (before and after cancelling), so stop() takes <= ~0.5 s.
_SHUTDOWN_GRACE = 0.25

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Service:
    """What LocalServer and RedisServer share: `with` starts the service and stops it, and
    its port can be read only while it runs."""

    _port: int | None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None or not self.running:
            raise self._not_running()
        return self._port

    def _not_running(self) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__} is not running: call start() or use `with`")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalServer(_Service):
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


# ---- a private redis-server -------------------------------------------------------------------

_INSTALL_REDIS = "apt-get install -y redis-server"
# Starting takes milliseconds; loading a big append-only file on restart can take longer.
_REDIS_START_TIMEOUT = 10.0
# How long stop() lets redis-server finish after SIGTERM (it flushes the append-only file
# and exits) before SIGKILL.
_REDIS_STOP_GRACE = 5.0
_APPENDFSYNC = ("always", "everysec", "no")


def redis_server_path() -> str:
    """The `redis-server` executable: on PATH, else Debian's /usr/bin/redis-server.

    Raises FileNotFoundError naming the install command when there is none.
    """
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if found is None:
        raise FileNotFoundError(f"redis-server is not installed: {_INSTALL_REDIS}")
    return found


class RedisServer(_Service):
    """A private redis-server on 127.0.0.1 at a free port, in a temporary directory.

        with RedisServer() as redis:          # or RedisServer(password="s3cret")
            url = redis.url                   # "redis://127.0.0.1:<free port>/0"
            ...                               # redis.asyncio.from_url(url) talks to it
            redis.restart()                   # same port, same directory, data kept

    A real server, not a mock: tests, notebooks and drills see what production sees, including
    a restart mid-run. Its data lives in an append-only file (`appendonly=True`) in its own
    temporary directory, which `stop()` removes; `appendfsync="always"` writes every command
    to disk before answering, so a test can restart right after a write and find it.

    Who ends the process: `stop()` (SIGTERM by PID, SIGKILL after a grace period), or, if
    nobody calls it, a finalizer when this object is collected or Python exits. The server
    runs in its own session, so a Ctrl-C in the terminal reaches Python, not redis-server:
    the data stays until Python's own clean-up stops it. A Python killed with SIGKILL runs no
    clean-up at all; its redis-server is then left running (find it by `pid`).
    """

    def __init__(self, *, password: str | None = None, appendonly: bool = True,
                 appendfsync: str = "everysec") -> None:
        if password is not None and (not isinstance(password, str) or not password):
            raise InvalidConfigError("RedisServer.password must be a non-empty string or None,"
                                     f" got a {type(password).__name__}")
        if not isinstance(appendonly, bool):
            raise InvalidConfigError(f"RedisServer.appendonly must be a bool, got {appendonly!r}")
        if appendfsync not in _APPENDFSYNC:
            raise InvalidConfigError(
                f"RedisServer.appendfsync must be one of {_APPENDFSYNC}, got {appendfsync!r}")
        self._password = password
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        # Chosen at the first start() and kept by restart(); stop() forgets both. The
        # directory's finalizer removes it if stop() is never called.
        self._port: int | None = None
        self._dir: Path | None = None
        self._dir_finalizer: weakref.finalize[..., RedisServer] | None = None
        # The running process, and the finalizer that kills it if stop() is never called.
        # Finalizers hold the process and the directory, never `self`, so they do not keep
        # this object alive; weakref.finalize also runs them at interpreter exit, newest
        # first: the process is killed before its directory is removed.
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., RedisServer] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start redis-server; returns once it answers PING. Does nothing if already running.

        Raises FileNotFoundError if redis-server is not installed, RuntimeError (with the
        server's log) if it exits or does not answer within 10 s.
        """
        if self._process is not None:
            return self
        executable = redis_server_path()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="jobq-redis-"))  # mode 0700
            self._dir_finalizer = weakref.finalize(
                self, shutil.rmtree, self._dir, ignore_errors=True)
        # A free port is found by binding port 0 and letting it go, so another process may
        # take it before redis-server binds it: then try again on a new port. A restart keeps
        # its port (the clients' URL) and fails instead.
        attempts = 1 if self._port is not None else 3
        for attempt in range(attempts):
            if self._port is None or attempt > 0:
                self._port = _free_port()
            try:
                self._spawn(executable)
                return self
            except _PortTaken:
                if attempt == attempts - 1:
                    port = self._port
                    self.stop()
                    raise RuntimeError(f"redis-server could not bind 127.0.0.1:{port}: "
                                       "the port is in use") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the server and remove its directory (and data). Safe to call twice."""
        self._stop_process()
        dir_finalizer, self._dir_finalizer = self._dir_finalizer, None
        if dir_finalizer is not None:
            dir_finalizer()  # removes the directory, once
        self._dir = self._port = None

    def restart(self) -> RedisServer:
        """Stop the server and start it again on the same port, in the same directory.

        What was written survives as far as the append-only file holds it: all of it with
        `appendfsync="always"`; with "everysec", redis-server flushes at SIGTERM too, so a
        clean restart loses nothing either. A stopped server just starts.
        """
        self._stop_process()
        return self.start()


    # ---- what callers read ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise self._not_running()
        return self._process.pid

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`, with `:PASSWORD@` when there is a password - a secret:
        pass it to the client, do not print it."""
        auth = f":{quote(self._password, safe='')}@" if self._password is not None else ""
        return f"redis://{auth}{_HOST}:{self.port}/0"

    def __repr__(self) -> str:
        # No port (it changes on every run, and notebooks compare their outputs) and never
        # the password: only whether there is one.
        state = "running" if self.running else "stopped"
        password = "set" if self._password is not None else "none"
        appendonly = f"appendfsync={self._appendfsync}" if self._appendonly else "appendonly=no"
        return f"<RedisServer {state} {appendonly} password={password}>"

    # ---- the process ------------------------------------------------------------------------

    def _spawn(self, executable: str) -> None:
        assert self._dir is not None and self._port is not None
        argv = [executable]
        if self._password is not None:
            # Not on the command line, where any local user reads it (ps, /proc/PID/cmdline):
            # in a file only we can read, in our 0700 directory, given as the config file.
            conf = self._dir / "password.conf"
            conf.touch(mode=0o600)
            conf.write_text(f'requirepass "{_redis_quote(self._password)}"\n')
            argv.append(str(conf))
        argv += [
            "--port", str(self._port),
            "--bind", _HOST,
            "--dir", str(self._dir),
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", self._appendfsync,
            "--save", "",  # no RDB snapshots: the append-only file is the only persistence
            "--daemonize", "no",  # our child, so its PID is the server's
            "--protected-mode", "yes",
        ]
        log_path = self._dir / "redis-server.log"
        with open(log_path, "ab") as log:
            log_start = log.tell()
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C (SIGINT to the terminal's process group) reaches
                # Python, whose clean-up then stops the server - not the server first.
                start_new_session=True,
            )
        self._process = process
        self._finalizer = weakref.finalize(self, _kill, process)
        try:
            _wait_for_ping(process, self._port, self._password, _REDIS_START_TIMEOUT)
        except _StartFailed as failed:
            self._stop_process()
            with open(log_path, "rb") as log:
                log.seek(log_start)
                output = log.read().decode(errors="replace")
            if "Address already in use" in output:
                raise _PortTaken from None
            tail = "\n".join(output.strip().splitlines()[-20:]) or "(no output)"
            raise RuntimeError(f"redis-server on 127.0.0.1:{self._port} {failed}; its log:\n"
                               f"{tail}") from None

    def _stop_process(self) -> None:
        """End the process (SIGTERM, then SIGKILL after the grace); keep port and directory."""
        process, self._process = self._process, None
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.detach()
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # by PID: redis flushes its AOF and exits
            try:
                process.wait(timeout=_REDIS_STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _StartFailed(Exception):
    """The server exited or did not answer PING in time (the message says which)."""


class _PortTaken(Exception):
    """The free port was taken by someone else before redis-server could bind it."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _redis_quote(text: str) -> str:
    """Every byte as \\xHH: safe inside a redis.conf double-quoted string, whatever it holds."""
    return "".join(f"\\x{byte:02x}" for byte in text.encode())


def _resp(*parts: str) -> bytes:
    """One command in RESP, redis's wire format: an array of bulk strings."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out += [f"${len(data)}\r\n".encode(), data, b"\r\n"]
    return b"".join(out)


def _wait_for_ping(process: subprocess.Popen[bytes], port: int, password: str | None,
                   timeout: float) -> None:
    """Until `timeout`: connect, AUTH if there is a password, PING; return at +PONG.

    A plain socket is enough (no redis client needed inside jobq). While the server loads
    its append-only file it answers -LOADING: that is "not yet", like a refused connection.
    """
    deadline = time.monotonic() + timeout
    request = (_resp("AUTH", password) if password is not None else b"") + _resp("PING")
    last = "no answer"
    while True:
        if process.poll() is not None:
            raise _StartFailed(f"exited with status {process.returncode} while starting")
        try:
            # A short timeout: redis answers in milliseconds (-LOADING included), and if the
            # port is someone else's listener that never answers, we look again soon.
            with socket.create_connection((_HOST, port), timeout=0.25) as conn:
                conn.sendall(request)
                answer = b""
                while answer.count(b"\r\n") < (2 if password is not None else 1):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            if answer.endswith(b"+PONG\r\n"):
                return
            last = answer.decode(errors="replace").strip() or "connection closed"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise _StartFailed(f"did not answer PING within {timeout:g} s (last: {last})")
        time.sleep(0.02)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """The finalizer: nobody called stop(), so the data is not wanted; end it at once."""
    if process.poll() is None:
        process.kill()
        process.wait()
