"""The series' exercises check the learner (issue 13): a stub fails its check, a wrong answer too.

The convention is in tools/student_copy.py's docstring and notebooks/checks.py: a solution
cell (tagged `solution`, answer between the markers, stub in `metadata.jobq.stub`) and right
after it a check cell (tagged `check`, `with exercise(...)`, asserts that show actual values).

* **structure** - reads the files: every exercise follows the convention, and the stub
  defines every name the answer defines (so a check fails with an assertion, not a NameError).
* **student copy** - runs each notebook's student copy (tools/student_copy.py) in a Jupyter
  kernel: every check cell fails with a non-empty AssertionError, no other cell fails.
  That the full notebooks pass is nbval's job (`pytest --nbval notebooks/`).
* **wrong answers** - tests/exercise_answers.py's mistakes, each put in place of an answer
  in the student copy, run up to that exercise's check: it fails and shows the actual values.

The two kinds that run kernels are marked `slow`; they run by default (`-m "not slow"`
leaves them out while editing). Each notebook runs in a fresh kernel (nbclient, kernel
python3, working directory = the copy's, 60 s per cell, errors recorded, not raised), as many
at once as there are CPUs (at least 2, at most 4); `-s` prints how long each took.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import importlib.util
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient

from .exercise_answers import MECHANISMS, WRONG_ANSWERS, WrongAnswer
from .helpers import missing_program

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 60  # seconds per cell (nbclient)
PARALLEL = max(2, min(4, os.cpu_count() or 2))  # kernels at once


def _load_tool() -> ModuleType:
    path = ROOT / "tools" / "student_copy.py"
    spec = importlib.util.spec_from_file_location("student_copy", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("student_copy", module)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()
SERIES: list[Path] = tool.series(NOTEBOOKS)


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def solution_indices(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if tool.is_solution(cell)]


# -- reading cells as Python -------------------------------------------------------------

_ipython = TransformerManager()


def parse(source: str) -> ast.Module:
    """A cell's source as an AST; IPython syntax (%magic, !cmd) is turned into Python first.
    Top-level `await` parses as it is (only compiling would refuse it)."""
    return ast.parse(_ipython.transform_cell(source))


def _bound(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Store)}


def defined_names(source: str) -> set[str]:
    """Names a cell binds at its top level (also inside top-level if/try/with/for blocks)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names.update(_bound(target))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                if not isinstance(node, ast.AnnAssign) or node.value is not None:
                    names.update(_bound(node.target))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.Expr):
                names.update(n.target.id for n in ast.walk(node)
                             if isinstance(n, ast.NamedExpr))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                names.update(_bound(node.target))
                visit(node.body + node.orelse)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        names.update(_bound(item.optional_vars))
                visit(node.body)
            elif isinstance(node, (ast.If, ast.While)):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(parse(source).body)
    return names


def loaded_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(parse(source))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def first_line(source: str) -> str:
    return next((line.strip() for line in source.splitlines() if line.strip()), "")


def _is_exercise_with(node: ast.stmt) -> bool:
    if not isinstance(node, ast.With) or not node.items:
        return False
    call = node.items[0].context_expr
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "exercise")


# -- structure: reads the files ------------------------------------------------------------


