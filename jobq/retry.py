"""Retries with exponential backoff, failures on purpose, and the dead-letter queue.

The problem: some failures are passing (a server answers 500 once), some are not (a job that
crashes its process every time). Retrying forever hides the second kind and hammers whoever
is failing; never retrying gives up on the first kind. So a job gets `max_retries` more
attempts, each after a longer pause (0.1 s, 0.2 s, 0.4 s, ... - *exponential backoff*, with
optional *jitter* so many failing jobs do not retry in lock-step), and a job that fails them
all goes to the `DeadLetterQueue`: kept with every attempt's error and timing, for a person
to inspect and, once the cause is fixed, replay.

`FailurePlan` makes jobs fail on purpose, repeatably (decided by job id and attempt number,
never by scheduling order), so a notebook can show retries without randomness.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from jobq import validation as check
from jobq.jobs import Job

__all__ = ["Attempt", "DeadLetter", "DeadLetterQueue", "FailurePlan", "RetryPolicy"]


def _seeded_uniform(seed: int, job_id: int, attempt: int, salt: str) -> float:
    """A number in [0, 1) that depends only on its arguments, not on call order."""
    return random.Random(f"{salt}:{seed}:{job_id}:{attempt}").random()


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a failing job is retried.

        RetryPolicy(max_retries=3, base_delay=0.1)   # waits 0.1, 0.2, 0.4 s, then dead letter

    The pause before retry n (n = 1, 2, ...) is `min(max_delay, base_delay * factor**(n-1))`,
    then shortened by up to `jitter` (a fraction, 0..1) using a generator seeded by `seed`,
    the job id and n - the same run gives the same pauses.
    """

    max_retries: int = 3
    base_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check.count("RetryPolicy.max_retries", self.max_retries, minimum=0)
        check.seconds("RetryPolicy.base_delay", self.base_delay)
        check.number("RetryPolicy.factor", self.factor, minimum=1)
        check.seconds("RetryPolicy.max_delay", self.max_delay)
        check.number("RetryPolicy.jitter", self.jitter, minimum=0, maximum=1)
        check.instance("RetryPolicy.seed", self.seed, int)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def delay(self, retry: int, job_id: int = 0) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry) of `job_id`."""
        pause = min(self.max_delay, self.base_delay * self.factor ** (retry - 1))
        if self.jitter:
            pause *= 1 - self.jitter * _seeded_uniform(self.seed, job_id, retry, "jitter")
        return pause


@dataclass(frozen=True, kw_only=True)
class FailurePlan:
    """Which attempts fail on purpose - for demos and tests, repeatable by construction.

        FailurePlan(fail_first={3: 2})          # job 3 fails twice, then succeeds
        FailurePlan(fail_rate=0.1, seed=1)      # each attempt fails with probability 0.1
        FailurePlan(crash={7})                  # job 7's worker process dies (CpuBound only)

    `fail_first` maps a job id to how many of its first attempts fail. `fail_rate` fails any
    attempt with that probability, decided from (seed, job id, attempt) alone. `crash` lists
    CpuBound job ids whose worker process exits mid-job on every attempt.
    """

    fail_first: Mapping[int, int] = field(default_factory=dict)
    fail_rate: float = 0.0
    seed: int = 0
    crash: frozenset[int] | set[int] = frozenset()

    def __post_init__(self) -> None:
        check.instance("FailurePlan.fail_first", self.fail_first, Mapping)
        for job_id, failures in self.fail_first.items():
            check.instance("FailurePlan.fail_first key", job_id, int)
            check.count(f"FailurePlan.fail_first[{job_id}]", failures, minimum=0)
        check.number("FailurePlan.fail_rate", self.fail_rate, minimum=0, maximum=1)
        check.instance("FailurePlan.seed", self.seed, int)
        check.instance("FailurePlan.crash", self.crash, set, frozenset)
        for job_id in self.crash:
            check.instance("FailurePlan.crash member", job_id, int)

    def fails(self, job_id: int, attempt: int) -> bool:
        """Should attempt number `attempt` (1-based) of `job_id` fail?"""
        if attempt <= self.fail_first.get(job_id, 0):
            return True
        return bool(self.fail_rate) and (
            _seeded_uniform(self.seed, job_id, attempt, "fail") < self.fail_rate
        )

    def crashes(self, job_id: int) -> bool:
        return job_id in self.crash


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a job: when it ran (loop time) and what went wrong, if anything."""

    number: int
    started_at: float
    ended_at: float
    error: str | None = None
    error_type: str | None = None

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that failed every attempt, with the whole story."""

    job: Job
    attempts: tuple[Attempt, ...]

    @property
    def last_error(self) -> str | None:
        return self.attempts[-1].error if self.attempts else None

    def __repr__(self) -> str:
        return (
            f"<DeadLetter job={self.job.id} kind={self.job.kind} attempts={len(self.attempts)} "
            f"last_error={self.last_error!r}>"
        )


class DeadLetterQueue:
    """Jobs that failed every attempt, in the order they gave up.

    Inspect it (`len`, iterate, `get(job_id)`, `errors()`), then take jobs out to replay
    them with `Pipeline.replay(...)`. A dead letter stays here until it is taken.
    """

    def __init__(self) -> None:
        self._letters: dict[int, DeadLetter] = {}

    def add(self, letter: DeadLetter) -> None:
        self._letters[letter.job.id] = letter

    def __len__(self) -> int:
        return len(self._letters)

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(list(self._letters.values()))

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._letters

    def get(self, job_id: int) -> DeadLetter:
        try:
            return self._letters[job_id]
        except KeyError:
            raise KeyError(f"job {job_id} is not in the dead-letter queue") from None

    def ids(self) -> list[int]:
        return list(self._letters)

    def errors(self) -> dict[int, list[str | None]]:
        """Every attempt's error, by job id - the first thing to read when jobs die."""
        return {jid: [a.error for a in dl.attempts] for jid, dl in self._letters.items()}

    def take(self, job_ids: Iterable[int] | None = None) -> list[DeadLetter]:
        """Remove and return these dead letters (all of them when `job_ids` is None)."""
        wanted = list(self._letters) if job_ids is None else list(job_ids)
        missing = [jid for jid in wanted if jid not in self._letters]
        if missing:
            raise KeyError(f"not in the dead-letter queue: {missing}")
        return [self._letters.pop(jid) for jid in wanted]

    def __repr__(self) -> str:
        return f"<DeadLetterQueue {len(self._letters)} jobs>"
