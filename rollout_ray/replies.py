"""HTTP replies read with a size cap, for the clients that talk to servers we don't
control: NeMo Gym resources servers (tools, /seed_session, /verify) and http verifiers.

A reply's body goes into records (a tool's output, a verifier's details) and into the
model's context, and httpx would read any size into memory, a compressed one decoded
in full. Here the body is streamed and counted as it is decoded; past the cap the
connection is dropped and `ReplyTooLarge` says so, which the caller turns into that
rollout's failure record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: The default cap of every reply these clients read (agent.max_reply_bytes, an http
#: verifier's max_reply_bytes): far above any tool output a model can use.
DEFAULT_MAX_REPLY_BYTES = 1 << 20


class ReplyTooLarge(Exception):
    """A reply's body is over its cap; retrying would get the same."""


@dataclass
class Reply:
    """What the callers read of a reply: status, headers, cookies and the body."""

    status_code: int
    headers: Any
    cookies: Any
    content: bytes
    encoding: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding or "utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON. Raises ValueError when it is not JSON."""
        return json.loads(self.content)


async def post(client: Any, url: str, cap: int, what: str, **kwargs: Any) -> Reply:
    """POST with an httpx.AsyncClient and read the reply's body up to `cap` bytes.

    Args:
        client: the httpx.AsyncClient.
        url: where to POST.
        cap: the most bytes of (decoded) body to read.
        what: names the server in the error, e.g. "tool add at http://...".
        kwargs: httpx's request arguments (json, content, headers, timeout).

    Raises:
        ReplyTooLarge: the body (as declared, or as read) is over `cap`.
        httpx.HTTPError: as `client.post` raises them.
    """
    request = client.build_request("POST", url, **kwargs)
    response = await client.send(request, stream=True)
    try:
        declared = response.headers.get("content-length", "")
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        if declared.isdigit() and int(declared) > cap and not encoded:
            raise ReplyTooLarge(_too_large(what, int(declared), cap))
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise ReplyTooLarge(_too_large(what, None, cap))
    finally:
        await response.aclose()
    return Reply(
        response.status_code,
        response.headers,
        response.cookies,
        bytes(body),
        response.charset_encoding,
    )


def _too_large(what: str, declared: int | None, cap: int) -> str:
    size = f"{declared:,} bytes" if declared is not None else f"over {cap:,} bytes"
    return f"{what} answered with {size}, more than the {cap:,} allowed (max_reply_bytes)"
