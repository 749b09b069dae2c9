"""jobq in other people's set-ups: their pytest runs, a service without matplotlib, a kernel
with nest-asyncio applied, a type checker on their program (issue 14, "Fit the ecosystem").

Each test runs the real thing in a subprocess: pytest on a small project in a temporary
directory, `python -m jobq`, a notebook executed by nbconvert, mypy from outside the repo.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300  # generous: a loaded 2-core machine; a hang fails instead of blocking


def _env(**extra: str) -> dict[str, str]:
    """This environment without what the outer pytest run set for itself."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTHONPATH", "MPLBACKEND")}
    return {**env, **extra}


# --- the pytest plugin acts only where asked -------------------------------------------------

PROJECT_TESTS = '''
import asyncio

import pytest


async def test_unmarked():
    assert asyncio.get_running_loop().get_debug()


@pytest.mark.jobq_async
async def test_marked_real_loop():
    assert asyncio.get_running_loop().get_debug()


@pytest.mark.virtual_time
async def test_marked_virtual_time():
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - start == 3600


def test_with_a_fixture(tmp_path):
    assert tmp_path.is_dir()
'''


def _pytest_in(project: Path, ini: str) -> tuple[dict[str, str], str]:
    """Run pytest on `project` with every installed plugin; return {test: outcome} and output."""
    (project / "pyproject.toml").write_text(f"[tool.pytest.ini_options]\n{ini}\n")
    (project / "test_project.py").write_text(PROJECT_TESTS)
    # looptime's plugin (installed by the `crosscheck` extra) errors at every test with a
    # fixture when pytest-asyncio is missing: switched off, as README says to.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:looptime_plugin", "-p", "no:cacheprovider",
         "-rA"],
        cwd=project, capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
    )
    outcomes: dict[str, str] = {}
    for line in done.stdout.splitlines():  # -rA: "PASSED test_project.py::test_x", ...
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED", "ERROR") and "::" in rest:
            name = rest.split("::", 1)[1].split(" ", 1)[0]
            outcomes[name] = word
    return outcomes, done.stdout + done.stderr


def test_plugin_leaves_unmarked_async_tests_of_other_projects_alone(tmp_path: Path) -> None:
    outcomes, output = _pytest_in(tmp_path, "")
    # What pytest says without any async plugin: jobq being installed changes nothing.
    assert "async def functions are not natively supported" in output, output
    assert outcomes["test_unmarked"] in ("FAILED", "SKIPPED"), output  # pytest 8.4+: failed
    # Tests that ask for jobq, and the project's other tests, run as usual.
    assert outcomes["test_marked_real_loop"] == "PASSED", output
    assert outcomes["test_marked_virtual_time"] == "PASSED", output
    assert outcomes["test_with_a_fixture"] == "PASSED", output


def test_plugin_runs_every_async_test_of_a_project_that_opts_in(tmp_path: Path) -> None:
    outcomes, output = _pytest_in(tmp_path, "jobq_async = true")
    assert outcomes == dict.fromkeys(
        ["test_unmarked", "test_marked_real_loop", "test_marked_virtual_time",
         "test_with_a_fixture"], "PASSED"), output
    assert "not natively supported" not in output


async def test_this_project_opts_in_so_its_unmarked_async_tests_run() -> None:
    # Unmarked: it runs (on a real loop in debug mode) only because pyproject.toml sets
    # `jobq_async = true`; without it pytest would fail it as "not natively supported".
    assert asyncio.get_running_loop().get_debug()


# --- dependencies by use: matplotlib only for plots ------------------------------------------


@pytest.fixture
def without_matplotlib(tmp_path: Path) -> dict[str, str]:
    """An environment where `import matplotlib` fails as when it is not installed."""
    fake = tmp_path / "no-matplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'matplotlib\'", name="matplotlib")\n')
    return _env(PYTHONPATH=str(fake.parent))


def test_import_jobq_does_not_import_matplotlib(tmp_path: Path) -> None:
    code = "import jobq, jobq.cli, sys; assert 'matplotlib' not in sys.modules, 'imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT, env=_env())
    assert done.returncode == 0, done.stderr


def test_the_cli_runs_without_matplotlib(tmp_path: Path,
                                         without_matplotlib: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobq", "run", "--jobs", "5", "--workers", "2",
         "--mix", "delay=1", "--virtual-time", "--no-progress",
         "--trace", str(tmp_path / "run.jsonl")],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=without_matplotlib,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "run.jsonl").stat().st_size > 0


def test_the_cli_plot_without_matplotlib_is_a_usage_error(
    tmp_path: Path, without_matplotlib: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobq", "run", "--jobs", "5", "--virtual-time",
         "--plot", str(tmp_path / "run.png")],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=without_matplotlib,
    )
    assert done.returncode == 2, done.stdout + done.stderr  # argparse's usage error
    assert "argument --plot: needs matplotlib: pip install 'jobq[plot]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run.png").exists()


def test_jobq_plotting_says_what_to_install(tmp_path: Path,
                                           without_matplotlib: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", "import jobq.plotting"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env=without_matplotlib)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: jobq.plotting needs matplotlib"), done.stderr
    assert "pip install 'jobq[plot]'" in last