def exercise_problems(nb: nbformat.NotebookNode, index: int) -> list[str]:
    """What is wrong with the exercise whose solution cell is nb.cells[index]."""
    cell = nb.cells[index]
    out: list[str] = []
    try:
        before, answer, after = tool.split_solution(cell.source)
    except ValueError as error:
        return [str(error)]
    try:
        outside = parse(before + after)
        answer_tree = parse(answer)
    except SyntaxError as error:
        return [f"does not parse: {error}"]
    extra = [type(node).__name__ for node in outside.body
             if not isinstance(node, (ast.Import, ast.ImportFrom))]
    if extra:
        out.append(f"outside the markers only imports may stand, found {extra}")
    if cell.metadata.get("jupyter", {}).get("source_hidden") is not True:
        out.append("metadata.jupyter.source_hidden is not true (the answer shows)")
    asserts = [node.lineno for node in ast.walk(answer_tree) if isinstance(node, ast.Assert)]
    if asserts:
        out.append(f"assert inside the markers (answer lines {asserts}): asserts belong in "
                   "the check cell, or the student copy loses them")

    stub = tool.stub_of(cell)
    stub_names: set[str] = set()
    if stub is None or not stub.strip():
        out.append("no metadata.jobq.stub")
    else:
        if not first_line(stub).startswith("#"):
            out.append(f"the stub does not start with a comment for the learner: "
                       f"{first_line(stub)!r}")
        if tool.BEGIN in stub or tool.END in stub:
            out.append("the stub contains the solution markers")
        try:
            stub_names = defined_names(stub)
        except SyntaxError as error:
            out.append(f"the stub does not parse: {error}")
    answer_names = defined_names(answer)
    missing = answer_names - stub_names
    if stub is not None and missing:
        out.append(f"the answer defines {sorted(missing)}, the stub does not: a later cell "
                   "would fail with NameError in the student copy")

    following = nb.cells[index + 1] if index + 1 < len(nb.cells) else None
    if following is None or not tool.is_check(following):
        out.append("no code cell tagged 'check' right after it")
        return out
    try:
        check = parse(following.source)
    except SyntaxError as error:
        return [*out, f"the check cell does not parse: {error}"]
    if not check.body or not _is_exercise_with(check.body[0]):
        out.append(f"the check cell does not start with `with exercise(...):` but "
                   f"{first_line(following.source)!r}")
    bare = [node.lineno for node in ast.walk(check) if isinstance(node, ast.Assert)
            and node.msg is None]
    if bare:
        out.append(f"the check cell has asserts without a message on lines {bare}")
    used = loaded_names(following.source) & answer_names - stub_names
    if stub is not None and used:
        out.append(f"the check uses {sorted(used)}, which only the answer defines")
    return out


@pytest.mark.parametrize("path", SERIES, ids=lambda p: p.name)
def test_exercises_follow_the_convention(path: Path) -> None:
    nb = read(path)
    found = list(tool.problems(nb))
    for index in solution_indices(nb):
        found += [f"solution cell {index}: {p}" for p in exercise_problems(nb, index)]
    checks = [i for i, cell in enumerate(nb.cells) if tool.is_check(cell)]
    if checks:
        setup = "\n".join(c.source for c in nb.cells[:checks[0]] if c.cell_type == "code")
        if not re.search(r"^from checks import .*\bexercise\b", setup, re.MULTILINE):
            found.append("no `from checks import exercise` in a code cell before the first "
                         "check cell")
    orphans = [i for i in checks if i == 0 or not tool.is_solution(nb.cells[i - 1])]
    if orphans:
        found.append(f"check cells {orphans} do not follow a solution cell")
    assert not found, f"{path.name}:\n  " + "\n  ".join(found)


def test_student_copy_tool_check_mode_agrees() -> None:
    """`tools/student_copy.py --check` reports what problems() finds, and exits 1 then."""
    code = tool.main(["--check"])
    assert code == (1 if tool.check_series(NOTEBOOKS) else 0)


