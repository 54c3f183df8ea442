"""POST /verify in NeMo Gym's shape: the one client the gym agent and the http verifier
share.

The body is the row (with `responses_create_params`) plus the episode as a
Responses-API `response`; the reply is that body echoed back with `reward` and the
server's own fields. What is worth trying again, and what is final, is decided here
once: timeouts, dropped connections, 429 and 5xx are retried with backoff (a numeric
Retry-After is honoured); any other 4xx means the request is wrong for this server
(a schema error such as 422, the wrong server), the same next time: terminal, with the
server's answer in the message. A reply without a numeric reward, not JSON, or over the
size cap is terminal too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollout_ray import replies
from rollout_ray.retries import Backoff, retry_after_s
from rollout_ray.verifiers.base import Verdict, VerifierError

#: Reply fields that echo what was sent, never part of a verdict.
ECHOED = frozenset({"reward", "responses_create_params", "response"})
#: A server asking us to wait longer than this is waited on for this long only.
RETRY_AFTER_CAP_S = 30.0
_SNIPPET = 300


def _same(text: str) -> str:
    return text


@dataclass
class VerifyEndpoint:
    """Where /verify is and how hard to try it."""

    url: str
    timeout_s: float
    attempts: int
    max_reply_bytes: int
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 10.0))
    #: Masks secrets (an http verifier's token) in every message this client writes.
    redact: Callable[[str], str] = _same
    #: Counts: retries made, and how many of them waited as a Retry-After asked.
    retries: int = 0
    retry_after_waits: int = 0


async def post_verify(
    client: replies.HttpClient,
    endpoint: VerifyEndpoint,
    payload: bytes,
    headers: dict[str, str] | None = None,
    slots: asyncio.Semaphore | None = None,
) -> replies.Reply:
    """POST `payload` (the JSON body) to /verify until it is answered or retrying can't
    help; `slots` bounds the requests in flight (not the waits between them).

    Returns:
        The 2xx reply (its cookies are the caller's to keep).

    Raises:
        VerifierError: terminal for a 4xx other than 429, a reply over the cap or a URL
            that can't be used; not terminal when every try timed out, failed to
            connect or got 429/5xx.
    """
    url, redact = endpoint.url, endpoint.redact
    last, delay = "", 0.0
    for attempt in range(endpoint.attempts):
        if attempt:
            await asyncio.sleep(delay)
        asked = None
        try:
            posting = client.post(
                url,
                endpoint.max_reply_bytes,
                f"/verify at {url}",
                content=payload,
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=endpoint.timeout_s,
            )
            async with slots or contextlib.nullcontext():
                reply = await asyncio.wait_for(posting, endpoint.timeout_s)
        except replies.ReplyTooLarge as exc:
            raise VerifierError(redact(str(exc)), terminal=True) from None
        except (TimeoutError, replies.TimedOut):
            last = f"timed out after {endpoint.timeout_s:g}s"
        except replies.Unusable as exc:
            message = redact(f"/verify at {url} can't be used: {exc}")
            raise VerifierError(message, terminal=True) from None
        except replies.Unreachable as exc:
            last = redact(str(exc))
        else:
            status = reply.status_code
            if 200 <= status < 300:
                return reply
            text = f"HTTP {status}: {redact(reply.text)[:_SNIPPET]}"
            if status != 429 and status < 500:
                raise VerifierError(
                    f"/verify at {url} refused the request ({text}): the same request "
                    "would be refused again; is this the dataset's environment, and does "
                    "the row hold what it expects?",
                    terminal=True,
                )
            last = text
            found = retry_after_s(reply.headers.get("retry-after"))
            asked = None if found is None else min(found, RETRY_AFTER_CAP_S)
        delay = endpoint.backoff.delay(attempt, asked)
        if attempt + 1 < endpoint.attempts:
            endpoint.retries += 1
            endpoint.retry_after_waits += asked is not None
    raise VerifierError(
        f"/verify at {url} failed {endpoint.attempts} times; last: {last}", terminal=False
    )


def read_verdict(sent: dict[str, Any], reply: replies.Reply, endpoint: VerifyEndpoint) -> Verdict:
    """The reward and the server's own fields of a /verify reply: what it echoes of the
    request (`sent`) is not a verdict.

    Raises:
        VerifierError: (terminal) the reply is not JSON or has no numeric reward.
    """
    url = endpoint.url
    try:
        data = reply.json()
    except ValueError:
        text = endpoint.redact(reply.text)[:_SNIPPET]
        raise VerifierError(f"/verify at {url} answered with no JSON: {text!r}") from None
    reward = data.get("reward") if isinstance(data, dict) else None
    if isinstance(reward, bool) or not isinstance(reward, int | float):
        text = endpoint.redact(reply.text)[:_SNIPPET]
        raise VerifierError(f"/verify at {url} answered without a numeric reward: {text}")
    details = {
        k: v for k, v in data.items() if k not in ECHOED and not (k in sent and sent[k] == v)
    }
    return Verdict(float(reward), details)


def encode(body: dict[str, Any], default: Callable[[Any], Any] | None = None) -> bytes:
    """The request body as JSON bytes.

    Raises:
        VerifierError: (terminal) the body holds a value JSON can't carry.
    """
    try:
        return json.dumps(body, default=default, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise VerifierError(f"the /verify request is not JSON-serialisable: {exc}") from None
