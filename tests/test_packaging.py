"""The repository's set-up files agree with each other."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalise(requirement: str) -> str:
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()  # type: ignore[union-attr]
    return f"{name.lower().replace('_', '-')}{spec.replace(' ', '')}"


def _conda_dependencies() -> set[str]:
    """The conda-forge packages in environment.yml (a tiny reader: we need no YAML library)."""
    deps: set[str] = set()
    text = (ROOT / "environment.yml").read_text().split("\ndependencies:", 1)[1]
    for line in text.splitlines():
        match = re.match(r"^  - ([^#\s][^#:]*?)\s*$", line)  # two-space items only: not pip's
        if match:
            deps.add(_normalise(match.group(1)))
    return deps - {"pip"} - {d for d in deps if d.startswith("python")}


def test_environment_yml_lists_the_same_packages_as_pyproject() -> None:
    project = _pyproject()["project"]
    wanted = {_normalise(r) for r in project["dependencies"]}
    wanted |= {_normalise(r) for r in project["optional-dependencies"]["dev"]}
    assert _conda_dependencies() == wanted


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "<!-- open-command -->" in readme
    assert "README.md" in ci and "test-command" in ci  # CI reads the command from README
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--print-command"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()
    block = readme.split("<!-- test-command -->", 1)[1].split("```bash", 1)[1].split("```")[0]
    assert out == block.strip()


def test_package_is_typed_and_supports_the_pythons_we_test() -> None:
    assert (ROOT / "jobq" / "py.typed").exists()
    project = _pyproject()["project"]
    assert project["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)
