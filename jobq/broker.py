"""The Redis side of jobq's distributed mode: key names, the connection, the atomic steps.

One queue is a handful of keys that share a hash tag, `{NAME}`, so that Redis Cluster puts
them in one slot (the Lua scripts below touch several of them at once, which a cluster only
allows within a slot) - a queue can later be moved to a cluster without renaming anything:

    jobq:{NAME}:jobs          stream of jobs; consumer group "workers". An entry is a job
                              accepted and not yet final: the stream itself is the ledger
    jobq:{NAME}:stats         hash of counters: accepted, succeeded, dead-lettered,
                              redelivered, duplicates
    jobq:{NAME}:dead          stream of dead letters, each with every attempt's error
    jobq:{NAME}:events        stream of events of every process (see jobq.redis_producer's
                              merged_trace), trimmed to the newest ~100,000 batches
    jobq:{NAME}:results:P     stream of results for producer P (read and trimmed by it)

The two steps that must never be half done are Lua scripts, which Redis runs atomically:

    accept  XADD each job + count them + the producer's events        (one call per batch)
    final   for each finished entry: XACK + XDEL; if XDEL removed it, it was open, so this
            is its one final: XADD the result (and the dead letter) and count the status;
            if not, it ended already (a redelivered job finishing twice): count a duplicate.
            Plus the worker's events.                                 (one call per batch)

Why XDEL: an acknowledged entry would stay in the stream forever; deleting it in the final
step keeps the stream as long as the work still to do, and makes "open" a question Redis
answers (is the entry still there?) - which is how `lost` is computed.

Never trimmed with MAXLEN: the jobs stream is the queue, and trimming it deletes jobs.
Backpressure is the producer's `capacity` instead.

The connection: `Broker.connect` fails within `connect_timeout` seconds with
BrokerUnavailableError (nobody answers) or BrokerAuthError (the password) - never a hang.
Once connected, `Broker.call` retries an operation through a lost connection (a restarted
server, a blip) with exponential backoff, for up to `reconnect_timeout` seconds. The URL's
password is shown nowhere: `shown_url` has `:***@`, and every message is scrubbed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from jobq import validation as check
from jobq.errors import InvalidConfigError, JobqError
from jobq.http import redact

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "GROUP",
    "RAN",
    "Broker",
    "BrokerAuthError",
    "BrokerError",
    "BrokerUnavailableError",
    "QueueKeys",
    "redact_url",
]

_log = logging.getLogger("jobq.broker")

GROUP = "workers"  # the one consumer group of a queue's jobs stream
EVENTS_MAXLEN = 100_000  # event batches kept (approximately): observability, not jobs
# An events entry is {"p": process, "e": {"slots": N, "ev": [event, ...]}}, each event a
# list (seq, wall time, kind, job, slot, attempt, info, value) with kind an EventKind value
# - or RAN: an attempt that started and succeeded between two of the worker's writes, as
# one event (seq, start, "ran", job, slot, attempt, job kind, end), which the merged trace
# reads as STARTED + SUCCEEDED. (Half the events to write for the usual job.)
RAN = "ran"


class BrokerError(JobqError, ConnectionError):
    """Talking to the Redis server failed (the message shows the URL without password)."""


class BrokerUnavailableError(BrokerError):
    """Nobody answered at the URL, or the server was gone longer than reconnect_timeout."""


class BrokerAuthError(BrokerError):
    """The server refused the password (or wants one and got none)."""


@dataclass(frozen=True)
class QueueKeys:
    """The key names of queue `name` (see the module docstring)."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(
                c in self.name for c in "{}\0 \t\r\n"):
            raise InvalidConfigError(f"queue name must be a non-empty string without braces "
                                     f"or whitespace, got {self.name!r}")

    def _key(self, part: str) -> str:
        return f"jobq:{{{self.name}}}:{part}"

    @property
    def jobs(self) -> str:
        return self._key("jobs")

    @property
    def stats(self) -> str:
        return self._key("stats")

    @property
    def dead(self) -> str:
        return self._key("dead")

    @property
    def events(self) -> str:
        return self._key("events")

    def results(self, producer: str) -> str:
        return self._key(f"results:{producer}")


def redact_url(url: str) -> str:
    """`redis://:s3cret@host:6379/0` -> `redis://:***@host:6379/0` (see jobq.http.redact)."""
    return redact(url)


# -- the scripts --------------------------------------------------------------------------
# Keys reached through ARGV (a producer's results stream) share the queue's hash tag, so a
# cluster would still find them in the script's slot.

ACCEPT = """
-- KEYS: jobs stream, stats hash, events stream
-- ARGV[1]: events JSON ('' for none), ARGV[2]: process label, ARGV[3..]: job entries
local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'j', ARGV[i])
end
redis.call('HINCRBY', KEYS[2], 'accepted', #ARGV - 2)
if ARGV[1] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'p', ARGV[2], 'e', ARGV[1])
end
return ids
""".replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))

