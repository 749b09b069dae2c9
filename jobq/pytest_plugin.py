"""pytest support: `async def` tests, on a real loop or on jobq's virtual clock.

    @pytest.mark.virtual_time(auto_advance=False, deadline=60)
    async def test_retry_backoff(virtual_clock: VirtualClock) -> None:
        await virtual_clock.advance(1.5)

* `@pytest.mark.virtual_time` (or asking for the `virtual_clock` fixture) runs the test with
  `jobq.clock.run_virtual`; its keyword arguments go to the clock and to `run_virtual`.
* Any other `async def` test runs on a real loop in asyncio debug mode (it reports
  never-awaited coroutines and slow callbacks), unless pytest-asyncio is installed and
  active: then it owns those tests and we run only the virtual-time ones.

Loaded through the `pytest11` entry point, or with `-p jobq.pytest_plugin`.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest

from jobq.clock import VirtualClock, run_virtual

__all__ = ["virtual_clock"]

_MARKER = "virtual_time"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(auto_advance=True, deadline=86400.0): run this async test on jobq's "
        "virtual clock (jobq.clock.run_virtual)",
    )


@pytest.fixture
def virtual_clock(request: pytest.FixtureRequest) -> VirtualClock:
    """The clock this `async def` test runs on (`auto_advance` from the `virtual_time` mark)."""
    marker = request.node.get_closest_marker(_MARKER)
    auto_advance = marker.kwargs.get("auto_advance", True) if marker is not None else True
    return VirtualClock(auto_advance=auto_advance)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None  # a plain test: pytest calls it
    marker = pyfuncitem.get_closest_marker(_MARKER)
    clock = pyfuncitem.funcargs.get("virtual_clock")
    virtual = marker is not None or isinstance(clock, VirtualClock)
    if not virtual and pyfuncitem.config.pluginmanager.has_plugin("asyncio"):
        return None  # pytest-asyncio runs this one

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
