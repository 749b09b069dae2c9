"""The CPU work a CpuBound job does, and the two checks that keep process pools honest.

`cpu_work` is pure Python on purpose: it holds the GIL the whole time, so it shows exactly
what the series teaches - run inline it freezes the event loop, in a thread pool it still
competes for the GIL, in a process pool it runs in parallel on another core.

It lives in this importable module because a process pool sends the *name* of the function
to the child process, which imports it. A function defined in a notebook lives in
`__main__` of the kernel, which a child started by "spawn" or "forkserver" cannot import
(`check_importable` says so before any process starts).

The problem with scripts: a pool process imports the program's main script again, under the
name `__mp_main__`, before it takes any work. Top-level code that is not under
`if __name__ == "__main__":` runs again in every pool process - an unguarded
`asyncio.run(main())` runs the whole pipeline again, and its attempt to start processes of
its own fails there (a process that is still starting may not start others). On the
Pythons we test (3.11 - 3.13.0) it is each pool process that imports the script: the fork
server is meant to import it once for all of them, but never did (CPython gh-126631, fixed
in later releases). `check_main_guarded` refuses to start a pool from such code and says
what to add.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
import threading
import tokenize
import warnings
from collections.abc import Callable, Iterator
from types import FrameType, ModuleType

from jobq.errors import NotImportableError, UnguardedMainError

__all__ = ["CpuFunction", "check_importable", "check_main_guarded", "cpu_work"]

# A CPU work function: (iterations, payload) -> a checksum.
CpuFunction = Callable[[int, bytes], int]

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619


def cpu_work(iterations: int, payload: bytes) -> int:
    """Mix the payload `iterations` times (FNV-1a style); about 0.1 us... 0.2 us per round."""
    data = payload or b"\0"
    size = len(data)
    h = _FNV_OFFSET ^ size
    for i in range(iterations):
        h = ((h ^ data[i % size]) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def crash_work(iterations: int, payload: bytes) -> int:
    """What a CpuBound job on the failure plan's `crash` list runs: its process dies."""
    os._exit(70)


def check_importable(function: Callable[..., object], what: str = "cpu_function") -> None:
    """Refuse, with an explanation, a function a child process could not import.

    A process pool sends a function by name; the child imports its module and looks it up.
    That fails for a lambda, a function nested in another one, and a function defined in a
    notebook cell or an interactive session (their `__main__` has no file to import). A
    function in the `__main__` of a script works: the child imports the script again (which
    is why a script needs `if __name__ == "__main__":`).
    """
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None) or repr(function)
    main = sys.modules.get("__main__")
    from_main_without_file = module == "__main__" and (
        main is None or not _imported_again_by_pool_processes(main))
    if module is None or from_main_without_file or "<lambda>" in qualname or (
        "<locals>" in qualname
    ):
        where = ("a lambda" if "<lambda>" in qualname
                 else "a nested function" if "<locals>" in qualname
                 else "a notebook cell, an interactive session or a `python -m` package "
                 "(module '__main__', which the worker does not import)"
                 if from_main_without_file else f"module {module!r}")
        raise NotImportableError(
            f"{what} {qualname!r} is defined in {where}, which a process-pool worker cannot "
            "import (it receives the function by name). Define it at the top level of a .py "
            "module and import it from there (in a notebook: a module next to it), or use "
            "executor='thread'."
        )


_GUARD = 'if __name__ == "__main__":'
_FIX = (f"Put the code that runs the pipeline under `{_GUARD}` (or use executor='thread').")
# The warnings registry of check_main_guarded: the message is printed once per process.
_warned: dict[str | tuple[str, type[Warning], int], int] = {}


def check_main_guarded() -> None:
    """Refuse to start a process pool from code that every pool process would run again.

    jobq calls this right before it starts a process pool. It raises UnguardedMainError
    * in the script's own process, when the script's top-level code (on this thread's stack,
      or the main thread's) is at a line outside a top-level `if __name__ ...:` block - that
      line would run again in every pool process;
    * in a pool process that is importing the script again (sys.modules then holds a second
      main module, `__mp_main__`, next to `__main__`) or that did (its `__main__` is that
      copy): the script's guard is missing or does not work, and starting processes from
      here would start them again and again.
    The error is raised inside a job's attempt, so it ends up in every CPU job's dead letter,
    where nobody may look: it is also printed once, as a RuntimeWarning pointing at the line.
    """
    problem = _unguarded_pool_start()
    if problem is None:
        return
    message, filename, line = problem
    warnings.warn_explicit(message, RuntimeWarning, filename, line, registry=_warned)
    raise UnguardedMainError(message)