FINAL = """
-- KEYS: jobs stream, stats hash, dead stream, events stream
-- ARGV[1]: group, ARGV[2]: events JSON ('' for none), ARGV[3]: process label,
-- ARGV[4]: K, the number of results streams, ARGV[5 .. 4+K]: the results streams,
-- then 3 per entry: entry id, code, result record. The code is 's' (succeeded) or 'd'
-- (dead-lettered), then the place (1..K) of the job's results stream in the list, 0 for none.
local k = tonumber(ARGV[4])
local ok, dead, dup = 0, 0, 0
local dups = {}
for i = 5 + k, #ARGV, 3 do
  local id, code = ARGV[i], ARGV[i + 1]
  redis.call('XACK', KEYS[1], ARGV[1], id)
  if redis.call('XDEL', KEYS[1], id) == 1 then
    local place = tonumber(string.sub(code, 2))
    if place > 0 then redis.call('XADD', ARGV[4 + place], '*', 'r', ARGV[i + 2]) end
    if string.sub(code, 1, 1) == 'd' then
      redis.call('XADD', KEYS[3], '*', 'r', ARGV[i + 2])
      dead = dead + 1
    else
      ok = ok + 1
    end
  else
    dup = dup + 1
    dups[#dups + 1] = id
  end
end
if ok > 0 then redis.call('HINCRBY', KEYS[2], 'succeeded', ok) end
if dead > 0 then redis.call('HINCRBY', KEYS[2], 'dead-lettered', dead) end
if dup > 0 then redis.call('HINCRBY', KEYS[2], 'duplicates', dup) end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'p', ARGV[3], 'e', ARGV[2])
end
return dups
""".replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))

RECLAIM = """
-- KEYS: jobs stream, stats hash
-- ARGV: group, consumer, min idle ms, cursor, count
-- Takes entries idle longer than the visibility timeout (their worker died, or gave them
-- back), and returns {next cursor, {id, fields, deliveries}...}.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  if e and e[2] then  -- (Redis 6.2 lists a deleted entry as nil)
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local deliveries = 1
    if p[1] then deliveries = p[1][4] end
    out[#out + 1] = {e[1], e[2], deliveries}
  end
end
if #out > 1 then redis.call('HINCRBY', KEYS[2], 'redelivered', #out - 1) end
return out
"""

LEAVE = """
-- KEYS: jobs stream; ARGV: group, consumer
-- A worker that leaves removes its consumer from the group - only if it holds nothing:
-- DELCONSUMER drops the consumer's pending entries, and a job nobody holds and nobody can
-- reclaim would be lost.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
"""


# -- the connection -----------------------------------------------------------------------


def _redis_py() -> tuple[ModuleType, ModuleType]:
    """(redis.asyncio, redis.exceptions), imported when a Broker is made: redis-py is an
    extra (`pip install 'jobq[redis]'`), and `import jobq` must work without it."""
    try:
        import redis.asyncio as aioredis
        import redis.exceptions as exceptions
    except ImportError:
        raise InvalidConfigError("jobq's Redis mode needs redis-py: pip install 'jobq[redis]'"
                                 ) from None
    return aioredis, exceptions