# --- a kernel that applied nest-asyncio ------------------------------------------------------

NEST_CELLS = [
    # What many notebooks in the wild start with; nest-asyncio2 is the maintained fork (and
    # what ipykernel 7 depends on). On 3.11-3.13 it swaps in pure-Python tasks process-wide.
    """\
import nest_asyncio2
nest_asyncio2.apply()
import asyncio
print("pure-Python tasks:", asyncio.Task is asyncio.tasks._PyTask)""",
    """\
import jobq
from jobq import CpuBound, Delayed, Job

def jobs(n=12, delay=0.05):
    return [Job(i, b"", Delayed(delay)) for i in range(n)]

real = await jobq.run(jobs(), workers=4)
print("real:", real)""",
    """\
virtual = await jobq.run(jobs(delay=60), workers=4, virtual_time=True)
assert virtual.metrics.elapsed == 180, virtual.metrics.elapsed
print("virtual:", virtual)""",
    """\
other = await jobq.in_virtual_time(jobq.run(jobs(delay=60), workers=4))
assert other.metrics.elapsed == 180
print("in_virtual_time:", other)""",
    # The nest-asyncio idiom: asyncio.run() inside a cell, on the kernel's loop.
    """\
nested = asyncio.run(jobq.run(jobs(), workers=4))
nested_virtual = asyncio.run(jobq.run(jobs(delay=60), workers=4, virtual_time=True))
assert nested_virtual.metrics.elapsed == 180
print("asyncio.run:", nested, nested_virtual)""",
    """\
try:
    jobq.run_virtual(jobq.run(jobs()))
except RuntimeError as exc:
    print("run_virtual:", exc)""",
    """\
cpu = await jobq.run([Job(i, b"", CpuBound(10_000)) for i in range(4)], workers=2,
                     executor="process")
print("process pool:", cpu)""",
    """\
async with asyncio.timeout(10):
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(asyncio.sleep(0, "done"))
print("TaskGroup and timeout:", task.result(), asyncio.current_task() is not None)""",
    """\
import matplotlib.pyplot as plt
from jobq.plotting import plot_dashboard
fig = plot_dashboard(virtual.trace, virtual.metrics, workers=virtual.workers)
plt.show()
print("plot:", len(fig.axes) >= 4)""",
]


def test_jobq_works_in_a_kernel_with_nest_asyncio_applied(
    tmp_path: Path, need: Callable[[str, str], ModuleType]
) -> None:
    need("nest_asyncio2", "pip install nest-asyncio2")
    nbformat = need("nbformat", "pip install -e '.[dev]'")
    notebook = tmp_path / "nested.ipynb"
    cells = [nbformat.v4.new_code_cell(source) for source in NEST_CELLS]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook)
    done = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=240", "--output", "executed.ipynb", str(notebook)],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    executed = json.loads((tmp_path / "executed.ipynb").read_text())
    stdout: list[str] = []
    stderr: list[str] = []
    for cell in executed["cells"]:
        for output in cell["outputs"]:
            if output["output_type"] == "stream":
                (stdout if output["name"] == "stdout" else stderr).append("".join(output["text"]))
            assert output["output_type"] != "error", output
    text = "".join(stdout)
    assert not stderr, "".join(stderr)  # no warning, as in the series' own notebooks
    assert "pure-Python tasks: True" in text  # the patch is really in force
    ok = "submitted=12 succeeded=12 dead_lettered=0 cancelled=0 lost=0"
    for label in ("real:", "virtual:", "in_virtual_time:"):
        assert f"{label} <RunResult {ok}>" in text, text
    assert f"asyncio.run: <RunResult {ok}> <RunResult {ok}>" in text, text
    # jobq's virtual loop is a loop of its own: from a cell it is `await in_virtual_time(...)`
    # (nest-asyncio does not change that), and the error says so.
    assert "run_virtual: run_virtual() cannot start a loop inside a running one" in text
    assert "process pool: <RunResult submitted=4 succeeded=4 " in text, text
    assert "TaskGroup and timeout: done True" in text
    assert "plot: True" in text


# --- type checking a user program after the README's editable install -----------------------


def test_mypy_finds_jobq_from_outside_the_repository(tmp_path: Path) -> None:
    # From another directory and on a copy of the program, so that neither the working
    # directory nor the program's own package (tests/) puts the repository on mypy's path:
    # jobq must be found the way a user's program finds it, through the install.
    program = tmp_path / "user_program.py"
    shutil.copy(ROOT / "tests" / "typed_user_program.py", program)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", program.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout


def test_editable_install_is_a_plain_path_type_checkers_can_read() -> None:
    # setuptools' import-hook editable install is invisible to type checkers; with
    # package-dir set (pyproject.toml) the install is a .pth file naming the checkout.
    import jobq

    site = Path(jobq.__file__).resolve().parent.parent
    if site != ROOT:
        pytest.skip(f"jobq is not installed from this checkout ({site})")
    pth = [p for d in sys.path if Path(d).name == "site-packages"
           for p in Path(d).glob("__editable__*jobq*.pth")]
    if not pth:
        pytest.skip("jobq is not installed in editable mode here")
    lines = pth[0].read_text().split()
    assert lines == [str(ROOT)], textwrap.shorten(" ".join(lines), 200)
