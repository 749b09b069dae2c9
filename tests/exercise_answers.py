"""Deliberately wrong answers to the series' exercises, for tests/test_exercises.py.

Each entry puts `source` in place of one solution cell's answer (the lines from
`### BEGIN SOLUTION` to `### END SOLUTION`), runs the notebook's student copy up to that
exercise's check cell, and expects the check to fail with an AssertionError whose message
contains every text in `shows` - the actual values the learner needs to see, not only what
was wanted. A wrong answer here is a mistake a learner makes: off by one, a missing cap, a
stage that is never checked, a consumer that never runs a job.

`exercise` names the exercise by a name its solution defines at top level
("retry_with_backoff"), so entries survive cells being added above it. The answers of one
notebook share one kernel: its student copy runs from the top, and at each exercise with
entries here every wrong answer runs (its solution cell, then the check), then the stub as in
the copy, so each answer meets the state a learner has there. A notebook with entries costs
one more run of it up to its last such exercise.

To add one: write the mistake, run
`pytest tests/test_exercises.py -k "wrong and NN-name" -s` with `shows=()` to read the
check's message, then pin the part of it that shows the actual values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WrongAnswer:
    notebook: str  # file name in notebooks/, e.g. "06-retries-and-dead-letters.ipynb"
    exercise: str  # a name the solution cell defines at top level
    mistake: str  # short id for the test name: "no-cap"
    source: str  # replaces the BEGIN..END SOLUTION lines of that cell
    shows: tuple[str, ...]  # texts the check's AssertionError message must contain

    @property
    def id(self) -> str:
        return f"{self.notebook[:2]}-{self.exercise}-{self.mistake}"


# The notebooks whose exercises have the learner write a mechanism (issue 13, item 4), and how
# many of their exercises need at least one wrong answer here.
MECHANISMS: dict[str, int] = {
    "01": 1,  # the collector (or the dispatcher)
    "04": 2,  # the cancellation token and the staged worker
    "06": 1,  # retry_with_backoff(attempt, policy)
}

BASIC = "01-basic-pipeline.ipynb"
SHUTDOWN = "04-graceful-shutdown.ipynb"
RETRIES = "06-retries-and-dead-letters.ipynb"

WRONG_ANSWERS: list[WrongAnswer] = [
    # -- 01: the collector ---------------------------------------------------------------
    WrongAnswer(BASIC, "collect", "counts-results-not-jobs", """\
async def collect(results: asyncio.Queue, expected: int) -> dict[str, list[int]]:
    books: dict[str, list[int]] = {}
    for _ in range(expected):  # counts results, not jobs: a job reported twice counts twice
        job_id, status = await results.get()
        books.setdefault(status, []).append(job_id)
    return books
""", ("collect() returned {'failed': [2, 6], 'succeeded': [2, 1, 3, 4]} at t=1.9 s",)),
    WrongAnswer(BASIC, "collect", "waits-for-a-sentinel", """\
async def collect(results: asyncio.Queue, expected: int) -> dict[str, list[int]]:
    books: dict[str, list[int]] = {}
    while (item := await results.get()) is not None:  # no None ever comes: waits forever
        job_id, status = item
        books.setdefault(status, []).append(job_id)
    return books
""", ("had not returned at t=60 virtual s",)),
    # -- 01: the other exercises ------------------------------------------------------------
    WrongAnswer(BASIC, "run_three_workers", "two-workers", """\
async def run_three_workers() -> collections.Counter:
    return await main(JOBS, workers=2)
""", ("got 2 jobs running at once at the peak",)),
    # -- 04: the cancellation token -------------------------------------------------------
    WrongAnswer(SHUTDOWN, "Token", "cancel-stays-at-this-token", """\
class Token:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._children: list[Token] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def child(self) -> "Token":
        token = Token()
        self._children.append(token)
        return token

    def cancel(self) -> None:
        self._event.set()  # forgets the children

    async def wait_cancelled(self) -> None:
        await self._event.wait()
""", ("got noticed at t={'worker-1': 1.0, 'root': 2.0};",)),
    WrongAnswer(SHUTDOWN, "Token", "polls-every-second", """\
class Token:
    def __init__(self, parent: "Token | None" = None) -> None:
        self._parent = parent
        self._set = False

    @property
    def cancelled(self) -> bool:
        return self._set or (self._parent is not None and self._parent.cancelled)

    def child(self) -> "Token":
        return Token(self)

    def cancel(self) -> None:
        self._set = True

    async def wait_cancelled(self) -> None:
        while not self.cancelled:
            await asyncio.sleep(1.0)  # polling: notices up to a second late
""", ("'worker-0': 2.0, 'root': 3.0, 'dispatcher': 3.0",)),
    # -- 04: the staged worker ------------------------------------------------------------
    WrongAnswer(SHUTDOWN, "staged_worker", "no-check-before-a-stage", """\
STAGES = {"fetch": 1.0, "compute": 2.0, "store": 0.5}


