"""The http verifier: POST each rollout to a NeMo Gym-style /verify service, with retries."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import weakref
from typing import Any

from rollout_ray import replies, secrets
from rollout_ray.chat.responses import recorded_response
from rollout_ray.config import HttpVerifier
from rollout_ray.output.schema import CORE_NAMES
from rollout_ray.retries import Backoff
from rollout_ray.verifiers.base import Verdict, Verifier, VerifierError
from rollout_ray.verifiers.gym_verify import VerifyEndpoint, encode, post_verify, read_verdict


def _jsonable(value: Any) -> Any:
    """Row fields read from Parquet may be numpy values or timestamps."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def verify_request(record: dict[str, Any]) -> dict[str, Any]:
    """The /verify body: the row's own fields, its create params and the response."""
    params = record.get("responses_create_params")
    if isinstance(params, str):
        params = json.loads(params)
    if not params:
        messages = record.get("prompt_messages") or []
        params = {"input": [{"role": m["role"], "content": m["content"]} for m in messages]}
    body = {k: v for k, v in record.items() if k not in CORE_NAMES and k != "response"}
    body["responses_create_params"] = params
    body["response"] = recorded_response({**record, "model": record.get("model") or "rollout-ray"})
    return body


class HttpVerify(Verifier):
    """One request per rollout, at most `concurrency` in flight; transient failures retried.

    Timeouts, connection errors, 429 and 5xx are retried with exponential backoff and
    jitter (a numeric Retry-After wins); running out of retries is not terminal, since
    the service may be back later. Other 4xx mean the request itself is wrong: terminal.
    """

    name = "http"

    def __init__(self, config: HttpVerifier):
        self.config = config
        refuse_insecure_credentials(config)
        self._secrets: set[str] = set()
        self.endpoint = VerifyEndpoint(
            url=config.url,
            timeout_s=config.timeout_s,
            attempts=config.max_retries + 1,
            max_reply_bytes=config.max_reply_bytes,
            redact=self._redact,
        )
        # A client and its semaphore belong to one event loop.
        self._per_loop: weakref.WeakKeyDictionary[Any, tuple[Any, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def backoff_base_s(self) -> float:
        """First backoff; it doubles per retry (times a 0.5-1 jitter), up to 10 s."""
        return self.endpoint.backoff.base_s

    @backoff_base_s.setter
    def backoff_base_s(self, value: float) -> None:
        self.endpoint.backoff = Backoff(value, self.endpoint.backoff.cap_s)

    @property
    def retries(self) -> int:
        return self.endpoint.retries

    @property
    def retry_after_waits(self) -> int:
        """Retries that waited as the server's Retry-After asked."""
        return self.endpoint.retry_after_waits

    async def verify(self, record: dict[str, Any]) -> Verdict:
        body = verify_request(record)
        payload = encode(body, default=_jsonable)
        client, slots = self._client()
        try:
            reply = await post_verify(client, self.endpoint, payload, slots=slots)
        except VerifierError as exc:
            raise VerifierError(f"http verifier: {exc}", exc.terminal) from None
        return read_verdict(json.loads(payload), reply, self.endpoint)

    async def close(self) -> None:
        states, self._per_loop = list(self._per_loop.values()), weakref.WeakKeyDictionary()
        for client, _ in states:
            # A client of another, finished loop has nothing left to close.
            with contextlib.suppress(Exception):
                await client.aclose()

    def _client(self) -> tuple[Any, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(loop)
        if state is None:
            n = self.config.concurrency
            client = replies.HttpClient(n, self.config.timeout_s, self._headers())
            state = self._per_loop[loop] = (client, asyncio.Semaphore(n))
        return state

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.config.headers}
        self._secrets.update(v for k, v in headers.items() if secrets.secret_header(k) and v)
        env = self.config.api_key_env
        if env:
            token = os.environ.get(env)
            if not token:
                raise VerifierError(
                    f"http verifier: environment variable {env} (api_key_env) is not set",
                    terminal=True,
                )
            self._secrets.add(token)
            headers["Authorization"] = f"Bearer {token}"
        secrets.register(*self._secrets)  # so replies echoing them are masked anywhere
        return headers

    def _redact(self, text: str) -> str:
        return secrets.redact(text, tuple(self._secrets))


def refuse_insecure_credentials(config: HttpVerifier) -> None:
    """Refuse to send a credential in clear text to another machine (the openai
    engine's rule: secrets.plain_http_elsewhere). Checked when the verifier is built, so
    a job stops before its first rollout (check_verifiers), not at every request.

    Raises:
        VerifierError: a token or credential header would go over plain http:// to a
            non-loopback host, and allow_insecure_http is not set.
    """
    host = secrets.plain_http_elsewhere(config.url)
    credentials = config.api_key_env or any(secrets.secret_header(k) for k in config.headers)
    if credentials and host is not None and not config.allow_insecure_http:
        raise VerifierError(
            f"url is plain http:// to {host}: the token would cross the network "
            "unencrypted. Use https://, or set allow_insecure_http: true in the verifier "
            "block if the network is trusted.",
            terminal=True,
        )
