"""Shared test set-up. Async tests run through jobq's own pytest plugin (jobq.pytest_plugin,
loaded by its entry point): plain `async def` on a real loop in debug mode,
`@pytest.mark.virtual_time` on the virtual clock."""

from __future__ import annotations

import os

# Plots are drawn off-screen in tests; set before matplotlib is imported anywhere.
os.environ.setdefault("MPLBACKEND", "Agg")