async def staged_worker(token: Token) -> str:
    loop = asyncio.get_running_loop()
    for stage, seconds in STAGES.items():
        work = asyncio.ensure_future(asyncio.sleep(seconds))
        stop = asyncio.ensure_future(token.wait_cancelled())
        done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        work.cancel()
        stop.cancel()
        if work not in done:
            return f"cut during {stage} at t={loop.time():.1f}"
    return f"done at t={loop.time():.1f}"
""", ("got 'cut during fetch at t=0.0'",)),
    WrongAnswer(SHUTDOWN, "staged_worker", "checks-but-never-races", """\
STAGES = {"fetch": 1.0, "compute": 2.0, "store": 0.5}


async def staged_worker(token: Token) -> str:
    loop = asyncio.get_running_loop()
    for stage, seconds in STAGES.items():
        if token.cancelled:
            return f"cut before {stage} at t={loop.time():.1f}"
        await asyncio.sleep(seconds)  # a stage runs to its end, cancelled or not
    return f"done at t={loop.time():.1f}"
""", ("root cancelled at t=0.5: got 'cut before compute at t=1.0'",)),
    # -- 04: the other exercises ----------------------------------------------------------
    WrongAnswer(SHUTDOWN, "reordered_consumer", "job-before-slot", """\
async def reordered_consumer(queue: asyncio.Queue[int], slot: asyncio.Semaphore,
                             start: Callable[[int], None]) -> None:
    while True:
        job_id = await queue.get()  # Step 3's order: the job leaves the queue first
        await slot.acquire()  # cancelled here, it holds a job nobody will run
        start(job_id)
""", ("still queued=[5], lost=[4]",)),
    WrongAnswer(SHUTDOWN, "interrupted_sleep", "no-timer", """\
async def interrupted_sleep() -> float:
    token = CancellationToken("worker")
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TokenCancelled):  # nothing ever cancels the token
        await token.race(asyncio.sleep(10))
    return loop.time()
""", ("got the race ending at t=10.0",)),
    WrongAnswer(SHUTDOWN, "stop_now", "drains-instead", """\
async def stop_now() -> tuple[Pipeline, ShutdownReport]:
    pipe = Pipeline(workers=2, capacity=10, executor="inline")
    async with pipe:
        await pipe.submit_many(Job(i, b"", Delayed(1.0)) for i in range(1, 7))
        await asyncio.sleep(0.5)
        report = await pipe.shutdown()  # a drain: the root token is never cancelled
    return pipe, report
""", ("got succeeded=6, interrupted=0, never-started=0",)),
    # -- 06: the retry loop ---------------------------------------------------------------
    WrongAnswer(RETRIES, "retry_with_backoff", "one-attempt-too-many", """\
async def retry_with_backoff(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    number = 1
    while True:
        try:
            return await attempt()
        except Exception:
            if number > policy.max_attempts:  # > instead of >=
                raise
            await asyncio.sleep(policy.delay(number))
            number += 1
""", ("got gaps=[0.5, 1.0, 2.0, 4.0]", "attempt 5 failed")),
    WrongAnswer(RETRIES, "retry_with_backoff", "pauses-before-the-first-attempt", """\
async def retry_with_backoff(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    for number in range(1, policy.max_attempts + 1):
        await asyncio.sleep(policy.delay(number))  # a pause before every attempt
        try:
            return await attempt()
        except Exception:
            if number == policy.max_attempts:
                raise
    raise AssertionError("unreachable")
""", ("got the first attempt at t=0.5",)),
    WrongAnswer(RETRIES, "retry_with_backoff", "same-pause-every-time", """\
async def retry_with_backoff(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    number = 1
    while True:
        try:
            return await attempt()
        except Exception:
            if number >= policy.max_attempts:
                raise
            await asyncio.sleep(policy.base_delay)  # no backoff: the first pause, always
            number += 1
""", ("got gaps=[0.5, 0.5]",)),
    WrongAnswer(RETRIES, "replay_one", "replays-every-dead-letter", """\
async def replay_one() -> tuple[Pipeline, list[int], list[int]]:
    plan = FailurePlan(fail_first={1: 4, 2: 8, 3: 8})
    async with Pipeline(workers=3, executor="inline", retry=policy, failures=plan) as pipe:
        await pipe.submit_many([Job(i, b"", Delayed(1.0)) for i in range(4)])
        await pipe.wait_drained()
        dead_before = sorted(pipe.dead_letters.ids())
        replayed = await pipe.replay(dead_before)  # all of them, fixed or not
        await pipe.wait_drained()
    return pipe, dead_before, replayed
""", ("replayed [1, 2, 3]",)),
    WrongAnswer(RETRIES, "mine", "forgot-the-cap", """\
mine = [1.0, 3.0, 9.0, 27.0, 81.0, 243.0]
gives_up_at = sum(mine)
""", ("got mine=[1.0, 3.0, 9.0, 27.0, 81.0, 243.0]",
     "measured pauses [1.0, 3.0, 9.0, 27.0, 30.0, 30.0]")),
]