def test_student_copy_replaces_answers_and_clears_outputs(tmp_path: Path) -> None:
    """On a small notebook of our own: the copy has the stub, no answer, no outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    nb.cells = [
        nbformat.v4.new_code_cell("from checks import exercise", execution_count=1),
        nbformat.v4.new_code_cell(
            f"import math\n{tool.BEGIN}\ndef area(r):\n    return math.pi * r * r\n{tool.END}\n",
            execution_count=2,
            metadata={"tags": ["solution"], "jupyter": {"source_hidden": True},
                      "jobq": {"stub": "# Write area(r).\ndef area(r):\n"
                                       "    raise NotImplementedError('area of a circle')"}}),
        nbformat.v4.new_code_cell(
            'with exercise("area()"):\n    assert area(1) == math.pi, f"got {area(1)}"',
            execution_count=3, metadata={"tags": ["check"]},
            outputs=[nbformat.v4.new_output("stream", text="ok\n")]),
    ]
    copied = tool.student_copy(nb)
    assert nb.cells[1].source.count(tool.BEGIN) == 1, "the argument was changed"
    assert copied.cells[1].source == (
        "import math\n# Write area(r).\ndef area(r):\n"
        "    raise NotImplementedError('area of a circle')"
    )
    assert "source_hidden" not in copied.cells[1].metadata.get("jupyter", {})
    assert all(c.outputs == [] and c.execution_count is None for c in copied.cells)
    assert "widgets" not in copied.metadata
    assert tool.problems(nb) == []
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "01-area.ipynb")
    (tmp_path / "src" / "checks.py").write_text("")
    assert tool.main(["--source", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["01-area.ipynb", "checks.py"]

    del nb.cells[1].metadata["jobq"]
    nb.cells[2].metadata["tags"] = []
    assert tool.problems(nb) == [
        "solution cell 1 has no metadata.jobq.stub (a non-empty string)",
        "solution cell 1 is not followed by a code cell tagged 'check'",
    ]
    with pytest.raises(ValueError, match=r"cell 1 .* no jobq\.stub"):
        tool.student_copy(nb)


def test_structure_check_finds_what_breaks_the_convention() -> None:
    """exercise_problems() on an exercise that breaks every rule it checks."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"x = 1\n{tool.BEGIN}\ndef area(r):\n    return 3 * r * r\nPI = 3\n"
            f"assert area(1) == 3\n{tool.END}",
            metadata={"tags": ["solution"],
                      "jobq": {"stub": "def area(r):\n    raise NotImplementedError"}}),
        nbformat.v4.new_code_cell("assert area(PI) == 27", metadata={"tags": ["check"]}),
    ]
    assert exercise_problems(nb, 0) == [
        "outside the markers only imports may stand, found ['Assign']",
        "metadata.jupyter.source_hidden is not true (the answer shows)",
        "assert inside the markers (answer lines [4]): asserts belong in the check cell, "
        "or the student copy loses them",
        "the stub does not start with a comment for the learner: 'def area(r):'",
        "the answer defines ['PI'], the stub does not: a later cell would fail with "
        "NameError in the student copy",
        "the check cell does not start with `with exercise(...):` but 'assert area(PI) == 27'",
        "the check cell has asserts without a message on lines [1]",
        "the check uses ['PI'], which only the answer defines",
    ]


# -- running notebooks in kernels ---------------------------------------------------------


def _kernel_env() -> dict[str, str]:
    # The kernel draws inline plots as a learner's does: tests/conftest.py's MPLBACKEND=Agg
    # would make every plt.show() warn.
    return {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PYTEST_CURRENT_TEST")}


async def _execute(nb: nbformat.NotebookNode, cwd: Path, slots: asyncio.Semaphore
                   ) -> tuple[float, str | None]:
    """Run every cell of `nb` in place, errors recorded as outputs: (seconds it took, None),
    or (seconds, why it stopped) when the kernel died or did not start."""
    async with slots:
        started = time.monotonic()
        # A cell over its time is interrupted (KeyboardInterrupt in its outputs) and the run
        # goes on: a stub that hangs fails its own notebook's test, not the whole run.
        client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                                interrupt_on_timeout=True, allow_errors=True,
                                record_timing=False, resources={"metadata": {"path": str(cwd)}})
        try:
            await client.async_execute(env=_kernel_env())
        except Exception as error:
            return time.monotonic() - started, f"{type(error).__name__}: {error}"
        return time.monotonic() - started, None


def execute_all(jobs: list[tuple[nbformat.NotebookNode, Path]]
                ) -> list[tuple[float, str | None]]:
    """Execute the notebooks, PARALLEL kernels at a time, longest (most code cells) first;
    for each, (seconds, None) or (seconds, why the run stopped)."""
    order = sorted(range(len(jobs)), key=lambda k: -sum(
        c.cell_type == "code" for c in jobs[k][0].cells))

    async def main() -> list[tuple[float, str | None]]:
        slots = asyncio.Semaphore(PARALLEL)
        done = await asyncio.gather(*(_execute(*jobs[k], slots) for k in order))
        return [done[order.index(k)] for k in range(len(jobs))]

    return asyncio.run(main())


