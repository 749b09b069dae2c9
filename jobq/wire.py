"""How jobs and results travel through Redis: JSON, and functions by import path.

The problem: a stream entry is bytes that anyone who can reach the server may have written.
`pickle` would turn those bytes into objects by running code they name - whoever can write
to the stream could run any code on every worker. So nothing read from the broker is ever
unpickled: a job is JSON, and a function is named by its import path, which the worker
looks up only in the modules it was told to import (`--import MODULE`):

    Job(7, b"hi", CpuBound(1000))          {"v":1,"id":7,"p":"aGk=","t":"cpu","n":1000}
    Job(8, b"", Delayed(0.5))              {"v":1,"id":8,"t":"delay","s":0.5}
    Job(9, b"", AsyncIo("http://h/x"))     {"v":1,"id":9,"t":"io","url":"http://h/x"}
    Job(10, b"", Call(fetch_user, 42))     {"v":1,"id":10,"t":"call","fn":"app.jobs:fetch_user",
                                            "a":[42]}
    Job(11, b"", Blocking(resize, "a.png", width=200))
                                           {... "t":"blocking","fn":"app.jobs:resize",
                                            "a":["a.png"],"k":{"width":200}}

Arguments, keyword arguments and return values must be JSON: str, int, float, bool, None,
lists and dicts with str keys (a tuple arrives as a list). Anything else is refused where
it is written - at submit, or as the job's result - with an error that names it.

Every entry is size-checked (`MAX_ENTRY_BYTES`, 1 MiB by default) on both sides: the
producer refuses an oversized job at submit; a worker that reads one (written by hand, or
by a producer with a larger limit) dead-letters it without decoding it. A malformed entry -
not JSON, an unknown type, a field of the wrong type, a function outside the imported
modules - raises `WireError` with the reason; the worker turns it into a dead letter and
goes on.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobq.errors import InvalidJobError, JobqError
from jobq.http import FetchResult, redact
from jobq.jobs import AsyncIo, Blocking, Call, CpuBound, Delayed, Job, JobResult, ResultStatus
from jobq.retry import Attempt

__all__ = [
    "MAX_ENTRY_BYTES",
    "EntryTooLargeError",
    "WireError",
    "WireJob",
    "decode_job",
    "decode_result",
    "encode_job",
    "encode_result",
    "encode_success",
    "function_path",
    "resolve_function",
]

# One entry - a job on its way to a worker, or a result on its way back - at most this many
# bytes of JSON. Redis takes entries of up to 512 MB, but a queue of big entries is a memory
# problem on the server and a latency problem for everyone sharing it: put big data
# somewhere else (a file, an object store) and send its name.
MAX_ENTRY_BYTES = 1 << 20

_VERSION = 1


class WireError(JobqError, ValueError):
    """An entry read from the broker cannot be a job (or a result): malformed JSON, an
    unknown type, a bad field, a function the worker does not run. The message says why;
    the worker dead-letters the entry with it."""


class EntryTooLargeError(InvalidJobError):
    """A job (or a result) encodes to more than the entry size limit."""


@dataclass(frozen=True, slots=True)
class WireJob:
    """A job as read from the stream, with what travelled beside it."""

    job: Job
    producer: str  # where its result goes (the producer's results stream), "" for none
    submitted_at: float  # wall-clock seconds (time.time()) of the producer


# -- functions by name --------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)  # a producer names the same few functions again and again
def function_path(fn: Callable[..., Any], what: str = "fn") -> str:
    """`module:qualname` of a top-level function a worker can import, or InvalidJobError.

    Refused: a lambda, a nested function, anything defined in `__main__` (a worker's
    `__main__` is `python -m jobq`, not your script or notebook), and an object whose name
    does not lead back to it (a functools.partial, a bound method)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise InvalidJobError(f"{what}: {type(fn).__name__} has no importable name; pass a "
                              "function defined at the top level of a module")
    if "<lambda>" in qualname or "<locals>" in qualname or "." in qualname:
        raise InvalidJobError(
            f"{what} {qualname!r} is a lambda, a nested function or a method: a worker finds "
            "a function by its module and name, so define it at the top level of a module")
    if module == "__main__":
        raise InvalidJobError(
            f"{what} {qualname!r} is defined in __main__ (your script, or a notebook cell): a "
            "worker cannot import it. Put it in a module and start the worker with "
            "--import THAT_MODULE")
    loaded = sys.modules.get(module)
    if loaded is None or getattr(loaded, qualname, None) is not fn:
        raise InvalidJobError(f"{what} {module}:{qualname} does not lead back to the function "
                              "given (replaced or wrapped?)")
    return f"{module}:{qualname}"


