"""Virtual time: an hour of `asyncio.sleep` in milliseconds, with the same numbers every run.

The problem: a test or a demo of `Delayed` jobs, retries with backoff or a drain deadline must
not wait in real time, and a timing plot must show the same numbers every time it is re-run.
This is the asyncio counterpart of tokio's `time::pause()` / `time::advance()`.

How it works. `VirtualTimeLoop` is an ordinary `SelectorEventLoop` whose `time()` reads a
`VirtualClock` instead of the system clock, and whose selector decides how time passes:
* a callback is ready: run it; time stands still (no code ever "takes" virtual time);
* every task waits for a timer and no I/O has arrived: jump straight to the next timer;
* real work is in flight (an executor job, or a request under `real_work()`): the clock is
  *held* and flows at the real rate, so a 5 s timeout around a real request means 5 real s.
A listening socket or an idle connection is not work in flight: it never stops the jumps.

    clock = VirtualClock()
    run_virtual(asyncio.sleep(3600), clock=clock)    # returns at once...
    assert clock.now == 3600.0                       # ...an hour later, in virtual time

In a notebook cell (a loop is already running there) use `await in_virtual_time(main())`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import operator
import selectors
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sized
from typing import Any, TypeVar, TypeVarTuple

from jobq.errors import VirtualDeadlineExceeded

__all__ = [
    "VirtualClock",
    "VirtualTimeLoop",
    "current_clock",
    "in_virtual_time",
    "is_virtual",
    "loop_clock",
    "real_work",
    "run_virtual",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# How long a virtual run may last before it is cut short (run_virtual, in_virtual_time,
# jobq.run): a day of virtual time. It makes an endless simulation end.
DEFAULT_DEADLINE = 86_400.0

# While only the loop's wake-up pipe is registered, the loop polls it every this many
# iterations (see _VirtualSelector.select).
_POLL_EVERY = 64

# With `auto_advance=False` an idle loop never jumps: it waits for I/O in real time, in
# slices no longer than this (I/O still wakes it at once).
_MANUAL_POLL_SECONDS = 0.05


def _check_seconds(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


class VirtualClock:
    """The virtual time of one `VirtualTimeLoop`, in seconds.

    `auto_advance=True` (the default): whenever every task is waiting for a timer, time jumps
    to the next timer. `auto_advance=False`: time moves only when a test calls `advance()`
    (like tokio's paused clock), or while the clock is held.

        clock = VirtualClock(auto_advance=False)
        run_virtual(main(clock), clock=clock)   # main does: await clock.advance(5)
    """

    def __init__(self, *, start: float = 0.0, auto_advance: bool = True) -> None:
        _check_seconds("start", start)
        self._now = float(start)
        self._auto_advance = auto_advance
        self._holds = 0  # how many pieces of real work are in flight (see hold())
        self._real_mark = 0.0  # while held: the real instant virtual time has caught up to
        # While `advance()` runs: the time it moves to, and the future that wakes it up.
        self._advance_to: float | None = None
        self._advanced: asyncio.Future[None] | None = None

    @property
    def now(self) -> float:
        """Virtual seconds; what `loop.time()` returns on the loop that uses this clock."""
        return self._now

    @property
    def auto_advance(self) -> bool:
        """True if idle time is skipped on its own, False if only `advance()` skips it."""
        return self._auto_advance

    @property
    def held(self) -> int:
        """How many holds are active (0: the clock may jump)."""
        return self._holds

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """Stop the jumps while real work is in flight: inside, time flows at the real rate.

        The loop cannot tell "waiting for a real server" from "idle", so without a hold it
        would jump to the next timer (often a timeout) while the real answer is on its way.
        Holds nest; the clock jumps again once every hold has ended. Use it in the loop's
        thread (a hold is a plain counter).
        """
        return self._holding()

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        if self._holds == 0:
            self._real_mark = time.monotonic()  # virtual time follows real time from here
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1

    def _catch_up(self) -> None:
        """While held, add the real time since the last look (the selector looks before and
        after each wait): all of it flows, the loop's waits and the callbacks it runs alike -
        a loaded machine has slow callbacks, and real work in flight does not wait for them.
        (A hold that ends before the loop waits again adds nothing: closing the loop's
        executor, say, is not part of the simulation.)"""
        now = time.monotonic()
        self._now += now - self._real_mark
        self._real_mark = now

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer due on the way, in order.

        Each timer fires at its own virtual time, and what it wakes runs before time moves
        on; `advance` returns when the loop is idle at exactly `now + seconds`. Call it from
        a task on the loop that owns this clock.
        """
        _check_seconds("seconds", seconds)
        if current_clock() is not self:
            raise RuntimeError("advance() must run on the VirtualTimeLoop that uses this clock")
        if self._advanced is not None:
            raise RuntimeError("advance() is already running on this clock")
        # The selector does the stepping (it sees the loop's timers and knows when the loop
        # is idle); we tell it where to stop and wait until it says "done".
        self._advance_to = self._now + seconds
        self._advanced = asyncio.get_running_loop().create_future()
        try:
            await self._advanced
        finally:
            self._advance_to = self._advanced = None

    def _finish_advance(self) -> None:
        if self._advanced is not None and not self._advanced.done():
            self._advanced.set_result(None)

    def __repr__(self) -> str:
        mode = "auto" if self._auto_advance else "manual"
        return f"<VirtualClock now={self._now:.3f}s held={self._holds} {mode}>"


class _VirtualSelector(selectors.DefaultSelector):
    """The loop's selector: every loop iteration asks it to wait, so it decides how time passes.

    `timeout` is what the loop computed: 0 if callbacks are ready, the seconds until the next
    timer, or None if there is no timer at all.
    """

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock
        self._unpolled = 0  # iterations since the last poll (see select)
        # Poll less only in the main thread. A poll releases the GIL, and that is what lets
        # other threads in: a loop in a thread of its own (in_virtual_time, under a notebook's
        # kernel) that stopped polling would starve the kernel's thread - each hand-over of
        # the GIL then waits out the 5 ms switch interval (measured: 10 s for one to_thread).
        in_main = threading.current_thread() is threading.main_thread()
        self._poll_every = _POLL_EVERY if in_main else 0
        self._fds: Sized = self._fd_to_key  # type: ignore[attr-defined]  # what is registered
        self.ready: Sized = ()  # the loop's ready callbacks (the loop sets it)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        clock = self._clock
        if clock._holds:  # (fields, not the properties: this runs at every loop iteration)
            # Real work is in flight: wait for real, and let virtual time follow real time -
            # the wait here and the callbacks run since the last look (see VirtualClock.hold).
            clock._catch_up()
            events = super().select(timeout)
            clock._catch_up()
            return events

        # A poll is a system call, as costly as a small callback. While nothing but the
        # loop's own wake-up pipe is registered there is no I/O to find: a thread's
        # call_soon_threadsafe has already queued its callback, and only a signal's wake-up
        # byte waits there - so (in the main thread, see __init__) we poll only every 64th
        # iteration, which bounds how late a signal handler runs.
        skip_poll = len(self._fds) <= 1 and self._unpolled < self._poll_every
        if skip_poll:
            self._unpolled += 1
        else:
            self._unpolled = 0
        if timeout == 0:
            # Callbacks are ready to run: time stands still; only poll for I/O.
            return [] if skip_poll else super().select(0)
        if skip_poll:
            # Idle, and no I/O can come. A thread may have queued a callback since the loop
            # computed `timeout`: then run it now - never jump past it.
            if self.ready:
                return []
        else:
            events = super().select(0)
            if events:
                # I/O arrived (or a thread woke the loop): handle it at the current instant.
                return events

        # The loop is idle: every task waits for a timer or for the outside world.
        if clock._advance_to is not None:
            # An advance() is running: step timer by timer up to its target, then wake it.
            if clock._now >= clock._advance_to:
                clock._finish_advance()
            elif timeout is None:
                clock._now = clock._advance_to
            else:
                clock._now = min(clock._now + timeout, clock._advance_to)
            return []
        if clock._auto_advance and timeout is not None:
            # Nothing can happen before the next timer: skip the wait. `now + timeout` lands
            # on the timer's own time, as the loop computed `timeout = when - now` (capped at
            # 24 h: a longer wait takes a few jumps).
            clock._now += timeout
            return []
        if timeout is None:
            # No timer at all: only the outside world can wake us, as on a real loop.
            return super().select(None)
        # Manual clock: only advance() moves time. Wait a little, in real time, for I/O.
        return super().select(min(timeout, _MANUAL_POLL_SECONDS))


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is a `VirtualClock` (see the module docstring)."""

    def __init__(self, clock: VirtualClock | None = None) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        selector = _VirtualSelector(self.clock)
        super().__init__(selector)
        selector.ready = self._ready  # type: ignore[attr-defined]  # (asyncio's own deque)
        # asyncio asks `self.time()` several times per iteration. A C callable in the instance
        # (it shadows the method below) reads the clock's field without a Python frame.
        self.time = functools.partial(_read_now, self.clock)  # type: ignore[method-assign]

    def time(self) -> float:
        return self.clock._now  # (shadowed per instance, see __init__)

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[*Ts], T],
        *args: *Ts,
    ) -> asyncio.Future[T]:
        # Executor work is real work in flight (this includes asyncio.to_thread and the
        # loop's getaddrinfo): hold the clock until its future is done.
        future = super().run_in_executor(executor, func, *args)
        hold = contextlib.ExitStack()  # a `with` block whose end is a callback
        hold.enter_context(self.clock.hold())
        future.add_done_callback(lambda _: hold.close())
        return future

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        # asyncio.Runner.close() waits for the executor's threads with a 300 s timeout, which
        # Python 3.13 measures on loop.time(): unheld, we would jump 300 s and warn at once.
        with self.clock.hold():
            if timeout is None:
                await super().shutdown_default_executor()
            else:  # only Python 3.12+ passes a timeout
                await super().shutdown_default_executor(timeout)  # type: ignore[call-arg,unused-ignore]


_read_now = operator.attrgetter("_now")  # VirtualClock -> its time, in C


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """`loop.time`, as cheap a callable as it can be: on asyncio's own loops, whose `time()`
    is a Python method that returns `time.monotonic()`, that function itself (the hot path
    reads the clock three times a job; a Python call each is worth saving)."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def current_clock() -> VirtualClock | None:
    """The running loop's clock, or None if no loop runs here or it keeps real time."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.clock if isinstance(loop, VirtualTimeLoop) else None


def is_virtual() -> bool:
    """True inside code running on a `VirtualTimeLoop`."""
    return current_clock() is not None


def real_work() -> contextlib.AbstractContextManager[None]:
    """Hold the running loop's virtual clock around real I/O; do nothing on a real loop.

    Use it around anything that waits for the outside world (a socket, a server):
        with real_work():
            async with asyncio.timeout(5):        # 5 real seconds, even on a virtual loop
                response = await session.get(url)
    """
    clock = current_clock()
    return clock.hold() if clock is not None else contextlib.nullcontext()


# Called in the loop's thread once main has started: (loop, task running main).
_OnStart = Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None]


async def _with_deadline(
    main: Coroutine[Any, Any, T], deadline: float | None, on_start: _OnStart | None
) -> T:
    if on_start is not None:
        task = asyncio.current_task()
        assert task is not None  # we are the task asyncio.Runner created
        on_start(asyncio.get_running_loop(), task)
    timeout = asyncio.timeout(deadline)  # a virtual timer like any other
    try:
        async with timeout:
            return await main
    except TimeoutError as exc:
        if timeout.expired():  # our deadline fired; not a TimeoutError that main raised itself
            # Chained, so the traceback still shows where main was waiting when time ran out.
            raise VirtualDeadlineExceeded(
                f"the run did not finish within its virtual deadline of {_duration(deadline)};"
                " pass deadline=... to jobq.run / run_virtual / in_virtual_time for a longer"
                " one, or deadline=None for no limit"
            ) from exc
        raise


def _duration(seconds: float | None) -> str:
    """`86400 s (24 h)`: seconds as the deadline message shows them."""
    assert seconds is not None  # only a run with a deadline can miss it
    text = f"{seconds:g} s" if seconds < 1e15 else f"{seconds!r} s"
    if seconds >= 3600:
        text += f" ({seconds / 3600:g} h)"
    return text


def _run(
    main: Coroutine[Any, Any, T],
    deadline: float | None,
    auto_advance: bool,
    clock: VirtualClock | None,
    debug: bool | None,
    on_start: _OnStart | None = None,
) -> T:
    if not asyncio.iscoroutine(main):
        raise TypeError(f"main must be a coroutine object such as main(), got {main!r}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # good: no loop runs in this thread
    else:
        main.close()  # we will never run it: close it, so no "never awaited" warning appears
        raise RuntimeError(
            "run_virtual() cannot start a loop inside a running one (a notebook cell or "
            "async code); use `await in_virtual_time(...)` instead"
        )
    if deadline is not None:
        try:
            _check_seconds("deadline", deadline)
        except ValueError:
            main.close()
            raise
    if clock is None:
        clock = VirtualClock(auto_advance=auto_advance)
    virtual_clock = clock  # a non-optional name for the lambda below

    with asyncio.Runner(debug=debug, loop_factory=lambda: VirtualTimeLoop(virtual_clock)) as r:
        return r.run(_with_deadline(main, deadline, on_start))


def run_virtual(
    main: Coroutine[Any, Any, T],
    *,
    deadline: float | None = DEFAULT_DEADLINE,
    auto_advance: bool = True,
    clock: VirtualClock | None = None,
    debug: bool | None = None,
) -> T:
    """Like `asyncio.run(main)`, but on a `VirtualTimeLoop`.

    deadline: virtual seconds after which main is cancelled and `VirtualDeadlineExceeded`
        is raised (None: no deadline). It makes an endless simulation end.
    auto_advance: skip idle time on its own (see `VirtualClock`); used when `clock` is None.
    clock: the clock to run on (a test keeps it to read or advance the time).
    debug: asyncio debug mode, as in `asyncio.run`.

    Raises RuntimeError if a loop is already running in this thread (a notebook cell):
    there, use `await in_virtual_time(main)`.
    """
    return _run(main, deadline, auto_advance, clock, debug)


class _CancelFromOutside:
    """Lets another thread cancel the main task of a virtual run, even before it started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._requested = False

    def started(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        with self._lock:  # called in the simulation's thread
            self._target = (loop, task)
            requested = self._requested
        if requested:
            task.cancel()

    def cancel(self) -> None:
        with self._lock:  # called in the awaiting loop's thread
            self._requested = True
            target = self._target
        if target is not None:
            loop, task = target
            # task.cancel() is not thread-safe: ask the simulation's loop to call it.
            with contextlib.suppress(RuntimeError):  # that loop has already closed
                loop.call_soon_threadsafe(task.cancel)


async def in_virtual_time(
    main: Coroutine[Any, Any, T],
    *,
    deadline: float | None = DEFAULT_DEADLINE,
    auto_advance: bool = True,
    clock: VirtualClock | None = None,
) -> T:
    """`run_virtual` for code that already runs on a loop (a notebook cell: top-level await).

    A thread cannot run two loops at once, so the virtual loop gets a thread of its own; this
    task waits for it without blocking its loop. Cancelling this task (a notebook interrupt)
    cancels main in the simulation, and waits for the thread to finish.

        result = await in_virtual_time(main())
    """
    remote = _CancelFromOutside()
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def simulate() -> None:
        try:
            result = _run(main, deadline, auto_advance, clock, None, remote.started)
        except BaseException as exc:  # hand everything, even CancelledError, to the awaiter
            outcome.set_exception(exc)
        else:
            outcome.set_result(result)

    thread = threading.Thread(target=simulate, name="jobq-virtual-time", daemon=True)
    thread.start()
    finished = asyncio.wrap_future(outcome)
    # The simulation thread is real work in flight for *this* loop: if it is virtual too,
    # its clock must not jump while we wait.
    with real_work():
        try:
            # shield: our cancellation must not cancel `finished`; we still wait for it below.
            return await asyncio.shield(finished)
        except asyncio.CancelledError:
            remote.cancel()
            await asyncio.wait([finished])
            if not finished.cancelled():
                finished.exception()  # mark it retrieved: no "exception was never retrieved"
            thread.join()  # the thread ends right after it set the outcome
            raise