def errors(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def describe(index: int, cell: nbformat.NotebookNode) -> str:
    found = errors(cell)
    what = (f"{found[0].ename}: {found[0].evalue}" if found else "no error")
    return f"cell {index} ({first_line(cell.source)[:60]!r}): {what}"


@dataclass(frozen=True)
class Skipped:
    reason: str


# A notebook's executed student copy; or why there is none: str (a failure), Skipped, or
# None (the notebook has no exercises).
StudentRun = nbformat.NotebookNode | str | Skipped | None


def _copy_helpers(directory: Path) -> None:
    for module in tool.helper_modules(NOTEBOOKS):
        shutil.copy2(module, directory / module.name)


@pytest.fixture(scope="module")
def student_runs(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[dict[str, StudentRun]]:
    """Each notebook -> its executed student copy (or why there is none; None: no exercises)."""
    directory = tmp_path_factory.mktemp("student")
    _copy_helpers(directory)
    runs: dict[str, StudentRun] = {}
    names, jobs = [], []
    for path in SERIES:
        try:
            stored = read(path)
            nb = tool.student_copy(stored)
        except Exception as error:  # that notebook's test fails and says why, not the rest
            runs[path.name] = f"no student copy: {type(error).__name__}: {error}"
            continue
        if not solution_indices(stored):
            runs[path.name] = None
            continue
        missing = missing_program(path.name)
        if missing is not None:
            runs[path.name] = Skipped(missing)
            continue
        nbformat.write(nb, directory / path.name)
        runs[path.name] = nb
        names.append(path.name)
        jobs.append((nb, directory))
    started = time.monotonic()
    done = execute_all(jobs)
    for name, (_, stopped) in zip(names, done, strict=True):
        if stopped is not None:
            runs[name] = f"the run stopped: {stopped}"
    # Wall time is a figure to report, not a fact to assert (-s shows it).
    print(f"\nstudent copies: {len(jobs)} notebooks in {time.monotonic() - started:.0f} s, "
          f"{PARALLEL} kernels at a time; each: "
          + ", ".join(f"{n[:2]} {t:.0f} s" for n, (t, _) in zip(names, done, strict=True)))
    yield runs


@pytest.mark.slow
@pytest.mark.parametrize("path", SERIES, ids=lambda p: p.name)
def test_student_copy_fails_every_check_and_nothing_else(
        path: Path, student_runs: dict[str, StudentRun]) -> None:
    run = student_runs[path.name]
    if run is None:
        pytest.skip(f"{path.name} has no exercises (no cell tagged 'solution')")
    if isinstance(run, Skipped):
        pytest.skip(run.reason)
    assert not isinstance(run, str), f"{path.name}: {run}"
    wrong = []
    for index, cell in enumerate(run.cells):
        if cell.cell_type != "code":
            continue
        found = errors(cell)
        if tool.is_check(cell):
            if not (len(found) == 1 and found[0].ename == "AssertionError"
                    and found[0].evalue.strip()):
                wrong.append(f"check {describe(index, cell)} - want an AssertionError "
                             "with a message")
        elif found and "raises-exception" not in tool.tags(cell):
            wrong.append(describe(index, cell))
    assert not wrong, (f"{path.name}, student copy (answers replaced by stubs):\n  "
                       + "\n  ".join(wrong))


# -- wrong answers ---------------------------------------------------------------------------


def find_exercise(nb: nbformat.NotebookNode, name: str) -> int:
    """Index of the one solution cell whose answer defines `name` at top level."""
    found = [i for i in solution_indices(nb)
             if name in defined_names(tool.split_solution(nb.cells[i].source)[1])]
    assert len(found) == 1, f"want one solution cell defining {name!r}, found cells {found}"
    return found[0]


def wrong_answer_run(path: Path, answers: list[WrongAnswer]
                     ) -> tuple[nbformat.NotebookNode, dict[str, int]]:
    """The student copy up to the last check cell the answers need, each wrong answer
    inserted (solution with the mistake, then a copy of the check) right before its
    exercise's own stub cell; and where each answer's check cell is in it."""
    original = read(path)
    student = tool.student_copy(original)
    targets = {a.id: find_exercise(original, a.exercise) for a in answers}
    last = max(targets.values()) + 1
    cells = []
    where: dict[str, int] = {}
    for index, cell in enumerate(student.cells[:last + 1]):
        for answer in answers:
            if targets[answer.id] == index:
                wrong = copy.deepcopy(cell)
                wrong.source = tool.replace_solution(original.cells[index].source,
                                                     answer.source)
                cells += [wrong, copy.deepcopy(student.cells[index + 1])]
                where[answer.id] = len(cells) - 1
        cells.append(cell)  # then the stub as in the copy: later exercises see what a learner has
    student.cells = cells
    return student, where


@pytest.fixture(scope="module")
def wrong_runs(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, tuple[nbformat.NotebookNode, int] | str | Skipped]]:
    """Each WrongAnswer's id -> (the executed run, index of its check cell in it)."""
    directory = tmp_path_factory.mktemp("wrong")
    _copy_helpers(directory)
    by_notebook: dict[str, list[WrongAnswer]] = {}
    for answer in WRONG_ANSWERS:
        by_notebook.setdefault(answer.notebook, []).append(answer)
    runs: dict[str, tuple[nbformat.NotebookNode, int] | str | Skipped] = {}
    jobs = []
    for name, answers in by_notebook.items():
        missing = missing_program(name)
        if missing is not None:
            runs.update({a.id: Skipped(missing) for a in answers})
            continue
        try:
            nb, where = wrong_answer_run(NOTEBOOKS / name, answers)
        except Exception as error:  # those answers' tests fail and say why, not the rest
            runs.update({a.id: f"cannot build the run: {type(error).__name__}: {error}"
                         for a in answers})
            continue
        jobs.append((nb, directory))
        runs.update({answer_id: (nb, index) for answer_id, index in where.items()})
    started = time.monotonic()
    for (nb, _), (_, stopped) in zip(jobs, execute_all(jobs), strict=True):
        if stopped is not None:
            runs.update({answer_id: f"the run stopped: {stopped}"
                         for answer_id, run in runs.items()
                         if isinstance(run, tuple) and run[0] is nb})
    print(f"\nwrong answers: {len(WRONG_ANSWERS)} in {len(jobs)} notebooks, "
          f"{time.monotonic() - started:.0f} s")
    yield runs


@pytest.mark.slow
@pytest.mark.parametrize("answer", WRONG_ANSWERS, ids=lambda a: a.id)
def test_wrong_answer_is_caught_with_actual_values(
        answer: WrongAnswer,
        wrong_runs: dict[str, tuple[nbformat.NotebookNode, int] | str | Skipped]) -> None:
    run = wrong_runs[answer.id]
    if isinstance(run, Skipped):
        pytest.skip(run.reason)
    assert not isinstance(run, str), f"{answer.id}: {run}"
    nb, check_index = run
    before = [describe(i, c) for i, c in enumerate(nb.cells[:check_index])
              if c.cell_type == "code" and errors(c) and not tool.is_check(c)
              and "raises-exception" not in tool.tags(c)]
    assert not before, f"{answer.id}: cells before the check failed:\n  " + "\n  ".join(before)
    found = errors(nb.cells[check_index])
    assert found, f"{answer.id}: the check passed the wrong answer:\n{answer.source}"
    assert found[0].ename == "AssertionError", (
        f"{answer.id}: the check failed, but not as an assertion: "
        f"{describe(check_index, nb.cells[check_index])}")
    message = found[0].evalue
    print(f"{answer.id}: {message}")  # what the learner reads (-s shows it)
    missing = [text for text in answer.shows if text not in message]
    assert not missing, (f"{answer.id}: the check's message does not show {missing}; "
                         f"it says: {message!r}")


def test_mechanism_exercises_have_wrong_answers() -> None:
    """Issue 13: each mechanism the learner writes is tried with at least one wrong answer."""
    short = []
    for number, wanted in MECHANISMS.items():
        covered = {a.exercise for a in WRONG_ANSWERS if a.notebook.startswith(f"{number}-")}
        if len(covered) < wanted:
            short.append(f"{number}: wrong answers for {sorted(covered)}, want {wanted} "
                         "exercises covered")
    assert not short, "tests/exercise_answers.py: " + "; ".join(short)
