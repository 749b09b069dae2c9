"""Every example in README.md and CLI.md runs as written (issue 14), so the docs cannot rot.

Every fenced block of the two files is collected, and its language says what it is - a
block without one fails `test_every_block_says_what_it_is`, so no example escapes unrun.

``python``, by what the code is (decided from its syntax tree):

- a complete script (no top-level ``await``, no ``test_*`` function): saved as a file in a
  temp dir and run with ``python FILE`` there, exactly as a user who saved it would. It must
  exit 0 with nothing on stderr; a block marked ``<!-- example: NAME -->`` whose output is
  shown in a later ``text`` block marked ``<!-- output: NAME -->`` must print exactly that.
- notebook code (top-level ``await`` / ``async with``, which only a notebook cell allows):
  run as the one cell of a notebook in a real Jupyter kernel, through nbclient (what nbval
  uses) - not a wrapper such as ``asyncio.run`` of an ``async def``, which would differ from
  a cell where it matters (the kernel's loop is already running; names land in the
  kernel's namespace). It must raise nothing and write nothing to stderr.
- a pytest test (a top-level ``test_*`` function): saved as ``test_example.py`` in an
  empty temp dir - a project of its own, without this repository's pytest configuration,
  so jobq's plugin is there only because jobq is installed - and run with
  ``python -m pytest``; it must pass with no warning.
- ``<!-- docs-test: excerpt PATH -->``: definitions quoted from a repository file in the
  prose; each must be the same code as PATH's definition of that name, docstrings and
  comments aside (PATH itself runs where the docs run it).

``bash``: each command (one line, ``\\`` continues it; comments and blank lines dropped)
runs with ``bash -c``; its exit code must be the expected one and its stderr must hold no
traceback.

``console``: a terminal transcript, ``$ COMMAND`` lines each followed by what it prints.
Each command runs as for ``bash``; then every printed line must be found, in order, on
the command's stdout or stderr, with numbers not compared (timings vary, and substitutions
change counts) and whitespace and rules of dashes normalised; ``...`` stands for lines
left out. ``$ echo $?`` followed by N states the exit code of the command before it.

``text``: not run - a diagram, or the output of an example.

Markers are HTML comments on the lines right above a block (GitHub does not show them):

- ``<!-- docs-test: skip - REASON -->`` not run, and why; a skip without a reason fails.
- ``<!-- docs-test: exit N -->`` every command of the block must exit with N (default 0).
- ``<!-- docs-test: substitute "OLD" "NEW" -->`` run with OLD replaced by NEW - a long run
  made short; OLD must occur in the block, so a substitution cannot silently go stale.
- ``<!-- docs-test: sigint after S s -->`` SIGINT to the command's process group, as a
  Ctrl-C typed in a terminal sends it, S seconds after the command's first line on stderr
  (``jobq: started: ...``) - not after the process starts, which on a loaded machine could
  make it an interrupt during start-up, a different path with different output.
- ``<!-- docs-test: excerpt PATH -->`` see above.

Where commands run: from a temp dir that mirrors the repository's root - a symlink to each
of its top-level entries - so relative names (``examples.my_jobs:jobs``,
``tests/cli_targets.py``) resolve as from the root, while the files a command writes
(``run.jsonl``, ``run.png``) land in the temp dir, not in the working tree. ``PATH`` starts
with this venv's ``bin``, so ``python``, ``jobq`` and ``pytest`` are the venv's. A command
that appears more than once (after substitution) runs once.
"""

from __future__ import annotations

import ast
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "CLI.md")
LANGUAGES = {"python", "bash", "console", "text"}
TIMEOUT = 180  # seconds, per command: a hang fails instead of blocking the suite
BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
ENV.pop("PYTEST_CURRENT_TEST", None)  # the examples run as a user runs them, not under pytest

_FENCE = re.compile(r"^```(\S*)\s*$")
_COMMENT = re.compile(r"^<!--(.*)-->\s*$")
_DIRECTIVE = re.compile(r"^\s*docs-test:\s*(.*?)\s*$")


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    comments: list[str] = field(default_factory=list)  # the HTML comments right above it

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def directives(self) -> list[str]:
        found = (_DIRECTIVE.match(comment) for comment in self.comments)
        return [match.group(1) for match in found if match]

    def named(self, kind: str) -> str | None:
        """NAME of a `<!-- example: NAME -->` (kind "example") or `<!-- output: NAME -->`."""
        for comment in self.comments:
            match = re.fullmatch(rf"\s*{kind}:\s*(\S+)\s*", comment)
            if match:
                return match.group(1)
        return None


def _blocks(doc: str) -> list[Block]:
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        comments: list[str] = []
        above = index - 1
        while above >= 0 and (comment := _COMMENT.match(lines[above])):
            comments.insert(0, comment.group(1))
            above -= 1
        end = lines.index("```", index + 1)
        code = "".join(line + "\n" for line in lines[index + 1:end])
        blocks.append(Block(doc, index + 1, opening.group(1), code, comments))
        index = end + 1
    return blocks


