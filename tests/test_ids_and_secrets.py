"""Three promises that only show at scale, in a log, or in a script run from a terminal.

* Refusing duplicate ids stays cheap for any order of ids (`jobq.accounting.IdSet`): we count
  the work instead of timing it; the timings are in bench/ids.py.
* A password in an `AsyncIo` URL is used for the request and shown nowhere: not in errors,
  dead letters, reprs or the trace file.
* A script that starts a process pool from top-level code outside `if __name__ ==
  "__main__":` gets told so, once, instead of running again in every pool process.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, ModuleType
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobq
from jobq import (
    AsyncIo,
    HttpLimits,
    InvalidJobError,
    Job,
    Pipeline,
    RetryPolicy,
    Trace,
    UnguardedMainError,
)
from jobq.accounting import IdSet
from jobq.errors import HttpError
from jobq.http import FetchResult, HttpClient, redact
from jobq.testing import LocalServer
from jobq.work import check_main_guarded

from .helpers import session_processes

# ---- refusing duplicate ids: IdSet ---------------------------------------------------------

# Ids near zero collide and form runs; huge and negative ones check that nothing assumes a
# machine word or a non-negative id.
_ids = st.one_of(
    st.integers(-8, 8),
    st.integers(2**64 - 4, 2**64 + 4),
    st.integers(-(2**70), 2**70),
)
_ops = st.lists(st.tuples(st.sampled_from(["add", "add_new", "discard", "contains"]), _ids),
                max_size=200)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_id_set_behaves_exactly_like_a_set(ops: list[tuple[str, int]]) -> None:
    ids, model = IdSet(), set()
    for op, value in ops:
        if op == "add":
            ids.add(value)
            model.add(value)
        elif op == "add_new":  # the submit path: check and add in one call
            assert ids.add_new(value) == (value not in model), value
            model.add(value)
        elif op == "discard":
            ids.discard(value)
            model.discard(value)
        assert (value in ids) == (value in model), (op, value)
        assert len(ids) == len(model)
        # (The highest run grows without a write to the sorted runs: they must still agree.)
        assert ids.runs == _maximal_runs(model), ops
    for value in model | {v + 1 for v in model} | {v - 1 for v in model}:
        assert (value in ids) == (value in model), value
    assert "1" not in ids and 1.5 not in ids  # only ints are members


def _maximal_runs(values: set[int]) -> int:
    """How many runs of consecutive ints `values` has, counted the obvious way."""
    return sum(1 for v in values if v - 1 not in values)


def test_consecutive_ids_in_any_order_are_stored_as_one_run() -> None:
    n = 200_000
    order = list(range(n))
    random.Random(13).shuffle(order)
    ids = IdSet()
    for value in order:
        ids.add(value)
    assert len(ids) == n and ids.runs == 1  # memory: one run, not 200,000 ids
    ids.discard(n // 2)
    assert ids.runs == 2 and n // 2 not in ids and n // 2 + 1 in ids
    ids.add(n // 2)
    assert ids.runs == 1


def test_stored_runs_are_the_maximal_runs_of_the_ids() -> None:
    rng = random.Random(14)
    values = rng.sample(range(400_000), 200_000)  # half of a range: runs of every length
    ids = IdSet()
    for value in values:
        ids.add(value)
    assert ids.runs == _maximal_runs(set(values))
    for value in values[:50_000]:
        ids.discard(value)
    assert ids.runs == _maximal_runs(set(values[50_000:]))


class _BudgetExceeded(Exception):
    pass


class _StepCounter:
    """Counts the elementary steps of the code it profiles, and stops it past a budget.

    What a step is: one call of a Python function or a C function, plus - for a C call that
    inserts into or removes from the middle of a Python list - one step per entry of that
    list, since every entry after the position moves (this is what made the old IdSet
    quadratic: two flat lists, shifted on every insert). A call into sortedcontainers counts
    as log2(n) steps as a whole, whatever it does inside: that library documents and tests
    O(log n) per add, remove and bisect, and we take its word for it, not its inner calls.
    """

    _LIBRARY = os.sep + "sortedcontainers" + os.sep

    def __init__(self, n: int, budget: float) -> None:
        self.steps = 0
        self.budget = budget
        self._library_call = max(1, math.ceil(math.log2(n)))

    def _in_library(self, frame: FrameType | None) -> bool:
        return frame is not None and self._LIBRARY in frame.f_code.co_filename

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            if self._in_library(frame):
                if not self._in_library(frame.f_back):  # entered from outside: one price
                    self.steps += self._library_call
            else:
                self.steps += 1
        elif event == "c_call" and not self._in_library(frame):
            self.steps += 1
            owner = getattr(arg, "__self__", None)
            if isinstance(owner, list) and getattr(arg, "__name__", "") in (
                    "insert", "pop", "remove"):
                self.steps += len(owner)
        if self.steps > self.budget:
            raise _BudgetExceeded(f"more than {self.budget:.0f} steps")

    def run(self, work: Callable[[], None]) -> None:
        sys.setprofile(self)
        try:
            work()
        finally:
            sys.setprofile(None)


def test_random_ids_cost_n_log_n_steps_not_n_squared() -> None:
    n = 200_000
    values = random.Random(15).sample(range(2**40), n)  # random: nearly every id a run
    ids = IdSet()
    # An add is one search and one change of the ordered index, each log2(n) steps, plus a
    # few plain calls: about 3.2 n log2(n) steps in all (measured). The old IdSet, which
    # inserted into two flat lists, needed about n^2 = 4e10: it fails within a second.
    counter = _StepCounter(n, budget=6 * n * math.log2(n))

    def add_all() -> None:
        for value in values:
            ids.add(value)

    counter.run(add_all)
    assert len(ids) == n and ids.runs == _maximal_runs(set(values))
    assert all(value in ids for value in values)


# ---- passwords in URLs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


def _with_credentials(url: str, user: str = "ann", password: str = "secret") -> str:
    return url.replace("http://", f"http://{user}:{password}@", 1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://ann:secret@127.0.0.1:8080/ok", "http://ann:***@127.0.0.1:8080/ok"),
        ("https://:secret@example.org/", "https://:***@example.org/"),
        ("http://ann@example.org/x", "http://ann@example.org/x"),  # a user name alone stays
        ("http://ann:p@ss:w@rd@example.org/", "http://ann:***@example.org/"),  # last @ ends it
        ("http://ann:secret@[::1]:8080/x", "http://ann:***@[::1]:8080/x"),
        ("http://[::1]:8080/a@b", "http://[::1]:8080/a@b"),  # '@' in a path is no password
        ("http://h/x?size=3&token=abc&api_key=k1#top", "http://h/x?size=3&token=***&api_key=***#top"),
        ("http://h/x?latency=0.5&Signature=zz", "http://h/x?latency=0.5&Signature=***"),
        ("http://ann:secret@[::1", "http://ann:***@[::1"),  # not a valid URL: redacted anyway
        ("GET http://ann:secret@h/x: refused to follow a redirect to ftp://bob:pw@f/y",
         "GET http://ann:***@h/x: refused to follow a redirect to ftp://bob:***@f/y"),
        ("http://127.0.0.1:8080/ok", "http://127.0.0.1:8080/ok"),
    ],
)
def test_redact_hides_passwords_and_secret_query_values(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_job_repr_hides_the_password_but_the_job_keeps_it() -> None:
    url = "http://ann:secret@127.0.0.1:8080/ok?token=t0k3n&size=3"
    job = Job(1, b"", AsyncIo(url))
    assert job.job_type.url == url  # the request needs the real one
    for shown in (repr(job), str(job), repr(job.job_type), str(job.job_type)):
        assert "secret" not in shown and "t0k3n" not in shown, shown
        assert "ann:***@127.0.0.1:8080/ok" in shown and "size=3" in shown, shown


@pytest.mark.parametrize(
    "url",
    [
        "http://ann:secret@127.0.0.1:99999/x",  # port out of range
        "http://ann:secret@127.0.0.1:abc/x",  # port not a number
        "http://ann:secret@[::1/x",  # broken IPv6 host
        "ftp://ann:secret@127.0.0.1/x",  # not http
        "http://ann:secret@127.0.0.1:0/x",  # port 0
        "http://ann:secret@/x",  # no host
    ],
)
def test_an_invalid_url_with_a_password_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(InvalidJobError) as caught:
        AsyncIo(url)
    message = str(caught.value)
    assert "AsyncIo.url" in message and "ann:***@" in message, message
    assert "secret" not in message, message


def _fetch(url: str, limits: HttpLimits | None = None) -> HttpError:
    async def main() -> HttpError:
        async with HttpClient(limits) as client:
            try:
                await client.fetch(url)
            except HttpError as exc:
                return exc
        raise AssertionError(f"{url} did not fail")

    return asyncio.run(main())


def _every_failure(server: LocalServer) -> list[tuple[str, HttpLimits | None]]:
    """A URL with credentials for every kind of HttpError, and the limits that cause it."""
    closed = f"http://127.0.0.1:{_closed_port()}/ok"
    to = quote("ftp://bob:pw2@127.0.0.1/x?token=t0k3n", safe="")
    return [
        (server.url("/status/503?token=t0k3n"), None),
        (server.url("/slow/5"), HttpLimits(read_timeout=0.2)),
        (server.url("/slow/5"), HttpLimits(total_timeout=0.2)),
        (closed, HttpLimits(connect_timeout=2.0)),
        (server.url("/big/2000000"), None),
        (server.url("/big/2000000?chunked=1"), None),
        (server.url(f"/redirect?to={to}"), None),
        (server.url("/redirect?to=" + quote(server.url("/ok"), safe="")),
         HttpLimits(max_redirects=0)),
    ]


def test_every_http_error_names_the_url_without_its_password(server: LocalServer) -> None:
    # The URL we ask for carries its redirect target percent-encoded in `?to=`, a parameter
    # not named like a secret: it is shown as it is. The target the server answers with is
    # a URL of its own, and is redacted.
    for url, limits in _every_failure(server):
        error = _fetch(_with_credentials(url), limits)
        message = str(error)
        assert "secret" not in message, message
        assert message.startswith("GET http://ann:***@127.0.0.1:"), message
        # What follows the URL: where it was redirected to, why it failed.
        said = message.split(": ", 1)[1]
        assert "t0k3n" not in said and "pw2" not in said, message
        assert "(redirected to" not in message, message  # none of them was redirected


@pytest.mark.parametrize(
    "url", ["http://ann:secret@/x", "ftp://ann:secret@127.0.0.1/x",
            "http://ann:secret@127.0.0.1:99999/x"],
)
def test_a_url_the_client_refuses_is_named_without_its_password(url: str) -> None:
    error = _fetch(url)  # HttpClient.fetch directly: no AsyncIo validation in between
    assert "ann:***@" in str(error) and "secret" not in str(error), error
    # Not in the traceback either: the aiohttp error that carried the URL is left out.
    assert error.__cause__ is None and error.__suppress_context__


def test_a_dead_lettered_job_with_credentials_leaves_no_secret_anywhere(
    server: LocalServer, tmp_path: Path
) -> None:
    url = _with_credentials(server.url("/status/500"))
    path = tmp_path / "trace.jsonl"

    async def main() -> Pipeline:
        pipe = Pipeline(workers=1, executor="inline", progress=False,
                        retry=RetryPolicy(max_retries=2, base_delay=0.01),
                        trace=Trace(path=path))
        async with pipe:
            await pipe.submit(Job(7, b"", AsyncIo(url)))
        pipe.trace.close()
        return pipe

    pipe = asyncio.run(main())
    assert pipe.report is not None and pipe.report.dead_lettered == 1
    letter = pipe.dead_letters.get(7)
    errors = [a.error or "" for a in letter.attempts]
    assert len(errors) == 3 and all("HttpStatusError" in e and "500" in e for e in errors)
    pipe.trace.to_jsonl(tmp_path / "again.jsonl")
    shown = [
        *errors, repr(letter), repr(letter.job), repr(pipe.dead_letters.errors()),
        *(repr(r) for r in pipe.results),
        path.read_text(), (tmp_path / "again.jsonl").read_text(),
    ]
    for text in shown:
        assert "secret" not in text, text
    assert all("ann:***@127.0.0.1" in e for e in errors)


def test_a_request_with_credentials_still_sends_them(server: LocalServer) -> None:
    async def fetch(url: str) -> FetchResult:
        async with HttpClient() as client:
            return await client.fetch(url)

    good = _with_credentials(server.url("/auth/ann/secret"))
    assert asyncio.run(fetch(good)).status == 200
    answered = asyncio.run(fetch(good + "?token=t0k3n"))
    assert answered.url.endswith("?token=t0k3n")  # the data is what it is...
    assert "t0k3n" not in repr(answered)  # ...its repr is redacted
    wrong = _with_credentials(server.url("/auth/ann/secret"), password="guess")
    error = _fetch(wrong)
    assert "401" in str(error) and "guess" not in str(error)
    # And through a pipeline: the job succeeds only if the password reached the server.
    result = jobq.run_virtual(jobq.run([Job(1, b"", AsyncIo(good))], executor="inline",
                                       progress=False), deadline=60)
    assert result.report.succeeded == 1


# ---- a script that starts a process pool without `if __name__ == "__main__":` ---------------

_SCRIPT = '''\
import asyncio
import os

import jobq
from jobq import CpuBound, Job

print(f"top-level code ran as {{__name__}}", flush=True)


async def main() -> None:
    result = await jobq.run([Job(i, b"x", CpuBound(2000)) for i in range(4)], workers=2,
                            executor="process", progress=False,
                            retry=jobq.RetryPolicy(max_retries=1, base_delay=0.01))
    print(f"succeeded={{result.report.succeeded}} dead={{result.report.dead_lettered}}",
          flush=True)
    for errors in result.dead_letters.errors().values():
        print("error:", errors[-1].splitlines()[0], flush=True)


{run}
'''

_UNGUARDED = "asyncio.run(main())"
_GUARDED = 'if __name__ == "__main__":\n    asyncio.run(main())'
# Looks like a guard, and is not one: pool processes import the script as __mp_main__.
_FAKE_GUARD = 'if __name__ in ("__main__", "__mp_main__"):\n    asyncio.run(main())'


def _run_script(tmp_path: Path, run: str) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "pool_script.py"
    script.write_text(_SCRIPT.format(run=run))
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    elapsed = time.monotonic() - start
    # The session is the script's own (start_new_session): whatever is in it, it started.
    deadline = time.monotonic() + 5.0
    while (left := session_processes(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # clean up before failing, so that one bad run leaves nothing behind
        os.kill(pid, 9)
    assert not left, f"processes left running: {left}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), elapsed


_GUARD = 'if __name__ == "__main__":'


def test_unguarded_script_is_told_to_add_the_guard_and_runs_once(tmp_path: Path) -> None:
    done, elapsed = _run_script(tmp_path, _UNGUARDED)
    assert elapsed < 30, elapsed
    assert done.returncode == 0, done.stderr
    # Its top-level code ran once: in the script, never again in a pool process.
    assert done.stdout.count("top-level code ran") == 1, done.stdout
    assert "succeeded=0 dead=4" in done.stdout, done.stdout
    assert done.stdout.count("error: UnguardedMainError:") == 4, done.stdout
    # Printed once, pointing at the line, saying what to add.
    assert done.stderr.count(_GUARD) >= 1 and done.stderr.count("RuntimeWarning") == 1, (
        done.stderr)
    line = _SCRIPT.format(run=_UNGUARDED).splitlines().index(_UNGUARDED) + 1
    assert f"pool_script.py:{line}: RuntimeWarning" in done.stderr, done.stderr


def test_guarded_script_runs_its_jobs_in_the_pool(tmp_path: Path) -> None:
    done, _ = _run_script(tmp_path, _GUARDED)
    assert done.returncode == 0, done.stderr
    # The script's own run; pool processes import it again (as __mp_main__), harmlessly.
    assert done.stdout.count("top-level code ran as __main__") == 1, done.stdout
    assert "succeeded=4 dead=0" in done.stdout, done.stdout
    assert "UnguardedMainError" not in done.stdout + done.stderr


def test_a_pool_process_that_reimports_an_unguarded_script_refuses_a_pool(
    tmp_path: Path,
) -> None:
    # The parent cannot see through this guard; each pool process sees its re-import.
    done, elapsed = _run_script(tmp_path, _FAKE_GUARD)
    assert elapsed < 30, elapsed
    assert done.returncode == 0, done.stderr
    assert "succeeded=4 dead=0" in done.stdout, done.stdout  # the script's own run worked
    assert "error: UnguardedMainError:" in done.stdout, done.stdout  # the re-runs did not
    assert _GUARD in done.stderr and "RuntimeWarning" in done.stderr, done.stderr


def test_check_main_guarded_is_quiet_here() -> None:
    # pytest's own entry point is guarded (or a package __main__): no complaint.
    check_main_guarded()


def test_check_main_guarded_refuses_during_a_reimport_of_main(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a pool process looks like while it imports the script again: a second main
    # module, __mp_main__, next to __main__.
    copy = ModuleType("__mp_main__")
    copy.__file__ = "/somewhere/script.py"
    monkeypatch.setitem(sys.modules, "__mp_main__", copy)
    with pytest.warns(RuntimeWarning, match=_GUARD), pytest.raises(
            UnguardedMainError, match=r"script\.py"):
        check_main_guarded()


def test_check_main_guarded_is_quiet_under_a_tool_that_runs_the_script(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # coverage or a debugger runs the script in a __main__ of its own, after multiprocessing
    # made "__mp_main__" an alias of the tool's __main__: a different module, not a re-import.
    monkeypatch.setitem(sys.modules, "__mp_main__", ModuleType("__main__"))
    check_main_guarded()
