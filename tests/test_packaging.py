"""The repository's set-up files agree with each other."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# conda-forge name -> PyPI name, for the packages whose names differ (environment.yml lists
# conda-forge names; pyproject.toml lists PyPI names). Checked on anaconda.org's conda-forge
# pages: the Playwright library for Python is `playwright-python` there; redis-py (PyPI:
# `redis`) is `redis-py` (conda-forge's `redis` is an old 3.5 copy of the client).
CONDA_TO_PIP = {
    "playwright-python": "playwright",
    "redis-py": "redis",
}


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _split(requirement: str) -> tuple[str, str, str]:
    """'Foo_Bar[x, y] >= 1' -> ('foo-bar', 'x,y', '>=1')."""
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[([^\]]*)\])?\s*(.*)", requirement)
    assert match is not None, requirement
    name, extras, spec = match.groups()
    return name.lower().replace("_", "-"), (extras or "").replace(" ", ""), spec.replace(" ", "")


def _normalise(requirement: str) -> str:
    name, _, spec = _split(requirement)
    return f"{name}{spec}"


def _requirements(extras: list[str]) -> set[str]:
    """jobq's dependencies plus those of `extras`, with `jobq[...]` inside extras expanded."""
    project = _pyproject()["project"]
    wanted = {_normalise(r) for r in project["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in project["optional-dependencies"][extra]:
            name, inner, _ = _split(requirement)
            if name == "jobq":
                todo.extend(inner.split(","))
            else:
                wanted.add(_normalise(requirement))
    return wanted


def _conda_dependencies() -> tuple[set[str], set[str]]:
    """(conda-forge packages, pip packages) in environment.yml, PyPI-named.

    A tiny reader (we need no YAML library): two-space items are conda's, the six-space items
    under `- pip:` are pip's; comments and `-e .` are skipped.
    """
    conda: set[str] = set()
    pip: set[str] = set()
    text = (ROOT / "environment.yml").read_text().split("\ndependencies:", 1)[1]
    for line in text.splitlines():
        item = re.match(r"^(  |      )- ([^#\s][^#]*?)\s*(#.*)?$", line)
        if item is None or item.group(2) in {"pip:", "-e ."}:
            continue
        name, _, spec = _split(item.group(2))
        name = CONDA_TO_PIP.get(name, name) if item.group(1) == "  " else name
        (conda if item.group(1) == "  " else pip).add(f"{name}{spec}")
    return conda - {"pip"} - {d for d in conda if d.startswith("python")}, pip


def _command(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"<!-- {marker} -->", 1)[1].split("```bash", 1)[1].split("```")[0].strip()


def _extras_installed_by(command: str) -> list[str]:
    match = re.search(r"pip install -e '\.\[([a-z,]+)\]'", command)
    assert match is not None, f"no `pip install -e '.[...]'` in {command!r}"
    return match.group(1).split(",")


def test_environment_yml_lists_what_the_readme_test_command_installs() -> None:
    # environment.yml is the conda form of README's test command: the same packages, under
    # their conda-forge names where those differ (CONDA_TO_PIP), pip-only ones under `pip:`.
    wanted = _requirements(_extras_installed_by(_command("test-command")))
    conda, pip = _conda_dependencies()
    assert conda | pip == wanted
    assert not conda & pip


def test_pip_only_packages_are_under_pip() -> None:
    # Not on conda-forge (checked on anaconda.org): a conda solver would fail on them.
    _, pip = _conda_dependencies()
    assert {_split(p)[0] for p in pip} == {"looptime"}


def test_dependencies_by_use() -> None:
    project = _pyproject()["project"]
    core = {_split(r)[0] for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    # A service that installs jobq gets no plotting stack (matplotlib and numpy are most of it).
    assert core == {"aiohttp", "tqdm", "sortedcontainers"}
    assert {_split(r)[0] for r in extras["plot"]} == {"matplotlib"}
    # The notebooks plot: their extra brings `plot`.
    assert "jobq[plot]" in extras["dev"]
    # looptime's pytest plugin breaks the tests of projects without pytest-asyncio: not in
    # the notebooks' extra; the cross-check test and the benchmarks have extras of their own.
    dev = {_split(r)[0] for r in _requirements(["dev"])}
    assert "looptime" not in dev
    assert any(_split(r)[0] == "looptime" for r in extras["crosscheck"])
    assert any(_split(r)[0] == "looptime" for r in extras["bench"])


def test_readme_commands_install_the_extras_they_need() -> None:
    # Both add `crosscheck`: notebook 5 compares jobq's clock with looptime's, and the
    # cross-check test runs rather than skips. (`dev` alone stays free of looptime's plugin.)
    assert _extras_installed_by(_command("open-command")) == ["dev", "crosscheck"]
    assert _extras_installed_by(_command("test-command")) == ["dev", "crosscheck"]


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "<!-- open-command -->" in readme
    assert "README.md" in ci and "test-command" in ci  # CI reads the command from README
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--print-command"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()
    assert out == _command("test-command")


def test_readme_test_command_checks_types_and_style_then_ends_with_pytest() -> None:
    # mypy --strict (configured in pyproject.toml) and ruff run in CI as part of the command,
    # before pytest: a failure of either fails the run; pytest's summary is the last line.
    steps = [step.strip() for step in _command("test-command").split("&&")]
    assert ".venv/bin/python -m mypy" in steps
    assert ".venv/bin/python -m ruff check" in steps
    assert steps[-1] == ".venv/bin/python -m pytest"
    mypy = _pyproject()["tool"]["mypy"]
    assert mypy["strict"] is True and mypy["files"] == ["jobq"]


def test_package_is_typed_and_supports_the_pythons_we_test() -> None:
    assert (ROOT / "jobq" / "py.typed").exists()
    project = _pyproject()["project"]
    assert project["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)