BLOCKS = [block for doc in DOCS for block in _blocks(doc)]


# -- markers -----------------------------------------------------------------------------


@dataclass
class Plan:
    """What the markers above a block ask for."""

    skip: str | None = None
    exit: int | None = None
    substitutions: list[tuple[str, str]] = field(default_factory=list)
    sigint_after: float | None = None
    excerpt: str | None = None


def _plan(block: Block) -> Plan:
    plan = Plan()
    for directive in block.directives:
        if match := re.fullmatch(r"skip(?:\s*-\s*(.*))?", directive):
            reason = (match.group(1) or "").strip()
            assert reason, f"{block.id}: a skip must say why: <!-- docs-test: skip - REASON -->"
            plan.skip = reason
        elif match := re.fullmatch(r"exit (\d+)", directive):
            plan.exit = int(match.group(1))
        elif directive.startswith("substitute "):
            words = shlex.split(directive.removeprefix("substitute "))
            assert len(words) == 2, f"{block.id}: substitute takes \"OLD\" \"NEW\": {directive}"
            assert words[0] in block.code, f"{block.id}: {words[0]!r} is not in the block"
            plan.substitutions.append((words[0], words[1]))
        elif match := re.fullmatch(r"sigint after (\d+(?:\.\d+)?) s", directive):
            plan.sigint_after = float(match.group(1))
        elif match := re.fullmatch(r"excerpt (\S+)", directive):
            plan.excerpt = match.group(1)
        else:
            raise AssertionError(f"{block.id}: unknown marker <!-- docs-test: {directive} -->")
    return plan


def _code(block: Block, plan: Plan) -> str:
    code = block.code
    for old, new in plan.substitutions:
        code = code.replace(old, new)
    return code


def _param(block: Block) -> object:
    try:
        skip = _plan(block).skip
    except AssertionError:
        skip = None  # reported by test_every_marker_is_well_formed, and by the test itself
    marks = [pytest.mark.skip(reason=f"{block.id}: {skip}")] if skip else []
    return pytest.param(block, id=f"{block.id}-{block.language}", marks=marks)


def test_every_block_says_what_it_is() -> None:
    untagged = [f"{b.id} ```{b.language}" for b in BLOCKS if b.language not in LANGUAGES]
    assert not untagged, f"give each block one of {sorted(LANGUAGES)}: {untagged}"


def test_every_marker_is_well_formed() -> None:
    for block in BLOCKS:
        plan = _plan(block)  # raises on an unknown marker, a skip without a reason, ...
        if block.language == "text":
            assert block.directives == [], f"{block.id}: a text block is never run"
        if plan.excerpt:
            assert block.language == "python", f"{block.id}: only python blocks are excerpts"
        if plan.sigint_after is not None or plan.exit is not None:
            assert block.language in {"bash", "console"}, f"{block.id}: not a command"


def test_every_shown_output_belongs_to_an_example() -> None:
    examples = {b.named("example"): b for b in BLOCKS if b.named("example")}
    for block in BLOCKS:
        if name := block.named("output"):
            assert block.language == "text", f"{block.id}: an output is a text block"
            assert name in examples, f"{block.id}: no <!-- example: {name} --> block"
            assert examples[name].line < block.line, f"{block.id}: the output comes after"


# -- python ------------------------------------------------------------------------------


def _python_kind(code: str) -> str:
    try:
        compile(code, "<example>", "exec")  # not ast.parse: it accepts a top-level await
    except SyntaxError:
        # Only a notebook cell (or IPython) accepts a top-level await; else a real error.
        compile(code, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return "notebook"
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.name.startswith("test_")
        ):
            return "pytest"
    return "script"


def _shown_output(name: str) -> str | None:
    for block in BLOCKS:
        if block.named("output") == name:
            return block.code
    return None


def _run_script(code: str, tmp_path: Path, name: str | None) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warning, no traceback
    shown = _shown_output(name) if name else None
    if shown is not None:
        assert done.stdout == shown


def _run_notebook_cell(code: str, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    notebook.cells.append(nbformat.v4.new_code_cell(code))  # type: ignore[no-untyped-call]
    client = NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the traceback, if the cell raises
    outputs = notebook.cells[0].outputs
    stderr = [out.get("text", "") for out in outputs if out.get("name") == "stderr"]
    assert stderr == [], stderr
    assert any(out.get("output_type") == "stream" for out in outputs)  # it ran, and printed


def _run_pytest(code: str, tmp_path: Path) -> None:
    (tmp_path / "test_example.py").write_text(code, encoding="utf-8")
    # looptime may be in this venv for the cross-check test (the `crosscheck` extra); a project
    # that installs jobq does not have it, and its plugin, without pytest-asyncio, errors.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:looptime_plugin", "-p", "no:cacheprovider",
         "test_example.py"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "warning" not in summary, done.stdout


def _definitions(code: str) -> dict[str, str]:
    """Each top-level def and class, as its syntax tree without docstrings or comments."""
    found = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for inner in ast.walk(node):
                body = getattr(inner, "body", None)
                if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                        and isinstance(body[0].value, ast.Constant)
                        and isinstance(body[0].value.value, str)):
                    del body[0]  # a docstring
            found[node.name] = ast.dump(node)
    return found


