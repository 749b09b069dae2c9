"""pytest support: `async def` tests, on jobq's virtual clock or on a real loop - opt-in only.

    @pytest.mark.virtual_time(auto_advance=False, deadline=60)
    async def test_retry_backoff(virtual_clock: VirtualClock) -> None:
        await virtual_clock.advance(1.5)

Installing jobq registers this plugin (the `pytest11` entry point), but it touches only the
tests that ask for it, like pytest-asyncio's strict mode:

* `@pytest.mark.virtual_time` (or asking for the `virtual_clock` fixture) runs the test with
  `jobq.clock.run_virtual`; its keyword arguments go to the clock and to `run_virtual`.
* `@pytest.mark.jobq_async` runs an `async def` test on a real loop in asyncio debug mode
  (it reports never-awaited coroutines and slow callbacks).
* `jobq_async = true` in the ini file (`[tool.pytest.ini_options]` of pyproject.toml) does
  that for every unmarked `async def` test of the project - what jobq's own tests use -
  unless pytest-asyncio is active: then it owns those unmarked tests.

Any other `async def` test is left to pytest and to the other plugins, as if jobq were not
installed (plain pytest fails it: "async def functions are not natively supported").

Loaded through the `pytest11` entry point, or with `-p jobq.pytest_plugin`.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from jobq.clock import VirtualClock, run_virtual

__all__ = ["virtual_clock"]

_MARKER = "virtual_time"
_REAL_MARKER = "jobq_async"
_INI = "jobq_async"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI,
        type="bool",
        default=False,
        help="jobq: run every unmarked `async def` test on a real asyncio loop in debug mode "
        "(default false: only tests marked virtual_time or jobq_async)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(auto_advance=True, deadline=86400.0): run this async test on jobq's "
        "virtual clock (jobq.clock.run_virtual)",
    )
    config.addinivalue_line(
        "markers",
        f"{_REAL_MARKER}: run this async test on a real asyncio loop in debug mode (jobq)",
    )


@pytest.fixture
def virtual_clock(request: pytest.FixtureRequest) -> VirtualClock:
    """The clock this `async def` test runs on (`auto_advance` from the `virtual_time` mark)."""
    marker = request.node.get_closest_marker(_MARKER)
    auto_advance = marker.kwargs.get("auto_advance", True) if marker is not None else True
    return VirtualClock(auto_advance=auto_advance)


def _runs_on_real_loop(item: pytest.Function) -> bool:
    """An unmarked `async def` test: ours only when the project opted in."""
    if item.get_closest_marker(_REAL_MARKER) is not None:
        return True
    if not item.config.getini(_INI):
        return False  # not ours: pytest reports it as it always does
    return not item.config.pluginmanager.has_plugin("asyncio")  # pytest-asyncio owns them


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None  # a plain test: pytest calls it
    marker = pyfuncitem.get_closest_marker(_MARKER)
    clock = pyfuncitem.funcargs.get("virtual_clock")
    virtual = marker is not None or isinstance(clock, VirtualClock)
    if not virtual and not _runs_on_real_loop(pyfuncitem):
        return None

    # Call the test function as pytest's own pytest_pyfunc_call does, with its fixtures.
    names = pyfuncitem._fixtureinfo.argnames
    test = pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names})
    if virtual:
        options = dict(marker.kwargs) if marker is not None else {}
        if isinstance(clock, VirtualClock):
            options.pop("auto_advance", None)  # the fixture's clock already carries it
            options["clock"] = clock
        run_virtual(test, debug=True, **options)
    else:
        with asyncio.Runner(debug=True) as runner:
            runner.run(test)
    return True
