"""The drills of issue 12: jobq's distributed mode against a real redis-server
(jobq.testing.RedisServer) and real worker processes (`python -m jobq worker ...`).

Each drill is bounded in time (asyncio.timeout, subprocess timeouts) and asserts counts and
identities - never wall times. Visibility timeouts are short (1-1.5 s) so that reclaiming a
dead worker's jobs takes a second, not thirty."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobq import Blocking, Call, CpuBound, Delayed, EventKind, Job
from jobq.broker import BrokerAuthError, BrokerUnavailableError, QueueKeys
from jobq.errors import JobDeadLetteredError
from jobq.redis_producer import RedisPipeline, merged_trace, read_dead_letters
from jobq.testing import (
    RedisServer,
    assert_each_job_ended_once,
    peak_concurrency,
)
from jobq.wire import EntryTooLargeError

from . import redis_workfns as fns
from . import workfns

ROOT = Path(__file__).resolve().parent.parent
FNS = "tests.redis_workfns"



@pytest.fixture(scope="module")
def server(redis_server_installed: str) -> Iterator[RedisServer]:
    """One server for the module; each drill has a queue of its own (see `queue`)."""
    with RedisServer() as redis:
        yield redis


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    return request.node.name.removeprefix("test_")[:40]


class Worker:
    """A `python -m jobq worker` process, its output in files (a pipe nobody reads could
    fill up and block it)."""

    def __init__(self, url: str, queue: str, tmp: Path, *, workers: int = 2,
                 visibility: float = 1.0, drain: float = 5.0, extra: tuple[str, ...] = ()):
        self.out = tmp / f"worker-{os.urandom(3).hex()}"
        argv = [sys.executable, "-m", "jobq", "worker", "--queue", queue,
                "--workers", str(workers), "--import", FNS, "--visibility-timeout",
                str(visibility), "--drain-timeout", str(drain), "--base-delay", "0.01",
                "--no-progress", *extra]
        # The URL by environment: the documented way to keep a password off the command line.
        env = {**os.environ, "JOBQ_REDIS_URL": url}
        with open(f"{self.out}.out", "wb") as stdout, open(f"{self.out}.err", "wb") as stderr:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=stdout,
                                            stderr=stderr)
        self.pid = self.process.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    @property
    def stdout(self) -> str:
        return Path(f"{self.out}.out").read_text()

    @property
    def stderr(self) -> str:
        return Path(f"{self.out}.err").read_text()

    def count(self, row: str) -> int:
        """A number from the report table it printed on exit."""
        for line in self.stdout.splitlines():
            if line.startswith(row):
                return int(line.split()[-1])
        raise AssertionError(f"no row {row!r} in:\n{self.stdout}\n{self.stderr}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    """Workers a drill starts (append to the list); whatever is still running at the end
    is killed, so no drill leaves a process behind."""
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


async def _markers(directory: Path, count: int, pid: int | None = None) -> list[Path]:
    """Wait until `count` marker files (written by fns.nap) exist - of process `pid`."""
    async with asyncio.timeout(20):
        while True:
            names = await asyncio.to_thread(os.listdir, directory)
            found = [directory / name for name in names
                     if pid is None or name.startswith(f"{pid}-")]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


# -- 1. two workers, 500 mixed jobs ---------------------------------------------------------


async def test_two_workers_end_500_mixed_jobs_once_each_within_their_slots(
    server: RedisServer, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    workers += [Worker(server.url, queue, tmp_path, workers=2) for _ in range(2)]
    jobs: list[Job] = []
    expected: dict[int, Any] = {}
    for i in range(500):
        kind = i % 4
        if kind == 0:
            jobs.append(Job(i, b"x", CpuBound(200)))
        elif kind == 1:
            jobs.append(Job(i, b"abc", Delayed(0.001)))
            expected[i] = 3  # a Delayed job's value: its payload's length
        elif kind == 2:
            jobs.append(Job(i, b"", Call(fns.add, i, 1)))
            expected[i] = i + 1
        else:
            jobs.append(Job(i, b"", Blocking(fns.square, i)))
            expected[i] = i * i
    async with asyncio.timeout(60):
        async with RedisPipeline(server.url, queue, capacity=40) as pipe:
            assert await pipe.submit_many(jobs) == 500
    report = pipe.report
    assert (report.submitted, report.succeeded, report.lost, report.still_open) == (
        500, 500, 0, 0)
    ids = [r.job_id for r in pipe.results]
    assert sorted(ids) == list(range(500))  # each job exactly one final status
    for result in pipe.results:
        if result.job_id in expected:
            assert result.value == expected[result.job_id]
    for worker in workers:
        assert worker.stop() == 0, worker.stderr
    assert sum(w.count("succeeded") for w in workers) == 500
    merged = await merged_trace(server.url, queue)
    assert merged.slots == 4 and len(merged.processes) == 3  # the producer and two workers
    assert_each_job_ended_once(merged.trace, accepted=range(500))
    assert 1 <= peak_concurrency(merged.trace) <= merged.slots


# -- 2. kill -9 a worker mid-job ----------------------------------------------------------


async def test_a_killed_worker_s_jobs_are_reclaimed_by_the_other(
    server: RedisServer, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    victim = Worker(server.url, queue, tmp_path, workers=2, visibility=1.0)
    workers.append(victim)
    async with asyncio.timeout(60):
        # Let the victim settle first: with nothing to write, its flusher sleeps - a job's
        # STARTED must wake it (it once waited for a final, so a job running when its
        # worker died never showed up in the trace).
        await asyncio.sleep(0.5)
        async with RedisPipeline(server.url, queue, capacity=10) as pipe:
            handles = [await pipe.submit(Job(i, b"", Call(fns.nap, 0.5, str(marks), str(i))))
                       for i in range(6)]
            taken = await _markers(marks, 2, victim.pid)  # both its slots are busy
            # Mid-job: its events (written every 50 ms at most) show the jobs started, so
            # that the merged trace can show them moving. Then kill -9: no drain, no
            # give-back, no final.
            await asyncio.sleep(0.2)
            victim.process.kill()
            await asyncio.to_thread(victim.process.wait)
            survivor = Worker(server.url, queue, tmp_path, workers=2, visibility=1.0)
            workers.append(survivor)
            values = [await handle for handle in handles]
    report = pipe.report
    assert (report.succeeded, report.lost, report.duplicates) == (6, 0, 0)
    assert report.redeliveries >= 2  # at least the victim's two running jobs
    # The jobs the victim had started were finished by the survivor.
    for marker in taken:
        job_id = int(marker.name.partition("-")[2])
        assert values[job_id] == survivor.pid
    assert survivor.stop() == 0, survivor.stderr
    assert survivor.count("reclaimed (redelivered)") >= 2
    merged = await merged_trace(server.url, queue)
    assert_each_job_ended_once(merged.trace, accepted=range(6))
    # The trace shows each taken job moving: started by the victim (its STARTED was written
    # while the job ran - a worker that waited for a final to flush its events lost them
    # with its process), then started again by the survivor.
    for marker in taken:
        job_id = int(marker.name.partition("-")[2])
        starters = {merged.workers[e.worker][0] for e in merged.trace.for_job(job_id)
                    if e.kind is EventKind.STARTED and e.worker is not None}
        assert len(starters) == 2, (job_id, starters, merged.trace.for_job(job_id))
    # The victim's slots count as busy until its jobs start elsewhere (nobody can tell a
    # dead worker from a slow one before the visibility timeout): at most all 4 slots.
    assert peak_concurrency(merged.trace) <= merged.slots == 4


# -- 2b. a stalled worker: the job runs twice, its status is recorded once -----------------


async def test_a_stalled_worker_s_late_final_counts_as_a_duplicate_not_a_status(
    server: RedisServer, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    stalled = Worker(server.url, queue, tmp_path, workers=1, visibility=1.0)
    workers.append(stalled)
    async with asyncio.timeout(60):
        async with RedisPipeline(server.url, queue) as pipe:
            handle = await pipe.submit(Call(fns.nap, 1.5, str(marks), "once"))
            await _markers(marks, 1, stalled.pid)
            await asyncio.sleep(0.2)  # its STARTED event is written
            # A frozen VM, a stopped process: no heartbeat, so after the visibility timeout
            # the other worker takes the job over - at least once, the job runs twice.
            stalled.process.send_signal(signal.SIGSTOP)
            other = Worker(server.url, queue, tmp_path, workers=1, visibility=1.0)
            workers.append(other)
            assert await handle == other.pid
            stalled.process.send_signal(signal.SIGCONT)
            # It wakes up, its job ends (its sleep is over), and its final finds the job
            # ended: a duplicate delivery, never a second status.
            assert await asyncio.to_thread(stalled.stop) == 0, stalled.stderr
    report = pipe.report
    assert (report.succeeded, report.duplicates, report.duplicate_finals, report.lost) == (
        1, 0, 1, 0)
    assert (stalled.count("duplicate finals"), stalled.count("succeeded")) == (1, 0)
    assert other.stop() == 0 and other.count("succeeded") == 1
    assert len(list(marks.iterdir())) == 2  # the work ran twice
    merged = await merged_trace(server.url, queue)
    assert_each_job_ended_once(merged.trace, accepted=[handle.job_id])


# -- 3. a job longer than the visibility timeout ------------------------------------------


async def test_a_long_job_is_not_taken_from_a_live_worker(
    server: RedisServer, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # Two workers, a visibility timeout of 1 s, a job of 2.5 s: without the heartbeat the
    # other worker would take it over (and run it again) twice.
    workers += [Worker(server.url, queue, tmp_path, workers=1, visibility=1.0)
                for _ in range(2)]
    async with asyncio.timeout(30):
        async with RedisPipeline(server.url, queue) as pipe:
            handle = await pipe.submit(Call(fns.nap, 2.5, str(marks), "long"))
            await handle
    assert len(list(marks.iterdir())) == 1  # started once
    report = pipe.report
    assert (report.succeeded, report.redeliveries, report.duplicate_finals) == (1, 0, 0)
    for worker in workers:
        assert worker.stop() == 0
    assert sum(w.count("reclaimed (redelivered)") for w in workers) == 0


# -- 4. SIGTERM: drain, give back, exit 0 -------------------------------------------------


async def test_sigterm_drains_what_it_can_and_gives_back_the_rest(
    server: RedisServer, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    first = Worker(server.url, queue, tmp_path, workers=2, visibility=30.0, drain=1.0)
    workers.append(first)
    async with asyncio.timeout(60):
        async with RedisPipeline(server.url, queue) as pipe:
            short = await pipe.submit(Call(fns.nap, 0.3, str(marks), "short"))
            long = await pipe.submit(Call(fns.nap, 2.0, str(marks), "long"))
            await _markers(marks, 2, first.pid)
            # A visibility timeout of 30 s: the long job moves within the drill's time only
            # because it is given back, not because it looks idle.
            second = Worker(server.url, queue, tmp_path, workers=2, visibility=30.0)
            workers.append(second)
            code = await asyncio.to_thread(first.stop, signal.SIGTERM)
            assert code == 0, first.stderr
            assert await short == first.pid  # finished within the drain
            assert await long == second.pid  # given back, and picked up elsewhere
    assert (first.count("succeeded"), first.count("given back")) == (1, 1)
    assert "gave back 1 job(s)" in first.stderr
    report = pipe.report
    assert (report.succeeded, report.lost) == (2, 0)
    assert second.stop() == 0


# -- 5. the server restarts mid-run -------------------------------------------------------


async def test_a_server_restart_mid_run_loses_nothing(
    redis_server_installed: str, tmp_path: Path, workers: list[Worker]
) -> None:
    with RedisServer() as restarting:
        workers += [Worker(restarting.url, "restart", tmp_path, workers=3, visibility=1.5)
                    for _ in range(2)]
        async with asyncio.timeout(90):
            async with RedisPipeline(restarting.url, "restart", capacity=20) as pipe:
                results = pipe.as_completed(maxsize=300)

                async def restart_when_half_done() -> None:
                    seen = 0
                    async for _result in results:
                        seen += 1
                        if seen == 50:
                            # SIGTERM (the AOF is flushed), then start on the same port:
                            # everything acknowledged so far survives.
                            await asyncio.to_thread(restarting.restart)
                            results.close()

                restarter = asyncio.create_task(restart_when_half_done())
                await pipe.submit_many(Job(i, b"", Call(fns.nap, 0.02)) for i in range(150))
                await restarter
        report = pipe.report
        assert (report.submitted, report.lost, report.still_open) == (150, 0, 0)
        assert report.succeeded == 150
        assert sorted(r.job_id for r in pipe.results) == list(range(150))
        for worker in workers:
            assert worker.stop() == 0, worker.stderr


# -- 6. bad input ---------------------------------------------------------------------------


async def test_an_unreachable_server_is_a_clear_error_within_seconds(
    tmp_path: Path, workers: list[Worker]
) -> None:
    url = "redis://:hunter2@127.0.0.1:1/0"  # nobody listens on port 1
    started = time.monotonic()
    async with asyncio.timeout(15):
        with pytest.raises(BrokerUnavailableError, match="could not reach the Redis server"
                           ) as caught:
            async with RedisPipeline(url, "q", connect_timeout=2.0):
                pass
    assert "hunter2" not in str(caught.value) and ":***@" in str(caught.value)
    worker = Worker(url, "q", tmp_path)
    workers.append(worker)
    assert await asyncio.to_thread(worker.process.wait, 20) == 6
    assert "could not reach the Redis server" in worker.stderr
    assert "hunter2" not in worker.stderr + worker.stdout
    assert time.monotonic() - started < 30  # no hang (a generous bound, not a timing claim)


async def test_a_wrong_password_is_a_clear_error_and_never_shown(
    redis_server_installed: str, tmp_path: Path, workers: list[Worker]
) -> None:
    with RedisServer(password="right-one") as guarded:
        wrong = guarded.url.replace("right-one", "wrong-one")
        async with asyncio.timeout(15):
            with pytest.raises(BrokerAuthError, match="refused the password") as caught:
                async with RedisPipeline(wrong, "q"):
                    pass
        assert "wrong-one" not in str(caught.value)
        worker = Worker(wrong, "q", tmp_path)
        workers.append(worker)
        assert await asyncio.to_thread(worker.process.wait, 20) == 6
        assert "refused the password" in worker.stderr
        assert "wrong-one" not in worker.stderr + worker.stdout


async def test_bad_entries_are_dead_lettered_and_the_worker_goes_on(
    server: RedisServer, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    aioredis = pytest.importorskip("redis.asyncio")
    workers.append(Worker(server.url, queue, tmp_path, workers=2))
    keys = QueueKeys(queue)
    async with asyncio.timeout(60):
        async with RedisPipeline(server.url, queue) as pipe:
            # A function the worker does not import: tests.workfns is not --import'ed.
            outside = await pipe.submit(Call(workfns.napping, 0.01))
            with pytest.raises(JobDeadLetteredError, match="not one this worker imports"):
                await outside
            failing = await pipe.submit(Call(fns.always_fails, "no luck"))
            with pytest.raises(JobDeadLetteredError, match="no luck"):
                await failing
            not_json = await pipe.submit(Call(fns.not_json))
            with pytest.raises(JobDeadLetteredError, match="must be JSON"):
                await not_json
            # Entries written by hand: garbage, a foreign shape, an oversized one.
            async with aioredis.from_url(server.url) as client:
                await client.xadd(keys.jobs, {"j": b"\xff not json"})
                await client.xadd(keys.jobs, {"who": "me"})
                await client.xadd(keys.jobs, {"j": b"x" * (2 << 20)})
                await client.xadd(keys.jobs, {"j": b'{"v":1,"id":5,"t":"call",'
                                                   b'"fn":"os:system","a":["true"]}'})
            # An oversized job is refused at submit: nothing is sent.
            with pytest.raises(EntryTooLargeError, match="over the limit"):
                await pipe.submit(Job(99, b"x" * (1 << 20), Delayed(0)))
            # ... and the worker is alive and well.
            assert await (await pipe.submit(Call(fns.add, 2, 3))) == 5
    report = pipe.report
    assert (report.submitted, report.succeeded, report.dead_lettered, report.lost) == (
        4, 1, 3, 0)
    assert len(pipe.dead_letters.errors()[failing.job_id]) == 4  # every attempt's error
    async with asyncio.timeout(20):
        # Polling the server: the dead letters of hand-written entries reach no producer.
        while len(letters := await read_dead_letters(server.url, queue)) < 7:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    errors = [letter["err"] for letter in letters]
    assert sum("the entry is not JSON" in e for e in errors) == 1
    assert sum("no 'j' field" in e for e in errors) == 1
    assert sum("over the limit" in e for e in errors) == 1
    assert sum("module 'os' is not one this worker imports" in e for e in errors) == 1
    assert workers[0].process.poll() is None  # survived all of it
    assert workers[0].stop() == 0
    assert workers[0].count("dead-lettered") == 7
