"""The notebook series as a whole: names, links, navigation, stored execution, structure.

These read the .ipynb files only - nothing is executed here (nbval re-runs the notebooks:
`pytest --nbval notebooks/`). A failure names the notebook and what is wrong with it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAV_TOOL = ROOT / "tools" / "nav.py"

INDEX = "00-index.ipynb"
CHAPTERS = [
    "01-basic-pipeline.ipynb",
    "02-backpressure.ipynb",
    "03-cpu-bound-work.ipynb",
    "04-graceful-shutdown.ipynb",
    "05-virtual-time.ipynb",
    "06-retries-and-dead-letters.ipynb",
    "07-metrics.ipynb",
    "08-your-own-work.ipynb",
    "09-beyond-one-machine.ipynb",
]
EXPECTED = [INDEX, *CHAPTERS]

NAV_MARKER = "<!-- jobq-nav -->"
INDEX_START = "<!-- jobq-index:start -->"
INDEX_END = "<!-- jobq-index:end -->"
NOTEBOOK_NAME = re.compile(r"^\d\d-[a-z0-9]+(?:-[a-z0-9]+)*\.ipynb$")
# Markdown links and images: [text](target) / ![alt](target "title"). Code spans are removed
# first, so an example link inside backticks is not checked.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
NAV_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def read(name: str) -> nbformat.NotebookNode:
    path = NOTEBOOKS / name
    if not path.exists():
        pytest.fail(f"notebooks/{name} does not exist (yet)")
    return nbformat.read(path, as_version=4)


def markdown(nb: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "markdown"]


def links(source: str) -> list[str]:
    return LINK.findall(CODE_SPAN.sub("", source))


def relative_notebook_links(source: str) -> list[str]:
    """Targets of links to .ipynb files on this disk (not http(s), not #anchors)."""
    out = []
    for target in links(source):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue
        if unquote(parts.path).endswith(".ipynb"):
            out.append(unquote(parts.path))
    return out


def nav_lines(nb: nbformat.NotebookNode) -> list[str]:
    """The line after every `<!-- jobq-nav -->` marker (the marker is a cell's first line)."""
    out = []
    for source in markdown(nb):
        lines = source.split("\n")
        if lines[0].strip() == NAV_MARKER:
            out.append(lines[1] if len(lines) > 1 else "")
    return out


# -- the set of notebooks --------------------------------------------------------------


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_exists(name: str) -> None:
    assert (NOTEBOOKS / name).is_file(), f"notebooks/{name} is missing"


def test_no_stray_notebooks() -> None:
    stray = []
    for path in NOTEBOOKS.rglob("*.ipynb"):
        rel = path.relative_to(NOTEBOOKS)
        if any(part.startswith(".") for part in rel.parts):  # .ipynb_checkpoints: gitignored
            continue
        if len(rel.parts) > 1 or not NOTEBOOK_NAME.match(path.name) \
                or path.name.startswith("Untitled") or path.name not in EXPECTED:
            stray.append(str(rel))
    assert not stray, f"notebooks that are not part of the series (NN-name.ipynb): {stray}"


def test_index_links_every_notebook() -> None:
    nb = read(INDEX)
    text = "\n".join(markdown(nb))
    assert INDEX_START in text and INDEX_END in text, (
        f"{INDEX} has no {INDEX_START} ... {INDEX_END} block for tools/nav.py to fill"
    )
    block = text[text.index(INDEX_START):text.index(INDEX_END)]
    linked = set(relative_notebook_links(block))
    on_disk = {p.name for p in NOTEBOOKS.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name)}
    missing = sorted((on_disk | set(CHAPTERS)) - {INDEX} - linked)
    assert not missing, f"the index does not link {missing}"


# -- links and navigation --------------------------------------------------------------


@pytest.mark.parametrize("name", EXPECTED)
def test_relative_notebook_links_resolve(name: str) -> None:
    nb = read(name)
    broken = sorted({
        target
        for source in markdown(nb)
        for target in relative_notebook_links(source)
        if not (NOTEBOOKS / target).resolve().is_file()
    })
    assert not broken, f"{name} links to notebooks that do not exist: {broken}"