def _check_excerpt(block: Block, path: str) -> None:
    quoted = _definitions(block.code)
    assert quoted, f"{block.id}: an excerpt quotes top-level definitions of {path}"
    actual = _definitions((ROOT / path).read_text(encoding="utf-8"))
    for name, tree in quoted.items():
        assert name in actual, f"{block.id}: {path} no longer defines {name}"
        assert actual[name] == tree, f"{block.id}: {path}'s {name} is no longer this code"


@pytest.mark.parametrize(
    "block", [_param(b) for b in BLOCKS if b.language == "python"]
)
def test_python_example(block: Block, tmp_path: Path) -> None:
    plan = _plan(block)
    if plan.excerpt:
        _check_excerpt(block, plan.excerpt)
        return
    code = _code(block, plan)
    kind = _python_kind(code)
    if kind == "notebook":
        _run_notebook_cell(code, tmp_path)
    elif kind == "pytest":
        _run_pytest(code, tmp_path)
    else:
        _run_script(code, tmp_path, block.named("example"))


# -- bash and console --------------------------------------------------------------------


@dataclass
class Command:
    text: str
    shown: list[str] = field(default_factory=list)  # console: the lines it prints
    exit: int | None = None  # console: from a following `$ echo $?`


def _bash_commands(code: str) -> list[Command]:
    joined = code.replace("\\\n", " ")
    return [Command(line.strip()) for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _console_commands(code: str) -> list[Command]:
    commands: list[Command] = []
    lines = code.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("$ echo $?"):
            assert commands, "`$ echo $?` needs a command before it"
            commands[-1].exit = int(lines[index + 1])
        elif line.startswith("$ "):
            commands.append(Command(line[2:].strip()))
        elif commands and not (index > 0 and lines[index - 1].startswith("$ echo $?")):
            commands[-1].shown.append(line)
    return commands


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


_RAN: dict[tuple[str, float | None], Ran] = {}


def _run_command(command: str, cwd: Path, sigint_after: float | None) -> Ran:
    key = (command, sigint_after)
    if key not in _RAN:
        process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=ENV, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)  # its own group, as in a terminal
        first = ""
        try:
            if sigint_after is not None:
                # Counted from its first line, which says it started: a loaded machine
                # that is slow to import must not turn the Ctrl-C into one during start-up.
                assert process.stderr is not None
                select.select([process.stderr], [], [], TIMEOUT)
                first = process.stderr.readline()
                time.sleep(sigint_after)
                os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: the whole group
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        _RAN[key] = Ran(process.returncode, stdout, first + stderr)
    return _RAN[key]


def _shape(line: str) -> str:
    """A line as compared: numbers, runs of dashes and whitespace normalised."""
    line = re.sub(r"\d+(?:\.\d+)?", "N", line)
    line = re.sub(r"-{3,}", "---", line)
    return " ".join(line.split())


def _missing_lines(shown: list[str], ran: Ran) -> list[str]:
    """The shown lines not found, in order, on stdout or stderr (each in its own order)."""
    streams = [[_shape(line) for line in ran.stdout.splitlines()],
               [_shape(line) for line in ran.stderr.splitlines()]]
    cursors = [0, 0]
    missing = []
    for line in shown:
        if line.strip() in {"", "..."}:
            continue
        wanted = _shape(line)
        for number, stream in enumerate(streams):
            if wanted in stream[cursors[number]:]:
                cursors[number] = stream.index(wanted, cursors[number]) + 1
                break
        else:
            missing.append(line)
    return missing


@pytest.fixture(scope="module")
def repo_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mirror = tmp_path_factory.mktemp("repo")
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".venv"}:
            (mirror / entry.name).symlink_to(entry)
    return mirror


@pytest.mark.parametrize(
    "block", [_param(b) for b in BLOCKS if b.language in {"bash", "console"}]
)
def test_shell_example(block: Block, repo_mirror: Path) -> None:
    plan = _plan(block)
    code = _code(block, plan)
    commands = _console_commands(code) if block.language == "console" else _bash_commands(code)
    assert commands, f"{block.id} has no command"
    for command in commands:
        if command.exit is not None and plan.exit is not None:
            assert command.exit == plan.exit, f"{block.id}: the marker and `echo $?` differ"
        expected = command.exit if command.exit is not None else plan.exit or 0
        ran = _run_command(command.text, repo_mirror, plan.sigint_after)
        where = f"{block.id}: $ {command.text}\n--- stdout\n{ran.stdout}\n--- stderr\n{ran.stderr}"
        assert ran.returncode == expected, f"exit {ran.returncode}, not {expected}; {where}"
        assert "Traceback" not in ran.stderr, where
        missing = _missing_lines(command.shown, ran)
        assert not missing, f"not printed: {missing}; {where}"
