"""A cancellation token with children: the counterpart of tokio_util's CancellationToken.

The problem: shutdown has to reach every stage - the dispatcher waiting for the next job,
each worker halfway through one - without any of them polling a global flag, and without
a worker's trouble ever stopping the whole pipeline.

The picture is a tree of switches:

    root (the Pipeline owns it; shutdown's deadline, or you, cancel it)
     └── dispatcher   (stops taking jobs from the queue)
          ├── worker 0  (stops its job at the next stage boundary)
          ├── worker 1
          └── ...

Cancelling a token cancels every token below it, never the one above: a worker may be
cancelled on its own, the root cancels everything. Cancellation is one-way and idempotent.

    root = CancellationToken()
    worker = root.child()
    root.cancel();  assert worker.cancelled

A token never raises into the code that holds it. Stages *look* (`cancelled`), *wait*
(`await wait_cancelled()`), or *race* a step against it (`await token.race(step)`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["CancellationToken", "TokenCancelled", "wake"]

T = TypeVar("T")


class TokenCancelled(Exception):
    """Raised by `CancellationToken.race` when the token won the race."""


class CancellationToken:
    """A one-way switch that also switches off all of its children."""

    __slots__ = ("_callbacks", "_cancelled", "_children", "_name", "_parent")

    def __init__(self, name: str = "root", *, parent: CancellationToken | None = None) -> None:
        self._name = name
        self._parent = parent
        self._cancelled = False
        self._children: list[CancellationToken] = []
        # Called once, synchronously, at cancel(). Waiters register futures here; the
        # dispatcher's receive uses it to wake up without polling.
        self._callbacks: list[Callable[[], object]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def child(self, name: str | None = None) -> CancellationToken:
        """A new token that is cancelled whenever this one is (but not the other way round)."""
        token = CancellationToken(name or f"{self._name}.{len(self._children)}", parent=self)
        if self._cancelled:
            token._cancelled = True  # born into a cancelled tree
        else:
            self._children.append(token)
        return token

    def cancel(self) -> None:
        """Cancel this token and every token below it. Calling it again does nothing."""
        if self._cancelled:
            return
        self._cancelled = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        children, self._children = self._children, []
        for child in children:
            child.cancel()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run `callback` when this token is cancelled (at once if it already is).

        Returns a function that unregisters it - call it when you stop caring, or the list of
        callbacks grows with every wait.
        """
        if self._cancelled:
            callback()
            return _nothing
        self._callbacks.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):  # already ran, or already removed
                self._callbacks.remove(callback)

        return remove

    async def wait_cancelled(self) -> None:
        """Wait until this token (or one above it) is cancelled."""
        if self._cancelled:
            return
        waiter = asyncio.get_running_loop().create_future()
        remove = self.on_cancel(lambda: wake(waiter))
        try:
            await waiter
        finally:
            remove()

    async def race(self, step: Awaitable[T]) -> T:
        """Run `step`, but stop it and raise TokenCancelled if this token is cancelled first.

        This is how a worker makes one stage (a sleep, a request) interruptible: the step runs
        as its own task, so cancelling it cannot swallow a cancellation meant for the caller.
        """
        if self._cancelled:
            if asyncio.iscoroutine(step):
                step.close()  # never started: close it so no "never awaited" warning appears
            raise TokenCancelled(self._name)
        task = asyncio.ensure_future(step)
        remove = self.on_cancel(task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            # Two reasons to land here: our token cancelled the step, or someone cancelled
            # the task that called race(). Only the first is ours to turn into TokenCancelled.
            current = asyncio.current_task()
            ours = current is None or current.cancelling() == 0
            if self.cancelled and task.cancelled() and ours:  # property: re-read after await
                raise TokenCancelled(self._name) from None
            task.cancel()
            raise
        finally:
            remove()

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "active"
        return f"<CancellationToken {self._name} {state} children={len(self._children)}>"


def _nothing() -> None:
    return None


def wake(waiter: asyncio.Future[None]) -> None:
    """Resolve a waiter future unless something already did (woken twice is harmless)."""
    if not waiter.done():
        waiter.set_result(None)
