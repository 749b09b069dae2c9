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
* **No secrets in messages.**  `http://ann:secret@host/` sends ann's password to the server,
  and shows `http://ann:***@host/` everywhere else (`redact`): error messages end up in dead
  letters, trace files and logs, which are read by more people than the password was meant for.
* **Real time while on the wire.**  A request runs inside `real_work()`, which keeps the
  virtual clock from jumping while bytes are in flight (see `jobq.clock`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import TYPE_CHECKING

from jobq import validation as check
from jobq.clock import real_work
from jobq.errors import (
    HttpConnectError,
    HttpError,
    HttpStatusError,
    HttpTimeoutError,
    ResponseTooLargeError,
)

if TYPE_CHECKING:
    # aiohttp is imported where it is used, not here: `import jobq` stays quick, and so does
    # starting a process-pool worker (it imports jobq.work, and with it this package).
    import aiohttp

__all__ = ["FetchResult", "HttpClient", "HttpLimits", "redact"]

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
        # A zero timeout could never be met, and an infinite one is no limit at all.
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            check.seconds(f"HttpLimits.{name}", getattr(self, name), positive=True)
        check.count("HttpLimits.max_response_bytes", self.max_response_bytes, minimum=1)
        check.count("HttpLimits.max_redirects", self.max_redirects, minimum=0)

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
    """The response of a successful fetch: the value of an AsyncIo job.

    The body is kept whole: it is at most `HttpLimits.max_response_bytes` (1 MiB by
    default). A pipeline that keeps every result keeps every body too - for many large
    responses use `keep_results=N` (or False) and take the values from the handles."""

    status: int  # HTTP status of the final response (< 400)
    size: int  # body bytes read
    url: str  # the URL that answered, after following redirects
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    body: bytes = field(default=b"", repr=False)

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")

    def __repr__(self) -> str:
        # Its query string may carry a token (aiohttp already took the password out).
        return f"FetchResult(status={self.status}, size={self.size}, url={redact(self.url)!r})"


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
        the URL (redacted: see `redact`) and, for timeouts, the limit that was exceeded.
        """
        import aiohttp  # see the note at the imports

        session = self._get_session()
        limits = self.limits
        # Every message shows the URL as redact(url) (the request uses `url` itself). It is
        # worked out only for a message: four regex passes per request cost more than the
        # rest of our bookkeeping.
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
                    f"GET {redact(url)}: more than max_redirects={limits.max_redirects} redirects"
                ) from exc
            # The URL errors below carry the URL itself - ours with its password, or the one
            # the server redirected to - and nothing else: our message says it all, redacted,
            # so we leave them out of the traceback (`from None`).
            except aiohttp.NonHttpUrlRedirectClientError as exc:
                # file://, ftp://, ... : following it could read local files or talk to other
                # services on the server's say-so. aiohttp refuses; we say why.
                raise HttpError(
                    f"GET {redact(url)}: refused to follow a redirect to {redact(str(exc))}"
                    " (only http and https redirects are followed)"
                ) from None
            except aiohttp.InvalidUrlRedirectClientError as exc:
                raise HttpError(
                    f"GET {redact(url)}: redirect to an invalid URL: {redact(str(exc))}"
                ) from None
            except aiohttp.NonHttpUrlClientError:
                raise HttpError(
                    f"GET {redact(url)}: only http and https URLs can be fetched") from None
            except aiohttp.InvalidURL as exc:
                why = f" ({redact(exc.description)})" if exc.description else ""
                raise HttpError(f"GET {redact(url)}: not a valid URL{why}") from None
            # The timeout classes first: they are also asyncio.TimeoutError / OSError.
            except aiohttp.ConnectionTimeoutError as exc:
                raise HttpTimeoutError(
                    f"GET {redact(url)}: no connection within "
                    f"connect_timeout={limits.connect_timeout}s"
                ) from exc
            except aiohttp.SocketTimeoutError as exc:
                raise HttpTimeoutError(
                    f"GET {redact(url)}: server silent for longer than "
                    f"read_timeout={limits.read_timeout}s"
                ) from exc
            except TimeoutError as exc:  # = asyncio.TimeoutError; aiohttp's `total` timer
                raise HttpTimeoutError(
                    f"GET {redact(url)}: not finished within total_timeout={limits.total_timeout}s"
                ) from exc
            # aiohttp takes the user name and password out of the URL before it makes the
            # request, so the messages of the errors below have no password; they may still
            # have the query string, hence redact().
            except aiohttp.ClientSSLError as exc:
                # Somebody answered, but TLS failed: not a "nobody is there" connect error.
                raise HttpError(f"GET {redact(url)}: TLS failed: {redact(str(exc))}") from exc
            except aiohttp.ClientConnectorDNSError as exc:
                raise HttpConnectError(f"GET {redact(url)}: cannot resolve the host name") from exc
            except aiohttp.ClientConnectorError as exc:
                raise HttpConnectError(
                    f"GET {redact(url)}: cannot connect: {exc.strerror}") from exc
            except aiohttp.ClientError as exc:
                # Everything else aiohttp raises: server disconnected mid-response, broken
                # payload, ... Keep the aiohttp class name: it is the best hint there is.
                raise HttpError(
                    f"GET {redact(url)}: {type(exc).__name__}: {redact(str(exc))}"
                ) from exc

    async def _read(self, url: str, response: aiohttp.ClientResponse) -> FetchResult:
        """Read the body of `response`; `url` is the one requested (messages redact it)."""
        limits = self.limits
        if response.status >= 400:
            raise _status_error(url, response)
        cap = limits.max_response_bytes
        # Refuse early when the server announces a body that is too big: no need to read
        # a single byte of it.
        if response.content_length is not None and response.content_length > cap:
            response.close()  # the body is still on the wire: drop the connection, don't reuse
            raise ResponseTooLargeError(
                f"GET {redact(url)}: Content-Length {response.content_length} bytes"
                f" exceeds max_response_bytes={cap}"
            )
        # A body without Content-Length (chunked) is counted as it arrives, and we stop as
        # soon as it passes the cap: memory stays bounded by the cap, not by the body.
        size = 0
        chunks: list[bytes] = []
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            size += len(chunk)
            if size > cap:
                response.close()
                raise ResponseTooLargeError(
                    f"GET {redact(url)}: body exceeds max_response_bytes={cap} (stopped reading)"
                )
            chunks.append(chunk)
        return FetchResult(status=response.status, size=size, url=str(response.url),
                           headers=dict(response.headers), body=b"".join(chunks))


def _status_error(url: str, response: aiohttp.ClientResponse) -> HttpStatusError:
    # `response.history` holds the redirects that were followed. (Comparing response.url
    # with the URL we asked for would see a redirect in every URL with a password: aiohttp
    # takes the password out of the URL before it sends the request.)
    where = f" (redirected to {redact(str(response.url))})" if response.history else ""
    error = HttpStatusError(
        f"GET {redact(url)}{where}: server answered {response.status} {response.reason}"
    )
    # The status travels on the error, so a retry policy can treat 404 and 503 differently
    # without parsing the message. (errors.py keeps its classes bare; we attach it here.)
    error.status = response.status
    return error


# `user:password@`, as in a URL's authority - found anywhere in the text, so that it works
# inside a longer message too, and on text that is not a valid URL (an error about a
# malformed URL must not show its password either). The password ends at the *last* '@'
# before the path, as urllib and yarl read it: `http://ann:p@ss@host/` is "p@ss" at host.
_PASSWORD = re.compile(r"(?P<user>[^\s/?#@:'\"]*):(?P<password>[^\s/?#'\"]*)@")

# A query parameter whose name says that its value is a secret: `?token=...`, `&api_key=...`,
# `&X-Amz-Signature=...`. jobq cannot know what else a server treats as a secret, so other
# values (`?size=3`, `?latency=0.5`) stay: they are what a reader needs to understand an error.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;][^=&;#\s]*?(?:token|key|secret|passw|pwd|auth|sig|credential|session)"
    r"[^=&;#\s]*)=(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` - a URL, or a message with URLs in it - as it may be shown to anyone.

        redact("http://ann:secret@127.0.0.1:8080/x?size=3&token=abc")
        -> "http://ann:***@127.0.0.1:8080/x?size=3&token=***"

    The password goes, the user name stays (it tells you whose credentials were used). A
    query value goes if its parameter's name says it is a secret (token, key, secret,
    password, auth, sig, credential, session). A secret anywhere else - in the path, or in
    a parameter called `q` - cannot be recognised: send it in the user info or a header.
    """
    text = _PASSWORD.sub(r"\g<user>:***@", text)
    return _SECRET_PARAMETER.sub(r"\g<name>=***", text)
