"""The HTTP client behind `AsyncIo` jobs: one pooled aiohttp session, hard limits, clear errors.

    async with HttpClient(HttpLimits(read_timeout=2.0)) as client:
        result = await client.fetch("http://127.0.0.1:8080/ok")   # FetchResult(status=200, ...)

Three things this module adds to a bare `aiohttp` call, each one a lesson:

* **Limits.**  Every request has a connect, read and total timeout, a cap on the body size
  and on the number of redirects. A job queue must never hang forever on one slow server,
  and must never read an unbounded body into memory.
* **One error family.**  Whatever goes wrong, the caller sees an `HttpError` subclass from
  `jobq.errors` whose message names the URL - so a retry policy can decide on the type and a
  learner can read the message, without knowing aiohttp's two dozen exception classes.
* **Real time while on the wire.**  A request runs inside `real_work()`, which keeps the
  virtual clock from jumping while bytes are in flight (see `jobq.clock`).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, fields
from types import TracebackType
from typing import TYPE_CHECKING

from jobq.clock import real_work
from jobq.errors import (
    HttpConnectError,
    HttpError,
    HttpStatusError,
    HttpTimeoutError,
    InvalidConfigError,
    ResponseTooLargeError,
)

if TYPE_CHECKING:
    # aiohttp is imported where it is used, not here: `import jobq` stays quick, and so does
    # starting a process-pool worker (it imports jobq.work, and with it this package).
    import aiohttp

__all__ = ["FetchResult", "HttpClient", "HttpLimits"]

# Read the body in pieces of this size, so that we can stop as soon as the cap is passed.
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    """How long and how much one request may take. Every value is checked on creation."""

    connect_timeout: float = 5.0  # seconds to open the TCP connection
    read_timeout: float = 10.0  # seconds the server may stay silent between two reads
    total_timeout: float = 30.0  # seconds for the whole request, redirects and body included
    max_response_bytes: int = 1_048_576  # body bytes we are willing to read (1 MiB)
    max_redirects: int = 3  # redirects we follow; one more is an error

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            value = getattr(self, name)
            # bool is an int subclass; `read_timeout=True` is a mistake, not one second.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidConfigError(
                    f"HttpLimits.{name} must be a number of seconds, got {value!r}"
                )
            # `not value > 0` (rather than `value <= 0`) also refuses NaN.
            if not value > 0:
                raise InvalidConfigError(f"HttpLimits.{name} must be > 0 seconds, got {value!r}")
            if not math.isfinite(value):
                raise InvalidConfigError(
                    f"HttpLimits.{name} must be a finite number of seconds, got {value!r}"
                )
        for name, minimum in (("max_response_bytes", 1), ("max_redirects", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfigError(f"HttpLimits.{name} must be an int, got {value!r}")
            if value < minimum:
                raise InvalidConfigError(f"HttpLimits.{name} must be >= {minimum}, got {value!r}")

    def __repr__(self) -> str:
        # Show only what differs from the defaults: `HttpLimits(read_timeout=0.2)` reads
        # better in a notebook than five fields, and it still evaluates back to an equal value.
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"HttpLimits({', '.join(changed)})"


@dataclass(frozen=True)
class FetchResult:
    """What a successful fetch reports. The body itself is read (to measure it) and dropped."""

    status: int  # HTTP status of the final response (< 400)
    size: int  # body bytes read
    url: str  # the URL that answered, after following redirects


class HttpClient:
    """Fetches URLs with one pooled aiohttp session and the limits of `HttpLimits`.

    Use it as `async with HttpClient() as client:` (or call `await client.aclose()`), inside
    the event loop that runs your jobs: the session belongs to the loop it was created in.
    """

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits if limits is not None else HttpLimits()
        # Created on the first fetch, not here: aiohttp binds a session to the *running*
        # loop, and a client may be constructed before any loop runs (e.g. at import time).
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<HttpClient {state} {self.limits!r}>"

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its pooled connections. Calling it again does nothing."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            # An unclosed session makes aiohttp warn when it is garbage-collected.
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._closed:
            raise RuntimeError("HttpClient is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._session is None:
            limits = self.limits
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=limits.total_timeout,
                    sock_connect=limits.connect_timeout,
                    sock_read=limits.read_timeout,
                ),
            )
            self._session_loop = loop
        elif self._session_loop is not loop:
            # A pooled connection cannot move between loops; say so instead of failing deep
            # inside aiohttp (typical cause: one client used by two `asyncio.run` calls).
            raise RuntimeError(
                "HttpClient was first used in another event loop; create one client per loop"
            )
        return self._session

    async def fetch(self, url: str) -> FetchResult:
        """GET `url`, read its body (at most `max_response_bytes`) and report status and size.

        Raises an `HttpError` subclass (see `jobq.errors`) on any failure; the message names
        the URL and, for timeouts, the limit that was exceeded.
        """
        import aiohttp  # see the note at the imports

        session = self._get_session()
        limits = self.limits
        # Hold the virtual clock for the whole request, body included: the timeouts below are
        # measured on the loop's clock, and a jump while bytes are on the wire would fire them.
        with real_work():
            try:
                # aiohttp counts differently: it raises once the number of redirects *reaches*
                # max_redirects, and treats 0 as "no limit". Passing ours + 1 gives "follow at
                # most max_redirects" for every value, including 0.
                async with session.get(
                    url, allow_redirects=True, max_redirects=limits.max_redirects + 1
                ) as response:
                    return await self._read(url, response)
            except aiohttp.TooManyRedirects as exc:
                raise HttpError(
                    f"GET {url}: more than max_redirects={limits.max_redirects} redirects"
                ) from exc
            except aiohttp.NonHttpUrlRedirectClientError as exc:
                # file://, ftp://, ... : following it could read local files or talk to other
                # services on the server's say-so. aiohttp refuses; we say why.
                raise HttpError(
                    f"GET {url}: refused to follow a redirect to {exc}"
                    " (only http and https redirects are followed)"
                ) from exc
            except aiohttp.InvalidUrlRedirectClientError as exc:
                raise HttpError(f"GET {url}: redirect to an invalid URL: {exc}") from exc
            except aiohttp.NonHttpUrlClientError as exc:
                raise HttpError(f"GET {url}: only http and https URLs can be fetched") from exc
            except aiohttp.InvalidURL as exc:
                raise HttpError(f"GET {url}: not a valid URL") from exc
            # The timeout classes first: they are also asyncio.TimeoutError / OSError.
            except aiohttp.ConnectionTimeoutError as exc:
                raise HttpTimeoutError(
                    f"GET {url}: no connection within connect_timeout={limits.connect_timeout}s"
                ) from exc
            except aiohttp.SocketTimeoutError as exc:
                raise HttpTimeoutError(
                    f"GET {url}: server silent for longer than read_timeout={limits.read_timeout}s"
                ) from exc
            except TimeoutError as exc:  # = asyncio.TimeoutError; aiohttp's `total` timer
                raise HttpTimeoutError(
                    f"GET {url}: not finished within total_timeout={limits.total_timeout}s"
                ) from exc
            except aiohttp.ClientSSLError as exc:
                # Somebody answered, but TLS failed: not a "nobody is there" connect error.
                raise HttpError(f"GET {url}: TLS failed: {exc}") from exc
            except aiohttp.ClientConnectorDNSError as exc:
                raise HttpConnectError(f"GET {url}: cannot resolve the host name") from exc
            except aiohttp.ClientConnectorError as exc:
                raise HttpConnectError(f"GET {url}: cannot connect: {exc.strerror}") from exc
            except aiohttp.ClientError as exc:
                # Everything else aiohttp raises: server disconnected mid-response, broken
                # payload, ... Keep the aiohttp class name: it is the best hint there is.
                raise HttpError(f"GET {url}: {type(exc).__name__}: {exc}") from exc

    async def _read(self, url: str, response: aiohttp.ClientResponse) -> FetchResult:
        limits = self.limits
        if response.status >= 400:
            raise _status_error(url, response)
        cap = limits.max_response_bytes
        # Refuse early when the server announces a body that is too big: no need to read
        # a single byte of it.
        if response.content_length is not None and response.content_length > cap:
            response.close()  # the body is still on the wire: drop the connection, don't reuse
            raise ResponseTooLargeError(
                f"GET {url}: Content-Length {response.content_length} bytes"
                f" exceeds max_response_bytes={cap}"
            )
        # A body without Content-Length (chunked) is counted as it arrives. We keep the count
        # and drop the bytes: memory stays bounded by one chunk, not by the body.
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            size += len(chunk)
            if size > cap:
                response.close()
                raise ResponseTooLargeError(
                    f"GET {url}: body exceeds max_response_bytes={cap} (stopped reading)"
                )
        return FetchResult(status=response.status, size=size, url=str(response.url))


def _status_error(url: str, response: aiohttp.ClientResponse) -> HttpStatusError:
    where = "" if str(response.url) == url else f" (redirected to {response.url})"
    error = HttpStatusError(
        f"GET {url}{where}: server answered {response.status} {response.reason}"
    )
    # The status travels on the error, so a retry policy can treat 404 and 503 differently
    # without parsing the message. (errors.py keeps its classes bare; we attach it here.)
    error.status = response.status
    return error