def resolve_function(path: str, modules: Iterable[str]) -> Callable[..., Any]:
    """The function `module:name` names - only from `modules`, the ones the worker was told
    to import. Anything else is a WireError: an entry must not be able to make a worker
    call `os:system` or `subprocess:run`."""
    return _resolve(path, tuple(sorted(modules)))


@functools.lru_cache(maxsize=1024)
def _resolve(path: str, modules: tuple[str, ...]) -> Callable[..., Any]:
    # Cached: a worker looks the same few functions up for every job. (A WireError is not
    # cached - lru_cache keeps only what returns - so a bad name costs its lookup each time.)
    module, colon, name = path.partition(":")
    allowed = set(modules)
    if not colon or not module or not name.isidentifier():
        raise WireError(f"fn {path!r} is not MODULE:FUNCTION")
    if module not in allowed:
        shown = ", ".join(sorted(allowed)) or "none"
        raise WireError(f"fn {path!r}: module {module!r} is not one this worker imports "
                        f"(--import: {shown})")
    try:
        loaded = importlib.import_module(module)  # imported at start-up: a dict lookup now
    except Exception as exc:  # a module that fails to import is the entry's problem here
        raise WireError(f"fn {path!r}: importing {module!r} failed: "
                        f"{type(exc).__name__}: {exc}") from None
    fn = getattr(loaded, name, None)
    if fn is None:
        raise WireError(f"fn {path!r}: module {module!r} has no function {name!r}")
    # Defined in that module, not imported into it: `app.jobs:system` after
    # `from os import system` in app/jobs.py must not reach os.system.
    if not callable(fn) or getattr(fn, "__module__", None) != module:
        raise WireError(f"fn {path!r} is not a function defined in module {module!r}")
    return fn  # type: ignore[no-any-return]


# -- JSON helpers -------------------------------------------------------------------------


# allow_nan=False: NaN and Infinity are not JSON, and other languages' parsers refuse them.
# Compact separators: every byte is stored and sent. One encoder for every call: json.dumps
# with options builds a new one each time, which costs as much as encoding a small job.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
_DECODER = json.JSONDecoder()


def _dumps(value: Any, what: str) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidJobError(f"{what} must be JSON (str, int, float, bool, None, lists and "
                              f"dicts with str keys): {exc}") from None


def _check_size(text: str, limit: int, what: str) -> bytes:
    data = text.encode()
    if len(data) > limit:
        raise EntryTooLargeError(f"{what} is {len(data):,} bytes as JSON, over the limit of "
                                 f"{limit:,} bytes per entry: send a reference to the data "
                                 "(a path, a URL), not the data")
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise WireError(f"{what} must be a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"{what} is not valid base64") from None


def _field(record: Mapping[str, Any], name: str, *types: type, what: str = "job") -> Any:
    value = record.get(name)
    # bool is an int in Python: refuse True where a number is meant.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise WireError(f"{what} field {name!r} must be {names}, got "
                        f"{type(value).__name__ if name in record else 'nothing'}")
    return value


# -- jobs ---------------------------------------------------------------------------------


