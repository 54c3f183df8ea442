"""HTTP replies read with a size cap, for the clients that talk to servers we don't
control: NeMo Gym resources servers (tools, /seed_session, /verify) and http verifiers.

A reply's body goes into records (a tool's output, a verifier's details) and into the
model's context, and a client would read any size into memory, a compressed one decoded
in full. Here the body is streamed and counted as it is decoded; past the cap the
connection is dropped and `ReplyTooLarge` says so, which the caller turns into that
rollout's failure record.

On aiohttp's connection pool, as the openai engine: httpx's pool checks every pooled
connection on each request, and with an episode per connection (256 by default) that
took 15-22 CPU s per 1,280 tool calls against aiohttp's 0.4-0.7 s (the same server and
calls, one process, docs/benchmarks.md), CPU taken from the engine on the same cores.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

#: The default cap of every reply these clients read (agent.max_reply_bytes, an http
#: verifier's max_reply_bytes): far above any tool output a model can use.
DEFAULT_MAX_REPLY_BYTES = 1 << 20


class ReplyTooLarge(Exception):
    """A reply's body is over its cap; retrying would get the same."""


class Unreachable(Exception):
    """The request did not get a whole reply (refused, reset, cut short): retrying may
    help."""


class TimedOut(Unreachable):
    """No whole reply within the request's timeout."""


class Unusable(Exception):
    """The request can't be sent as given (a URL that is not http(s), a header value
    with a line break): retrying would fail the same way."""


@dataclass
class Reply:
    """What the callers read of a reply: status, headers, cookies and the body."""

    status_code: int
    headers: Any
    cookies: dict[str, str]
    content: bytes
    encoding: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding or "utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON. Raises ValueError when it is not JSON."""
        return json.loads(self.content)


class HttpClient:
    """A pool of up to `max_connections` kept-alive connections, made on the event loop
    of its first request (an aiohttp session belongs to one loop). It keeps no cookies:
    a Gym session's cookies are its own, sent by its caller as a header, so no episode
    ever joins another's session."""

    def __init__(
        self, max_connections: int, timeout_s: float, headers: dict[str, str] | None = None
    ):
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=self.headers,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=True,  # proxies from the environment, as httpx and curl take them
            )
        return self._session

    async def post(
        self,
        url: str,
        cap: int,
        what: str,
        content: bytes,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """POST `content` and read the reply's body up to `cap` bytes.

        Args:
            url: where to POST.
            cap: the most bytes of (decoded) body to read.
            what: names the server in the error, e.g. "tool add at http://...".
            content: the request's body.
            headers: this request's headers, beside the client's own.
            timeout: this request's timeout in seconds (default: the client's).

        Raises:
            ReplyTooLarge: the body (as declared, or as read) is over `cap`.
            TimedOut, Unreachable: no whole reply (worth another try).
            Unusable: the request can't be sent as given.
        """
        import aiohttp

        session = self._open()
        limit = aiohttp.ClientTimeout(total=timeout) if timeout is not None else None
        try:
            async with session.post(
                url, data=content, headers=headers, timeout=limit or session.timeout
            ) as response:
                declared = response.headers.get("content-length", "")
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                if declared.isdigit() and int(declared) > cap and not encoded:
                    raise ReplyTooLarge(_too_large(what, int(declared), cap))
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > cap:
                        raise ReplyTooLarge(_too_large(what, None, cap))
                return Reply(
                    response.status,
                    response.headers,
                    {name: morsel.value for name, morsel in response.cookies.items()},
                    bytes(body),
                    response.charset,
                )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise TimedOut(f"no answer within {timeout or self.timeout_s:g} s") from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise Unusable(f"{type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # aiohttp's refusal of a header value it can't send
            raise Unusable(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _too_large(what: str, declared: int | None, cap: int) -> str:
    size = f"{declared:,} bytes" if declared is not None else f"over {cap:,} bytes"
    return f"{what} answered with {size}, more than the {cap:,} allowed (max_reply_bytes)"
