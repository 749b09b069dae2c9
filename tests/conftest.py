"""Shared test set-up. Async tests run through jobq's own pytest plugin (jobq.pytest_plugin,
loaded by its entry point; this project opts in with `jobq_async = true` in pyproject.toml):
plain `async def` on a real loop in debug mode, `@pytest.mark.virtual_time` on the virtual
clock."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

import pytest

from jobq.testing import redis_server_path

# Plots are drawn off-screen in tests; set before matplotlib is imported anywhere.
os.environ.setdefault("MPLBACKEND", "Agg")

# CI sets CI=true (.ci/run); there every tool a test needs must be installed.
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture
def need() -> Callable[[str, str], ModuleType]:
    """`need("looptime", "pip install -e '.[crosscheck]'")` imports a module a test needs.

    Missing, it skips the test with the command that installs it - or, when CI is set, fails
    it: CI installs everything from the repository's files, so a missing tool there is a bug.
    """

    def need(module: str, install: str) -> ModuleType:
        try:
            return importlib.import_module(module)
        except ImportError:
            pass
        message = f"{module} is not installed: `{install}`"
        if IN_CI:
            pytest.fail(f"{message} (CI must install it: see .ci/run)", pytrace=False)
        pytest.skip(message)

    return need


@pytest.fixture(scope="session")
def redis_server_installed() -> str:
    """The redis-server executable; missing, the test skips with the install command - or,
    when CI is set, fails (CI installs it: .ci/run)."""
    try:
        return redis_server_path()
    except FileNotFoundError as missing:  # its message names the install command
        if IN_CI:
            pytest.fail(f"{missing} (CI must install it: see .ci/run)", pytrace=False)
        pytest.skip(str(missing))
