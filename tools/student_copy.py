"""Write the learner's copy of the notebook series: every exercise's answer replaced by its stub.

    python tools/student_copy.py OUTDIR     write notebooks/NN-*.ipynb and notebooks/*.py to OUTDIR
    python tools/student_copy.py --check    change nothing; list exercises that break the
                                            convention below, exit 1 if there are any

The convention (issue 13; notebooks/checks.py explains the check side): an exercise is a
markdown question, then a **solution cell**, then a **check cell**.

* The solution cell is a code cell tagged `solution`, collapsed in JupyterLab
  (`metadata.jupyter.source_hidden`). Its answer sits between a `### BEGIN SOLUTION` line and an
  `### END SOLUTION` line and only *defines* things; `metadata.jobq.stub` holds the source that
  replaces those lines (markers included) in the learner's copy: the same names, with bodies
  that `raise NotImplementedError(...)` or return a wrong, empty value.
* The check cell right after it is tagged `check` and starts with
  `with exercise("name"):` (`from checks import exercise`): it runs the learner's code and
  asserts with messages that show the actual values. A stub's NotImplementedError becomes an
  AssertionError there, so in the learner's copy every check cell fails with a message that
  says what to write - tests/test_exercises.py proves it by running the copy.

In the copy every code cell loses its outputs and execution count (and the notebook its saved
widget state: it belongs to those outputs), and a solution cell is shown expanded, since what
it holds now is the learner's to write. Everything else is kept as it is.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
SOLUTION_TAG = "solution"
CHECK_TAG = "check"

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SERIES_GLOB = "[0-9][0-9]-*.ipynb"


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and SOLUTION_TAG in tags(cell)


def is_check(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and CHECK_TAG in tags(cell)


def stub_of(cell: nbformat.NotebookNode) -> str | None:
    """The cell's `metadata.jobq.stub`, or None when it has none (or not a string)."""
    stub = cell.get("metadata", {}).get("jobq", {}).get("stub")
    return stub if isinstance(stub, str) else None


def split_solution(source: str) -> tuple[str, str, str]:
    """(before, answer, after): the source around and between the solution markers.

    `before` ends with the newline before `### BEGIN SOLUTION`, `after` starts after the
    newline that ends `### END SOLUTION`; the marker lines belong to neither. Raises
    ValueError unless there is exactly one BEGIN line and, after it, exactly one END line.
    """
    lines = source.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise ValueError(
            f"want one {BEGIN!r} line and after it one {END!r} line; "
            f"found BEGIN on lines {[i + 1 for i in begins]}, END on lines {[i + 1 for i in ends]}"
        )
    b, e = begins[0], ends[0]
    return "".join(lines[:b]), "".join(lines[b + 1:e]), "".join(lines[e + 1:])


def replace_solution(source: str, replacement: str) -> str:
    """`source` with the lines from BEGIN to END SOLUTION (inclusive) replaced."""
    before, _, after = split_solution(source)
    if replacement and not replacement.endswith("\n") and after:
        replacement += "\n"
    return before + replacement + after


def student_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `notebook` as a learner gets it (the argument is not changed).

    Raises ValueError naming the cell if a solution cell has no markers or no stub: a copy
    that still showed the answer would be worse than none.
    """
    nb = copy.deepcopy(notebook)
    nb.metadata.pop("widgets", None)  # saved widget state of the outputs removed below
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)  # per-cell timings of the stored run
        if not is_solution(cell):
            continue
        stub = stub_of(cell)
        if stub is None:
            raise ValueError(f"cell {index} is tagged {SOLUTION_TAG!r} but has no jobq.stub")
        try:
            cell.source = replace_solution(cell.source, stub)
        except ValueError as error:
            raise ValueError(f"cell {index}: {error}") from None
        jupyter = cell.metadata.get("jupyter", {})
        jupyter.pop("source_hidden", None)
        if jupyter:
            cell.metadata["jupyter"] = jupyter
        else:
            cell.metadata.pop("jupyter", None)
    return nb


def problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What keeps `notebook`'s exercises from making a good student copy (empty: nothing).

    Every solution cell needs its markers and a stub and a check cell right after it; a cell
    with the markers but without the `solution` tag would keep its answer in the copy.
    """
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        has_marker = any(line.strip() in (BEGIN, END) for line in cell.source.splitlines())
        if not is_solution(cell):
            if has_marker:
                found.append(f"cell {index} has solution markers but no {SOLUTION_TAG!r} tag "
                             "(its answer would stay in the student copy)")
            continue
        try:
            split_solution(cell.source)
        except ValueError as error:
            found.append(f"solution cell {index}: {error}")
        stub = stub_of(cell)
        if stub is None or not stub.strip():
            found.append(f"solution cell {index} has no metadata.jobq.stub (a non-empty string)")
        following = notebook.cells[index + 1] if index + 1 < len(notebook.cells) else None
        if following is None or not is_check(following):
            found.append(f"solution cell {index} is not followed by a code cell tagged "
                         f"{CHECK_TAG!r}")
    return found


def series(directory: Path) -> list[Path]:
    """The notebooks of the series in `directory`: NN-name.ipynb, in order."""
    return sorted(directory.glob(SERIES_GLOB))


def helper_modules(directory: Path) -> list[Path]:
    """The Python modules beside the notebooks (checks.py, own_work.py, ...): they import them.

    Not conftest.py: that is the test suite's (it tells nbval what to skip), not the learner's.
    """
    return sorted(p for p in directory.glob("*.py") if p.name != "conftest.py")


def write_series(source: Path, outdir: Path) -> list[Path]:
    """Write the student copy of every notebook of `source`, and its helper modules, to outdir."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in series(source):
        nb = nbformat.read(path, as_version=4)
        target = outdir / path.name
        nbformat.write(student_copy(nb), target)
        written.append(target)
    for module in helper_modules(source):
        written.append(Path(shutil.copy2(module, outdir / module.name)))
    return written


def check_series(source: Path) -> list[str]:
    """problems() of every notebook in `source`, each prefixed with the notebook's name."""
    return [f"{path.name}: {problem}"
            for path in series(source)
            for problem in problems(nbformat.read(path, as_version=4))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", type=Path,
                        help="directory to write the student copy to (created if missing)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; report exercises that break the convention")
    parser.add_argument("--source", type=Path, default=DEFAULT_DIR,
                        help=f"directory of the series (default: {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    if args.check == (args.outdir is not None):
        parser.error("give either OUTDIR or --check")
    found = check_series(args.source)
    for problem in found:
        print(problem)
    if args.check:
        if not found:
            print(f"{len(series(args.source))} notebooks: every exercise follows the convention")
        return 1 if found else 0
    if found:
        print("nothing written: fix the problems above first", file=sys.stderr)
        return 1
    if args.outdir.resolve() == args.source.resolve():
        parser.error("OUTDIR is the series itself: the copy would overwrite the answers")
    written = write_series(args.source, args.outdir)
    print(f"wrote {len(written)} files to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