def encode_job(job: Job, *, producer: str, submitted_at: float,
               limit: int = MAX_ENTRY_BYTES) -> bytes:
    """The stream entry of `job` (UTF-8 JSON). Raises InvalidJobError (EntryTooLargeError
    past `limit`) for what cannot travel, naming the field.

    Written out field by field rather than as a dict for json to walk: a producer encodes
    every job, and this is most of its work per job. Numbers come from validated job types
    (finite: their repr is JSON); strings and arguments go through the JSON encoder."""
    head = f'{{"v":{_VERSION},"id":{job.id},"r":{_json_string(producer)},"at":{submitted_at!r}'
    if job.payload:
        head += f',"p":"{_b64(job.payload)}"'
    if job.timeout is not None:
        head += f',"to":{job.timeout!r}'
    kind = job.job_type
    if isinstance(kind, Delayed):
        tail = f',"t":"delay","s":{kind.delay!r}}}'
    elif isinstance(kind, CpuBound):
        tail = f',"t":"cpu","n":{kind.iterations}}}'
    elif isinstance(kind, AsyncIo):
        tail = f',"t":"io","url":{_dumps(kind.url, "AsyncIo.url")}}}'
    else:
        name = type(kind).__name__
        tail = (f',"t":"{"call" if isinstance(kind, Call) else "blocking"}",'
                f'"fn":{_json_string(function_path(kind.fn, f"{name}.fn"))}')
        what = f"the arguments of job {job.id}"
        if kind.args:
            tail += f',"a":{_dumps(list(kind.args), what)}'
        if kind.kwargs:
            tail += f',"k":{_dumps(kind.kwargs, what)}'
        tail += "}"
    return _check_size(head + tail, limit, f"job {job.id}")


def _json_string(text: str) -> str:
    """`text` as a JSON string, cached: a producer sends the same few (its name, function
    paths) with every job."""
    shown = _JSON_STRINGS.get(text)
    if shown is None:
        shown = _dumps(text, "a name")
        if len(_JSON_STRINGS) < 10_000:  # a bounded cache: names, not data
            _JSON_STRINGS[text] = shown
    return shown


def decode_job(data: bytes | None, *, modules: Iterable[str],
               limit: int = MAX_ENTRY_BYTES) -> WireJob:
    """The job in a stream entry's `j` field. Raises WireError for anything else - never
    runs or imports anything the entry names outside `modules`."""
    if data is None:
        raise WireError("the entry has no 'j' field (not written by jobq)")
    if len(data) > limit:
        raise WireError(f"the entry is {len(data):,} bytes, over the limit of {limit:,}")
    try:
        record = _DECODER.decode(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"the entry is not JSON: {exc}") from None
    if type(record) is not dict:
        raise WireError(f"the entry is JSON {type(record).__name__}, not an object")
    get = record.get
    if get("v") != _VERSION:
        raise WireError(f"the entry has format version {get('v')!r}; this worker reads "
                        f"version {_VERSION}")
    job_id = get("id")
    if type(job_id) is not int:  # (`type() is`, not isinstance: a JSON true is no id)
        job_id = _field(record, "id", int)  # raises, naming what it got
    producer = get("r", "")
    submitted_at = get("at", 0.0)
    if type(producer) is not str or type(submitted_at) not in (int, float) or (
            not math.isfinite(submitted_at)):
        raise WireError("the entry's 'r' must be a string and 'at' a finite number")
    payload = _unb64(record["p"], "job field 'p'") if "p" in record else b""
    timeout = get("to")
    kind = get("t")
    try:
        job_type: Any
        if kind == "delay":  # (the commonest first: a dict lookup each)
            job_type = Delayed(_field(record, "s", int, float))
        elif kind == "cpu":
            job_type = CpuBound(_field(record, "n", int))
        elif kind == "io":
            job_type = AsyncIo(_field(record, "url", str))
        elif kind in ("call", "blocking"):
            fn = resolve_function(_field(record, "fn", str), modules)
            args = record.get("a", [])
            kwargs = record.get("k", {})
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise WireError("job fields 'a' must be a list and 'k' an object")
            job_type = (Call if kind == "call" else Blocking)(fn, *args, **kwargs)
        else:
            raise WireError(f"unknown job type {kind!r} (cpu, delay, io, call, blocking)")
        job = Job(job_id, payload, job_type, timeout)
    except InvalidJobError as exc:  # a field Job() itself refuses: the entry is bad
        raise WireError(f"job {job_id}: {exc}") from None
    return WireJob(job, producer, float(submitted_at))


# -- results ------------------------------------------------------------------------------
# A result record travels to the producer's results stream (and, for a dead letter, to the
# dead-letter stream too): how the job ended, its value, and every attempt.


