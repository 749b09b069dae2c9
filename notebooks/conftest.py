"""nbval runs the notebooks (see pyproject.toml); this only decides what happens when a
notebook needs a program this machine does not have.

Notebook 09 starts a private `redis-server`. On a developer's machine without it, its
cells are skipped with the install command; in CI (`CI` set) they run anyway and fail,
because .ci/run installs redis-server and a skipped notebook there would prove nothing.
"""

from __future__ import annotations

import os

import pytest

from jobq.testing import redis_server_path

NEEDS_REDIS = ("09-",)
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _redis_missing() -> str | None:
    try:
        redis_server_path()
    except FileNotFoundError as exc:  # its message names the install command
        return str(exc)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_CI:
        return
    needing = [item for item in items if item.path.name.startswith(NEEDS_REDIS)
               and item.path.suffix == ".ipynb"]
    if not needing:
        return
    missing = _redis_missing()
    if missing is not None:
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=missing))