def expected_neighbours(name: str) -> tuple[str | None, str | None]:
    """(previous, next) chapter of `name`; the index leads to the first chapter."""
    if name == INDEX:
        return None, CHAPTERS[0]
    k = CHAPTERS.index(name)
    return (CHAPTERS[k - 1] if k > 0 else None,
            CHAPTERS[k + 1] if k + 1 < len(CHAPTERS) else None)


@pytest.mark.parametrize("name", EXPECTED)
def test_navigation_points_to_neighbours(name: str) -> None:
    nb = read(name)
    lines = nav_lines(nb)
    assert len(lines) >= 2, f"{name} needs a {NAV_MARKER} cell at the top and at the bottom"
    sources = markdown(nb)
    assert sources[0].split("\n")[0].strip() == NAV_MARKER, f"{name}: first cell is not nav"
    assert sources[-1].split("\n")[0].strip() == NAV_MARKER, f"{name}: last cell is not nav"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[-1].cell_type == "markdown"
    prev, nxt = expected_neighbours(name)
    for line in lines:
        found = NAV_LINK.findall(line)  # [(text, target), ...]
        back = [target for text, target in found if text.startswith("←")]
        fwd = [target for text, target in found if text.endswith("→")]
        assert INDEX in [target for _, target in found], f"{name}: no index link: {line!r}"
        assert back == ([prev] if prev else []), f"{name}: ← should go to {prev}: {line!r}"
        assert fwd == ([nxt] if nxt else []), f"{name}: → should go to {nxt}: {line!r}"


def test_nav_tool_check_passes() -> None:
    done = subprocess.run([sys.executable, str(NAV_TOOL), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (
        f"navigation is out of date - run `python tools/nav.py`:\n{done.stdout}{done.stderr}"
    )


# -- stored state and structure of each notebook ---------------------------------------


@pytest.mark.parametrize("name", EXPECTED)
def test_stored_executed_in_order_without_errors(name: str) -> None:
    nb = read(name)
    counts = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue  # an empty code cell is never executed
        assert cell.execution_count is not None, f"{name}: cell {i} was not executed"
        counts.append(cell.execution_count)
        tags = cell.metadata.get("tags", [])
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "raises-exception" not in tags:
            assert not errors, (
                f"{name}: cell {i} stored an error ({errors[0].ename}: {errors[0].evalue}) "
                "but is not tagged raises-exception"
            )
    assert counts == list(range(1, len(counts) + 1)), (
        f"{name}: execution counts {counts} - re-run it top to bottom in a fresh kernel"
    )


# A progress bar's rate ("12.3it/s") or time ("[00:01<00:02") changes every run: stored,
# it would break nbval's comparison. jobq's bar shows counts only.
VARYING_PROGRESS = re.compile(r"\d(?:it/s|s/it)|\[\d\d:\d\d<")


@pytest.mark.parametrize("name", EXPECTED)
def test_no_rate_or_eta_in_stored_outputs(name: str) -> None:
    nb = read(name)
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            text = str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
            assert not VARYING_PROGRESS.search(text), f"{name}: cell {i} stores {text[:80]!r}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_exercises_have_solutions(name: str) -> None:
    nb = read(name)
    pairs = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        marks = [line.strip() for line in cell.source.splitlines()
                 if line.strip() in ("### BEGIN SOLUTION", "### END SOLUTION")]
        assert marks == ["### BEGIN SOLUTION", "### END SOLUTION"] * (len(marks) // 2) \
            and len(marks) % 2 == 0, f"{name}: cell {i} has unbalanced solution markers {marks}"
        pairs += len(marks) // 2
    assert pairs >= 1, f"{name} has no ### BEGIN SOLUTION / ### END SOLUTION pair"
    headings = [line.strip() for source in markdown(nb) for line in source.splitlines()]
    assert "## Exercises" in headings, f"{name} has no '## Exercises' section"


@pytest.mark.parametrize("name", CHAPTERS)
def test_recap_section(name: str) -> None:
    nb = read(name)
    headings = [line.strip() for source in markdown(nb) for line in source.splitlines()
                if line.startswith("#")]
    assert "## Recap" in headings, f"{name} has no '## Recap' section"
    titles = [h for h in headings if h.startswith("# ")]
    assert titles, f"{name} has no '# ' title"