def _value_to_json(value: Any) -> Any:
    if isinstance(value, FetchResult):  # an AsyncIo job's value: rebuilt on the other side
        return {"status": value.status, "size": value.size, "url": redact(value.url),
                "headers": value.headers, "body": _b64(value.body)}
    return value


def encode_result(result: JobResult, attempts: Iterable[Attempt], *, worker: str,
                  limit: int = MAX_ENTRY_BYTES, job_text: str | None = None,
                  entry: str | None = None) -> bytes:
    """A result record. Raises InvalidJobError if the value is not JSON or too large (the
    worker then dead-letters the job with that error instead).

    `job_text`/`entry`: for dead letters, the job as it was read, so that it can be
    inspected (and resubmitted) from the dead-letter stream alone."""
    record: dict[str, Any] = {
        "id": result.job_id, "s": result.status.value, "k": result.kind,
        "w": worker, "n": result.attempts, "at": result.submitted_at,
        "t0": result.started_at, "t1": result.finished_at,
    }
    if attempts:  # failed attempts (a job that succeeded at once has none: the usual case)
        record["att"] = [[a.number, a.started_at, a.ended_at, a.error, a.error_type]
                         for a in attempts]
    if result.error is not None:
        record["err"] = result.error
    if job_text is not None:
        record["job"] = job_text
    if entry is not None:
        record["e"] = entry
    if result.status is ResultStatus.SUCCEEDED and result.value is not None:
        record["val"] = _value_to_json(result.value)
        if isinstance(result.value, FetchResult):
            record["io"] = True
    text = _dumps(record, f"the result of job {result.job_id}")
    return _check_size(text, limit, f"the result of job {result.job_id}")


def encode_success(job: Job, *, worker: str, attempts: int, submitted_at: float,
                   started_at: float, finished_at: float, value: Any,
                   limit: int = MAX_ENTRY_BYTES) -> bytes:
    """The record of a job that succeeded on its first attempt - what `encode_result` makes,
    written out directly: the worker's hot path (most jobs end this way), so no JobResult
    is built and no dict is walked. Times are finite floats (decode_job refuses others),
    whose repr is JSON."""
    kind, label = _json_string(job.kind), _json_string(worker)
    if value is None:
        tail = ""
    elif type(value) is int:
        tail = f',"val":{value}'
    elif isinstance(value, FetchResult):
        tail = ',"io":true,"val":' + _dumps(_value_to_json(value), f"the result of job {job.id}")
    else:
        tail = ',"val":' + _dumps(value, f"the result of job {job.id}")
    text = (f'{{"id":{job.id},"s":"succeeded","k":{kind},"w":{label},"n":{attempts},'
            f'"at":{submitted_at!r},"t0":{started_at!r},"t1":{finished_at!r}{tail}}}')
    return _check_size(text, limit, f"the result of job {job.id}")


_STATUSES = {status.value: status for status in ResultStatus}

# JSON of the few strings a worker writes in every record (kinds, its slot labels).
_JSON_STRINGS: dict[str, str] = {}


def decode_result(data: bytes) -> tuple[JobResult, tuple[Attempt, ...], str]:
    """(JobResult, attempts, worker label) from a result record. Times are wall-clock
    seconds; `JobResult.worker` is None (the label says which process and slot)."""
    try:
        record = _DECODER.decode(data.decode())
        status = _STATUSES[record["s"]]
        listed = record.get("att")
        attempts = tuple(Attempt(int(n), float(t0), float(t1), err, kind)
                         for n, t0, t1, err, kind in listed) if listed else ()
        value = record.get("val")
        if value is not None and record.get("io") and isinstance(value, dict):
            value = FetchResult(status=value["status"], size=value["size"], url=value["url"],
                                headers=value.get("headers", {}),
                                body=_unb64(value.get("body", ""), "body"))
        started = record.get("t0")
        finished = float(record.get("t1") or 0.0)
        result = JobResult(
            int(record["id"]), 0.0 if started is None else finished - started, status,
            kind=str(record.get("k", "?")), attempts=int(record.get("n", 0)), worker=None,
            submitted_at=float(record.get("at") or 0.0), started_at=started,
            finished_at=finished, error=record.get("err"), value=value,
        )
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"a result record is malformed: {type(exc).__name__}: {exc}") from None
    return result, attempts, str(record.get("w", ""))