def _unguarded_pool_start() -> tuple[str, str, int] | None:
    """(message, file, line) if starting a pool here would run code again; else None."""
    main = sys.modules.get("__main__")
    copy = sys.modules.get("__mp_main__")
    # In the script's own process, multiprocessing makes "__mp_main__" another name for
    # __main__. Only while a pool process imports the script again is it a module of its
    # own, named so. (A tool that runs the script for you - coverage, a debugger - may leave
    # the alias pointing at its own __main__: that one is not named "__mp_main__".)
    if copy is not None and copy is not main and copy.__name__ == "__mp_main__":
        filename, line = _location(copy)
        return (f"jobq was asked to start a process pool while a pool process was importing "
                f"{filename} again (line {line}): every pool process runs the code that is "
                f"not under `{_GUARD}`. {_FIX}", filename, line)
    if main is None:
        return None
    if main.__name__ == "__mp_main__":  # a pool process, after importing the script again
        filename, line = _location(main)
        return (f"jobq was asked to start a process pool inside a pool process (which "
                f"imported {filename} again when it started): a pool process starts no "
                f"pools of its own - if it did because the script runs its pipeline from "
                f"code that is not under `{_GUARD}`, every new process would do it again. "
                f"{_FIX}", filename, line)
    if not _imported_again_by_pool_processes(main):
        return None
    for frame in _top_level_frames(main):
        if not _guarded(frame.f_code.co_filename, frame.f_lineno):
            filename, line = frame.f_code.co_filename, frame.f_lineno
            return (f"{filename}, line {line}, starts a process pool from top-level code "
                    f"that is not under `{_GUARD}`: every pool process imports the script "
                    f"again when it starts, and would run this line again. {_FIX}",
                    filename, line)
    return None


def _imported_again_by_pool_processes(main: ModuleType) -> bool:
    """Will a pool process import this main module again? (multiprocessing.spawn decides.)"""
    module_name = getattr(getattr(main, "__spec__", None), "name", None)
    if module_name is not None:  # `python -m package.module`
        # A package's __main__.py is never imported again: it would run unconditionally.
        return not (module_name == "__main__" or module_name.endswith(".__main__"))
    path = getattr(main, "__file__", None)
    # No file (`python -c`, an interactive session): nothing to import. CPython spares a
    # script named "ipython" (IPython's launcher had no guard).
    return path is not None and os.path.splitext(os.path.basename(path))[0] != "ipython"


def _top_level_frames(module: ModuleType) -> Iterator[FrameType]:
    """The frames running `module`'s top-level code, on this thread's stack and then on the
    main thread's: a pipeline run from a thread is still started by the script's top level
    if the main thread is there, waiting for it."""
    stacks: list[FrameType | None] = [sys._getframe()]
    main_thread = threading.main_thread()
    if threading.current_thread() is not main_thread and main_thread.ident is not None:
        stacks.append(sys._current_frames().get(main_thread.ident))
    path = getattr(module, "__file__", None)
    for frame in stacks:
        while frame is not None:
            code = frame.f_code
            if (code.co_name == "<module>" and frame.f_globals is vars(module)
                    and code.co_filename == path):
                yield frame
                break
            frame = frame.f_back


def _location(module: ModuleType) -> tuple[str, int]:
    """The file of `module` and the line its top-level code is at (0 if not running)."""
    filename = getattr(module, "__file__", None) or "the main script"
    line = next((frame.f_lineno for frame in _top_level_frames(module)), 0)
    return filename, line


def _guarded(filename: str, line: int) -> bool:
    """Is `line` of this script inside a top-level `if` that tests `__name__`?"""
    spans = _name_test_spans(filename)
    # Cannot read the script: assume it is guarded. If it is not, the pool processes find
    # out (the checks above), so we are never wrong about a script that is fine.
    return spans is None or any(first <= line <= last for first, last in spans)


@functools.lru_cache(maxsize=8)
def _name_test_spans(filename: str) -> tuple[tuple[int, int], ...] | None:
    """First and last line of each top-level `if` of the script whose test reads `__name__`
    (leniently: any such test counts as a guard). None if the file cannot be parsed."""
    try:
        with tokenize.open(filename) as file:
            tree = ast.parse(file.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return None
    return tuple(
        (statement.lineno, statement.end_lineno or statement.lineno)
        for statement in tree.body
        if isinstance(statement, ast.If) and any(
            isinstance(node, ast.Name) and node.id == "__name__"
            for node in ast.walk(statement.test))
    )
