"""jobq.wire (jobs and results as JSON, functions by import path - never pickle), the key
names and URL handling of jobq.broker, and the merge of the events stream - all without a
server. The drills against a real redis-server are in test_redis_drills.py."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

import jobq
from jobq import (
    AsyncIo,
    Attempt,
    Blocking,
    BrokerAuthError,
    BrokerError,
    BrokerUnavailableError,
    Call,
    CpuBound,
    Delayed,
    EntryTooLargeError,
    EventKind,
    FetchResult,
    InvalidConfigError,
    InvalidJobError,
    Job,
    JobResult,
    MergedTrace,
    RedisPipeline,
    RedisShutdownReport,
    RedisWorker,
    ResultStatus,
    WireError,
    WorkerReport,
)
from jobq.broker import RAN, Broker, QueueKeys, redact_url
from jobq.redis_producer import _merge
from jobq.testing import assert_each_job_ended_once, peak_concurrency
from jobq.wire import (
    decode_job,
    decode_result,
    encode_job,
    encode_result,
    encode_success,
    function_path,
    resolve_function,
)

from . import redis_workfns as fns

MODULES = ("tests.redis_workfns",)


def _round_trip(job: Job) -> Job:
    data = encode_job(job, producer="p1", submitted_at=1.5)
    wire = decode_job(data, modules=MODULES)
    assert (wire.producer, wire.submitted_at) == ("p1", 1.5)
    return wire.job


# -- jobs -----------------------------------------------------------------------------------


def test_every_job_type_round_trips_as_json() -> None:
    jobs = [
        Job(1, b"\x00\xffbytes", CpuBound(1000)),
        Job(2, b"", Delayed(0.25), timeout=3.0),
        Job(3, b"", AsyncIo("http://ann:secret@127.0.0.1:8080/x")),
        Job(4, b"", Call(fns.add, 1, b=2)),
        Job(5, b"p", Blocking(fns.square, 7)),
    ]
    for job in jobs:
        back = _round_trip(job)
        assert (back.id, back.payload, back.timeout, back.kind) == (
            job.id, job.payload, job.timeout, job.kind)
        assert type(back.job_type) is type(job.job_type)
    call = _round_trip(jobs[3]).job_type
    assert isinstance(call, Call) and call.fn is fns.add
    assert (call.args, call.kwargs) == ((1,), {"b": 2})
    # Plain JSON on the wire: readable with redis-cli, by any language - and never pickle.
    record = json.loads(encode_job(jobs[4], producer="p1", submitted_at=1.5))
    assert record["fn"] == "tests.redis_workfns:square" and record["a"] == [7]


def test_what_cannot_travel_is_refused_at_submit_naming_it() -> None:
    with pytest.raises(InvalidJobError, match="must be JSON"):
        encode_job(Job(1, b"", Call(fns.add, {1, 2}, 3)), producer="p", submitted_at=0.0)
    with pytest.raises(InvalidJobError, match="must be JSON"):
        encode_job(Job(1, b"", Call(fns.add, math.nan, 3)), producer="p", submitted_at=0.0)

    async def local() -> None:
        pass

    with pytest.raises(InvalidJobError, match="nested function"):
        function_path(local)
    with pytest.raises(InvalidJobError, match="lambda"):
        function_path(lambda: None)
    main_function = type(local)(local.__code__, {"__name__": "__main__"}, "script_fn")
    main_function.__module__ = "__main__"
    main_function.__qualname__ = "script_fn"
    with pytest.raises(InvalidJobError, match="defined in __main__"):
        function_path(main_function)
    big = Job(9, b"x" * 2000, Delayed(0))
    with pytest.raises(EntryTooLargeError, match="over the limit of 1,000 bytes"):
        encode_job(big, producer="p", submitted_at=0.0, limit=1000)
    assert issubclass(EntryTooLargeError, InvalidJobError)


@pytest.mark.parametrize(("data", "reason"), [
    (None, "no 'j' field"),
    (b"\xff\xfe", "not JSON"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON list, not an object"),
    (b'{"v": 2, "id": 1}', "format version 2"),
    (b'{"v": 1, "id": "7", "t": "cpu", "n": 1}', "'id' must be int"),
    (b'{"v": 1, "id": true, "t": "cpu", "n": 1}', "'id' must be int"),
    (b'{"v": 1, "id": 1, "t": "nuke"}', "unknown job type 'nuke'"),
    (b'{"v": 1, "id": 1, "t": "cpu", "n": -5}', "CpuBound.iterations must be >= 0"),
    (b'{"v": 1, "id": 1, "t": "delay", "s": "soon"}', "'s' must be int or float"),
    (b'{"v": 1, "id": 1, "t": "io", "url": "file:///etc/passwd"}', "http or https"),
    (b'{"v": 1, "id": 1, "at": Infinity, "t": "cpu", "n": 1}', "finite number"),
    (b'{"v": 1, "id": 1, "t": "cpu", "n": 1, "p": "***"}', "not valid base64"),
    (b'{"v": 1, "id": 1, "t": "call", "fn": "os:system", "a": ["id"]}',
     "module 'os' is not one this worker imports"),
    (b'{"v": 1, "id": 1, "t": "call", "fn": "subprocess:run"}', "not one this worker"),
    (b'{"v": 1, "id": 1, "t": "call", "fn": "tests.redis_workfns:nothing"}',
     "has no function 'nothing'"),
    (b'{"v": 1, "id": 1, "t": "call", "fn": "tests.redis_workfns:Path"}',
     "not a function defined in module"),  # imported into the module, not defined there
    (b'{"v": 1, "id": 1, "t": "call", "fn": "tests.redis_workfns:square"}',
     "must be an async function"),
    (b'{"v": 1, "id": 1, "t": "blocking", "fn": "tests.redis_workfns:add", "a": 3}',
     "'a' must be a list"),
])
def test_a_bad_entry_is_a_wire_error_that_says_why(data: bytes | None, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode_job(data, modules=MODULES)


def test_an_oversized_entry_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(WireError, match="over the limit of 100"):
        decode_job(b"{" + b" " * 200 + b"}", modules=MODULES, limit=100)


def test_functions_resolve_only_from_the_imported_modules() -> None:
    assert resolve_function("tests.redis_workfns:add", MODULES) is fns.add
    with pytest.raises(WireError, match="not one this worker imports"):
        resolve_function("tests.workfns:power", MODULES)
    with pytest.raises(WireError, match="is not MODULE:FUNCTION"):
        resolve_function("tests.redis_workfns", MODULES)


# -- results --------------------------------------------------------------------------------


def test_results_round_trip_with_their_attempts_and_values() -> None:
    job = Job(3, b"", Call(fns.add, 1, 2))
    fast = encode_success(job, worker="host:1:a/0", attempts=1, submitted_at=1.0,
                          started_at=2.0, finished_at=2.5, value={"sum": [3]})
    result, attempts, worker = decode_result(fast)
    assert (result.job_id, result.status, result.kind, result.value) == (
        3, ResultStatus.SUCCEEDED, "add", {"sum": [3]})
    assert (result.duration, result.latency, attempts, worker) == (0.5, 1.5, (), "host:1:a/0")
    # A dead letter carries every attempt's error, and the job as it was read.
    tries = [Attempt(1, 2.0, 2.1, "ValueError: no", "ValueError"),
             Attempt(2, 2.2, 2.3, "ValueError: still no", "ValueError")]
    dead = JobResult(4, 0.3, ResultStatus.DEAD_LETTERED, kind="add", attempts=2,
                     submitted_at=1.0, started_at=2.0, finished_at=2.3, error=tries[-1].error)
    record = encode_result(dead, tries, worker="w/1", job_text='{"id":4}', entry="1-0")
    result, attempts, _ = decode_result(record)
    assert result.status is ResultStatus.DEAD_LETTERED and attempts == tuple(tries)
    assert json.loads(record)["job"] == '{"id":4}'
    # An AsyncIo job's FetchResult comes back as one (body included, password not).
    fetched = FetchResult(200, 2, "http://ann:pw@h/x", {"a": "b"}, b"ok")
    io = encode_success(Job(5, b"", AsyncIo("http://h/x")), worker="w/0", attempts=1,
                        submitted_at=1.0, started_at=1.0, finished_at=1.0, value=fetched)
    value = decode_result(io)[0].value
    assert isinstance(value, FetchResult) and value.body == b"ok" and "pw" not in value.url
    with pytest.raises(InvalidJobError, match="must be JSON"):
        encode_success(job, worker="w/0", attempts=1, submitted_at=1.0, started_at=1.0,
                       finished_at=1.0, value=object())
    with pytest.raises(WireError, match="malformed"):
        decode_result(b'{"s": "exploded"}')


# -- keys, URLs, configuration ------------------------------------------------------------------


def test_a_queue_s_keys_share_one_hash_tag() -> None:
    keys = QueueKeys("emails")
    names = [keys.jobs, keys.stats, keys.dead, keys.events, keys.results("p1")]
    assert names[0] == "jobq:{emails}:jobs"
    assert all(name.startswith("jobq:{emails}:") for name in names)
    for bad in ("", "a b", "x{y}", 7):
        with pytest.raises(InvalidConfigError, match="queue name"):
            QueueKeys(bad)  # type: ignore[arg-type]


def test_a_password_never_shows() -> None:
    url = "redis://:s3cret@127.0.0.1:6379/0"
    assert redact_url(url) == "redis://:***@127.0.0.1:6379/0"
    broker = Broker(url, "q")
    assert "s3cret" not in repr(broker) and broker.shown_url == redact_url(url)
    assert broker.scrub("auth s3cret failed") == "auth *** failed"
    refused = broker.translate(broker._rx.AuthenticationError("invalid password"))
    unreachable = broker.translate(broker._rx.ConnectionError("Error 111 connecting"))
    assert isinstance(refused, BrokerAuthError) and isinstance(unreachable,
                                                               BrokerUnavailableError)
    assert isinstance(refused, BrokerError) and isinstance(refused, jobq.JobqError)
    assert "s3cret" not in f"{refused} {unreachable}"
    with pytest.raises(InvalidConfigError, match="must start with redis://"):
        Broker("http://:s3cret@host/", "q")


def test_settings_are_checked_before_anything_connects() -> None:
    with pytest.raises(InvalidConfigError, match=r"RedisPipeline\.capacity"):
        RedisPipeline("redis://127.0.0.1/0", "q", capacity=0)
    with pytest.raises(InvalidConfigError, match=r"RedisWorker\.visibility_timeout"):
        RedisWorker("redis://127.0.0.1/0", "q", visibility_timeout=0)
    worker = RedisWorker("redis://127.0.0.1/0", "q", workers=3, executor="inline")
    assert repr(worker) == "<RedisWorker running slots=3 running=0>"


def test_reports_read_as_tables() -> None:
    report = RedisShutdownReport(submitted=5, succeeded=4, dead_lettered=1, still_open=0,
                                 lost=0, duplicates=0, failed_attempts=4, redeliveries=2,
                                 duplicate_finals=0, drained=True)
    assert report.ended == 5
    assert str(report).splitlines()[4] == "lost                             0"
    worker = WorkerReport(process="h:1:a", slots=2, read=5, reclaimed=1, succeeded=5,
                          dead_lettered=1, failed_attempts=4, given_back=0, duplicates=0,
                          drained=True)
    assert str(worker).splitlines()[1] == "reclaimed (redelivered)         1"


# -- the merged trace -----------------------------------------------------------------------


def _batch(slots: int, *events: tuple[Any, ...]) -> dict[str, Any]:
    return {"slots": slots, "ev": [list(e) for e in events]}


def test_the_merged_trace_is_one_pool_of_every_process_s_slots() -> None:
    t = time.time()
    started, succeeded = EventKind.STARTED.value, EventKind.SUCCEEDED.value
    batches = [
        ("producer", _batch(0, (0, t, EventKind.ENQUEUED.value, 1, None, None, "add", 1),
                            (1, t, EventKind.ENQUEUED.value, 2, None, None, "add", 2))),
        # Worker A runs job 1 (one "ran" event), starts job 2 - and dies.
        ("A", _batch(2, (0, t + 1, RAN, 1, 0, 1, "add", t + 2),
                     (1, t + 1.5, started, 2, 1, 1, "add", None))),
        # Worker B takes job 2 over, and a duplicate delivery of job 1 ends there too.
        ("B", _batch(1, (0, t + 3, started, 2, 0, 1, "add", None),
                     (1, t + 4, succeeded, 2, 0, 1, None, None),
                     (2, t + 4.5, started, 1, 0, 1, "add", None),
                     (3, t + 5, succeeded, 1, 0, 1, None, None))),
    ]
    merged = _merge(batches)
    assert isinstance(merged, MergedTrace)
    assert merged.slots == 3 and merged.workers[2] == ("B", 0)
    assert merged.processes == ("producer", "A", "B")
    trace = merged.trace
    assert trace.header is not None and trace.header.workers == 3
    assert [e.t for e in trace.events] == sorted(e.t for e in trace.events)
    assert trace.events[0].t == 0.0
    # A's unfinished attempt of job 2 ends where B starts it; job 1's second final is not.
    closed = [e for e in trace.events if e.kind is EventKind.ATTEMPT_FAILED]
    assert [(e.job, e.worker) for e in closed] == [(2, 1), (1, 2)]
    assert closed[0].info is not None and "redelivered" in closed[0].info
    assert_each_job_ended_once(trace, accepted=[1, 2])
    assert peak_concurrency(trace) == 2


# -- every setting of the producer and the worker is checked when it is built ---------------

_URL = "redis://:s3cret@127.0.0.1:1/0"


@pytest.mark.parametrize(("options", "named"), [
    ({"queue": ""}, "queue name"),
    ({"queue": "a{b}"}, "queue name"),  # braces would break the hash tag
    ({"queue": 3}, "queue name"),
    ({"url": "http://x"}, "Redis URL"),
    ({"url": 5}, "Redis URL"),
    ({"connect_timeout": True}, "connect_timeout"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"reconnect_timeout": -1}, "reconnect_timeout"),
    ({"capacity": "10"}, "capacity"),
    ({"keep_results": "no"}, "keep_results"),
    ({"events": 1}, "events"),
])
def test_a_bad_producer_setting_is_refused_by_name_at_once(options: dict[str, Any],
                                                          named: str) -> None:
    from jobq.redis_producer import RedisPipeline

    _assert_refused(RedisPipeline, options, named)


def _assert_refused(build: Callable[..., object], options: dict[str, Any], named: str) -> None:
    """Building with `options` (over a good URL with a password and queue "q") raises
    InvalidConfigError naming the setting - and never showing the password."""
    args = {"url": _URL, "queue": "q"} | options
    url, queue = args.pop("url"), args.pop("queue")
    with pytest.raises(jobq.InvalidConfigError, match=named) as refused:
        build(url, queue, **args)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(("options", "named"), [
    ({"queue": "has space"}, "queue name"),
    ({"imports": "mymodule"}, "imports"),  # a string, not a list: 'm', 'y', ...
    ({"imports": [3]}, "imports"),
    ({"workers": "4"}, "workers"),
    ({"visibility_timeout": 0}, "visibility_timeout"),
    ({"retry": 3}, "retry"),
    ({"name": 7}, "name"),
    ({"events": "yes"}, "events"),
    ({"reconnect_timeout": math.nan}, "reconnect_timeout"),
])
def test_a_bad_worker_setting_is_refused_by_name_at_once(options: dict[str, Any],
                                                        named: str) -> None:
    from jobq.redis_worker import RedisWorker

    _assert_refused(RedisWorker, options, named)