def _password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def check_target(owner: str, url: object, queue: object, connect_timeout: object,
                 reconnect_timeout: object) -> QueueKeys:
    """Refuse a bad URL, queue name or timeout when the producer or worker is built - not
    later, at its first connection, far from the line that made the mistake. Returns the
    queue's keys."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidConfigError(f"Redis URL must start with redis://, rediss:// or "
                                 f"unix://, got {redact(str(url))!r}")
    check.seconds(f"{owner}.connect_timeout", connect_timeout, positive=True)
    check.seconds(f"{owner}.reconnect_timeout", reconnect_timeout)
    return QueueKeys(queue)  # type: ignore[arg-type]  # (it checks the name itself)


class Broker:
    """One queue on one Redis server: its keys, a connection pool, the scripts.

        broker = await Broker.connect("redis://localhost:6379/0", "emails")
        ...
        await broker.aclose()
    """

    def __init__(self, url: str, queue: str, *, connect_timeout: float = 5.0,
                 reconnect_timeout: float = 30.0) -> None:
        self.keys = check_target("Broker", url, queue, connect_timeout, reconnect_timeout)
        self.shown_url = redact_url(url)
        self.reconnect_timeout = reconnect_timeout
        self._secret = _password(url)
        # socket_timeout bounds every read, so a server that vanished without closing the
        # connection (a network partition) cannot hang us: the blocking reads below wait
        # at most a second or two, far less than this.
        client, rx = _redis_py()
        self._rx = rx  # redis-py's exceptions, for translate() and call()
        # protocol=2 (RESP2), named, not left to the client's default: the stream reads
        # below take replies as Redis sends them, and RESP3 (the default of newer redis-py)
        # sends XREAD/XREADGROUP as a map instead of a list of [stream, entries] pairs.
        self.redis: aioredis.Redis = client.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=10.0,
            decode_responses=False, protocol=2)
        self._connect_timeout = connect_timeout
        # Stream reads come back as Redis sends them - [[stream, [[id, [field, value, ...]],
        # ...]]] - not as redis-py's dict per entry: a worker and a producer read every job
        # and result, and the dicts cost more than the rest of reading them.
        for command in ("XREAD", "XREADGROUP"):
            self.redis.set_response_callback(command, _as_sent)
        self.accept_script = self.redis.register_script(ACCEPT)
        self.final_script = self.redis.register_script(FINAL)
        self.reclaim_script = self.redis.register_script(RECLAIM)
        self.leave_script = self.redis.register_script(LEAVE)

    @classmethod
    async def connect(cls, url: str, queue: str, *, connect_timeout: float = 5.0,
                      reconnect_timeout: float = 30.0) -> Broker:
        """Connect and make sure the queue's stream and consumer group exist. Raises
        BrokerUnavailableError / BrokerAuthError within about `connect_timeout` seconds."""
        broker = cls(url, queue, connect_timeout=connect_timeout,
                     reconnect_timeout=reconnect_timeout)
        try:
            async with asyncio.timeout(connect_timeout + 1.0):
                await broker.redis.ping()
                try:
                    await broker.redis.xgroup_create(broker.keys.jobs, GROUP, id="0",
                                                     mkstream=True)
                except broker._rx.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):  # exists already: what we want
                        raise
        except BaseException as exc:
            await broker.aclose()
            raise broker.translate(exc) from None
        return broker

    def scrub(self, text: str) -> str:
        """`text` without the password (in case a message ever quotes it)."""
        text = redact(text)
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def translate(self, exc: BaseException) -> BaseException:
        """A redis-py (or timeout) error as jobq's BrokerError; anything else unchanged."""
        rx = self._rx
        reason = self.scrub(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, rx.AuthenticationError) or (
                isinstance(exc, rx.ResponseError) and str(exc).startswith(("NOAUTH",
                                                                            "WRONGPASS"))):
            return BrokerAuthError(f"the Redis server at {self.shown_url} refused the "
                                   f"password ({reason}): check the URL's :PASSWORD@ part")
        if isinstance(exc, (rx.ConnectionError, rx.TimeoutError, TimeoutError, OSError)):
            return BrokerUnavailableError(
                f"could not reach the Redis server at {self.shown_url} ({reason}); is it "
                "running, and is the URL right?")
        return exc

    # Typed with Any, not the operation's own types: stream reads come back as Redis sent
    # them (see _as_sent), whatever redis-py's annotations say - and those differ between
    # redis-py 5 (what arq allows; a command there is "Awaitable[X] | X") and 8 (what a
    # plain install gets). `operation()` is always awaitable on the asyncio client.
    async def call(self, what: str, operation: Callable[[], Any]) -> Any:
        """`await operation()`, again and again through a lost connection, with backoff
        (50 ms, doubling, at most 1 s) for up to `reconnect_timeout` seconds; then
        BrokerUnavailableError. A refused password is not retried.

        Retried operations must be safe to repeat: the final script is (a repeat finds the
        entry deleted, and counts a duplicate); a repeated accept may add a job twice if the
        first reply was lost - the producer then counts the second result a duplicate."""
        rx = self._rx
        delay, first_failure = 0.05, None
        while True:
            try:
                return await operation()
            except (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError, OSError) as exc:
                if isinstance(exc, rx.AuthenticationError):
                    raise self.translate(exc) from None
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    _log.warning("lost the Redis server at %s during %s (%s); reconnecting",
                                 self.shown_url, what, self.scrub(str(exc)))
                if now - first_failure > self.reconnect_timeout:
                    raise BrokerUnavailableError(
                        f"the Redis server at {self.shown_url} was gone for more than "
                        f"{self.reconnect_timeout:g} s ({what}: "
                        f"{self.scrub(f'{type(exc).__name__}: {exc}')})") from None
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
            except rx.ResponseError as exc:
                if str(exc).startswith(("NOAUTH", "WRONGPASS")):
                    raise self.translate(exc) from None
                raise

    async def stats(self) -> dict[str, int]:
        """The queue's counters (see the module docstring)."""
        raw: dict[bytes, bytes] = await self.call(
            "reading stats", lambda: self.redis.hgetall(self.keys.stats))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def aclose(self) -> None:
        await self.redis.aclose()

    def __repr__(self) -> str:
        return f"<Broker {self.shown_url} queue={self.keys.name!r}>"


def _as_sent(response: Any, **options: Any) -> Any:
    return response


def run_script(script: Any, keys: list[str], args: list[Any]) -> Awaitable[Any]:
    """Call a registered script (redis-py reloads it if the server forgot it: a restart)."""
    result: Awaitable[Any] = script(keys=keys, args=args)
    return result
