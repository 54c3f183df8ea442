"""Any OpenAI-compatible endpoint: hosted APIs, `vllm serve`, our Ray Serve app.

The official `openai` client does the HTTP; this module adds what a batch job needs
on top: a cap on requests in flight, requests-per-minute and tokens-per-minute
budgets, and retries with exponential backoff and jitter that honour `Retry-After`.
The API key is read from the environment variable the config names and never leaves
this process: it is not stored in records, manifests, logs or error messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from rollout_ray.chat.responses import responses_input
from rollout_ray.config import OpenAIEngineConfig
from rollout_ray.engines.base import (
    Conversation,
    Engine,
    FatalEngineError,
    Generation,
    GenerationRequest,
    ToolCall,
)
from rollout_ray.engines.rate_limits import RateLimiter
from rollout_ray.engines.registry import register_engine
from rollout_ray.errors import RowError, redact
from rollout_ray.inputs.images import has_images, inline_images, message_text, responses_content
from rollout_ray.retries import Backoff, retry_after_s

if TYPE_CHECKING:
    from rollout_ray.config import JobConfig

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
#: What an image counts for in the tokens-per-minute budget (a 512x512 tile and a base
#: image in OpenAI's accounting); the endpoint's own count lands in the record.
IMAGE_TOKENS = 765


class OpenAIEngine(Engine):
    name = "openai"
    #: Its aiohttp session is closed on its loop, else Python's exit prints "Unclosed
    #: client session" after every run.
    freed_by_exit = False

    def __init__(self, model: str, config: OpenAIEngineConfig):
        self._model = model
        self.config = config
        self._api_key = os.environ.get(config.api_key_env or "", "") or "EMPTY"
        self._secrets = (self._api_key,) if self._api_key != "EMPTY" else ()
        refuse_insecure_key(config, self._secrets)
        self._base_url = _without_credentials(config.base_url)
        if self._base_url != config.base_url:
            # aiohttp refuses a URL with credentials beside the client's Authorization
            # header: every request failed. The key is the endpoint's authentication.
            log.warning(
                "engine.base_url carries a user and password; they are not sent: the "
                "endpoint gets the key of engine.api_key_env as a Bearer token"
            )
        self._client = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute)
        self.in_flight = 0
        self.retries = 0
        #: Retries that waited as the server's Retry-After asked.
        self.retry_after_waits = 0

    @property
    def model_label(self) -> str:
        return self._model

    def _client_for_loop(self):
        if self._client is None:
            import httpx2
            from openai import AsyncOpenAI, DefaultAioHttpClient

            # aiohttp's connection pool, not httpx's: httpx checks every pooled
            # connection on each request, which at a few hundred connections cost more
            # CPU per request than all the rest (benchmarks/overheads.py endpoint). One
            # kept-alive connection per concurrent request: none is reopened.
            slots = self.config.max_concurrent_requests
            self._client = AsyncOpenAI(
                base_url=self._base_url,
                api_key=self._api_key,
                max_retries=0,  # retries are ours: they honour Retry-After and count
                timeout=self.config.timeout_s,
                http_client=DefaultAioHttpClient(
                    limits=httpx2.Limits(max_connections=slots, max_keepalive_connections=slots)
                ),
            )
            self._slots = asyncio.Semaphore(self.config.max_concurrent_requests)
            self._loop = asyncio.get_running_loop()
        return self._client

    def close(self) -> None:
        """Called off the engine's loop (every caller does): the session closes on the
        loop that opened it."""
        client, loop, self._client = self._client, self._loop, None
        if client is None or loop is None or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
        except Exception as exc:  # a client that can't close has nothing to save
            log.debug("closing the endpoint's client: %s", exc)

    async def generate(self, request: GenerationRequest) -> Generation:
        client = self._client_for_loop()
        assert self._slots is not None
        sampling = request.sampling
        if has_images(request.messages):  # files inline; http(s) URLs go as they are
            messages = await asyncio.to_thread(inline_images, request.messages)
            request = dataclasses.replace(request, messages=messages)
        images = sum(
            part.get("type") == "image_url"
            for m in request.messages
            if isinstance(m.get("content"), list)
            for part in m["content"]
        )
        text = sum(len(message_text(m.get("content"))) for m in request.messages)
        estimate = text // 4 + IMAGE_TOKENS * images + int(sampling.get("max_tokens") or 256)
        started = time.monotonic()
        async with self._slots:
            self.in_flight += 1
            try:
                generation = await self._with_retries(client, request, estimate)
            finally:
                self.in_flight -= 1
        generation.latency_s = time.monotonic() - started
        return generation

    async def turn(self, conversation: Conversation, request: GenerationRequest) -> Generation:
        """An episode's turn through chat completions with `tools`; the server's own
        parser finds the calls (vLLM: --enable-auto-tool-choice --tool-call-parser)."""
        conv = conversation
        choice: Any = conv.tool_choice
        if choice not in ("auto", "required", "none"):
            choice = {"type": "function", "function": {"name": choice}}
        tools = {"tools": conv.tools, "tool_choice": choice}
        if conv.tools:
            tools["parallel_tool_calls"] = conv.parallel_tool_calls
        turn_request = GenerationRequest(
            request.request_id,
            conv.messages,
            request.sampling,
            extra={"chat_tools": tools if conv.tools else None},
        )
        gen = await self.generate(turn_request)
        gen.tool_calls = gen.tool_calls or []
        return gen

    async def _with_retries(self, client, request: GenerationRequest, estimate: int) -> Generation:
        import openai

        backoff = Backoff(self.config.backoff_base_s, self.config.backoff_max_s)
        last = ""  # what the endpoint last answered, for the final error
        for attempt in range(self.config.max_retries + 1):
            await self._limiter.acquire(estimate)
            try:
                if self._use_responses(request):
                    return await self._responses(client, request)
                return await self._chat(client, request)
            except (
                openai.AuthenticationError,
                openai.PermissionDeniedError,
                openai.NotFoundError,
            ) as exc:
                raise FatalEngineError(self._describe(exc)) from None
            except openai.APIStatusError as exc:
                if exc.status_code not in _RETRY_STATUS:
                    raise RowError(self._describe(exc), "generate") from None
                response = getattr(exc, "response", None)
                asked = retry_after_s(response.headers.get("retry-after") if response else None)
                last = self._describe(exc)
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                asked = None
                if attempt == self.config.max_retries:
                    raise TimeoutError(self._describe(exc)) from None
            if attempt == self.config.max_retries:
                break
            self.retries += 1
            self.retry_after_waits += asked is not None
            await backoff.wait(attempt, asked)
        raise TimeoutError(
            f"{self.config.base_url} kept failing after {self.config.max_retries} retries "
            f"(last: {last})"
        )

    def _describe(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        text = f"{type(exc).__name__}{f' {status}' if status else ''}: {exc}"
        return redact(text, self._secrets)[:2000]

    def _use_responses(self, request: GenerationRequest) -> bool:
        api = self.config.api
        return api == "responses" or (api == "auto" and bool(request.extra.get("gym")))

    def _common(self, sampling: dict[str, Any]) -> dict[str, Any]:
        extra = dict(self.config.extra_body)
        for name in ("top_k", "min_p", "repetition_penalty", "min_tokens"):
            if sampling.get(name) not in (None, -1, 0) or (name == "min_p" and sampling.get(name)):
                extra[name] = sampling[name]
        if sampling.get("return_token_ids"):
            extra["return_token_ids"] = True  # vLLM servers return prompt/output ids
        if sampling.get("chat_template_kwargs"):
            extra["chat_template_kwargs"] = sampling["chat_template_kwargs"]  # vLLM, SGLang
        return extra

    async def _chat(self, client, request: GenerationRequest) -> Generation:
        s = request.sampling
        body: dict[str, Any] = {
            "model": self._model,
            # Earlier calls' arguments as the API wants them: JSON text.
            "messages": [_api_message(m) for m in request.messages],
            "temperature": s.get("temperature"),
            "top_p": s.get("top_p"),
            self.config.max_tokens_param: s.get("max_tokens"),
            "n": 1,
        }
        for name in ("stop", "seed", "presence_penalty", "frequency_penalty"):
            body[name] = s.get(name)
        if s.get("logprobs"):
            body.update(logprobs=True, top_logprobs=0)
        if request.extra.get("chat_tools"):
            body.update(request.extra["chat_tools"])
        response = await self._post(client, "/chat/completions", body, s)
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        logprobs = None
        if (choice.get("logprobs") or {}).get("content") is not None:
            logprobs = [float(t["logprob"]) for t in choice["logprobs"]["content"]]
        want_ids = bool(s.get("return_token_ids"))
        message = choice.get("message") or {}
        # Servers that split thinking from the answer (vLLM's --reasoning-parser, ...).
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        return Generation(
            reasoning_text=reasoning if isinstance(reasoning, str) and reasoning else None,
            text=(choice.get("message") or {}).get("content") or "",
            finish_reason=str(choice.get("finish_reason") or "unknown"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            prompt_token_ids=response.get("prompt_token_ids") if want_ids else None,
            output_token_ids=choice.get("token_ids") if want_ids else None,
            output_logprobs=logprobs,
            tool_calls=[
                ToolCall(
                    str(c.get("id") or f"call_{i}"),
                    str((c.get("function") or {}).get("name") or ""),
                    str((c.get("function") or {}).get("arguments") or "{}"),
                )
                for i, c in enumerate((choice.get("message") or {}).get("tool_calls") or [])
            ],
        )

    async def _responses(self, client, request: GenerationRequest) -> Generation:
        s = request.sampling
        messages = [{**m, "content": responses_content(m["content"])} for m in request.messages]
        instructions = None
        if messages and messages[0]["role"] == "system":
            instructions = message_text(messages.pop(0)["content"])
        body = {
            "model": self._model,
            # Earlier turns of a row as the Responses API's own items.
            "input": responses_input(messages),
            "instructions": instructions,
            "temperature": s.get("temperature"),
            "top_p": s.get("top_p"),
            "max_output_tokens": s.get("max_tokens"),
            "seed": s.get("seed"),
        }
        response = await self._post(client, "/responses", body, s)
        usage = response.get("usage") or {}
        incomplete = response.get("incomplete_details") or {}
        finish = "length" if incomplete.get("reason") == "max_output_tokens" else "stop"
        text = "".join(
            part.get("text") or ""
            for item in response.get("output") or []
            if item.get("type") == "message"
            for part in item.get("content") or []
            if part.get("type") == "output_text"
        )
        return Generation(
            text=text,
            finish_reason=finish,
            prompt_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
        )

    async def _post(
        self, client, path: str, body: dict[str, Any], sampling: dict[str, Any]
    ) -> dict[str, Any]:
        """POST through the client and get the reply as plain JSON.

        The client still sends the request, maps error statuses to its exceptions and
        applies the timeout; what this skips is its typed layer (converting the
        arguments on the way out, building response models on the way back), about
        half of the client's CPU per request, which at hundreds of requests in flight
        is what keeps an actor from filling its concurrency.
        """
        # The config's extra_body and vLLM's sampling extensions go last, as the
        # client's own `extra_body` would: they may override a standard field.
        body = {**{k: v for k, v in body.items() if v is not None}, **self._common(sampling)}
        response = await client.post(path, body=body, cast_to=dict)
        if not isinstance(response, dict) or not (response.get("choices") or "output" in response):
            raise RowError(f"{self.config.base_url}{path} answered without a result", "generate")
        return response

    def stats(self) -> dict[str, float]:
        return {
            "requests_running": float(self.in_flight),
            "retries": float(self.retries),
            "retry_after_waits": float(self.retry_after_waits),
        }


def refuse_insecure_key(config: OpenAIEngineConfig, keys: tuple[str, ...]) -> None:
    """Refuse to send an API key in clear text to another machine.

    Raises:
        FatalEngineError: a key is set, base_url is http:// to a non-loopback host, and
            allow_insecure_http is not set.
    """
    from rollout_ray.secrets import plain_http_elsewhere

    host = plain_http_elsewhere(config.base_url)
    if keys and host is not None and not config.allow_insecure_http:
        raise FatalEngineError(
            f"engine.base_url is plain http:// to {host}: the API key would cross the network "
            "unencrypted. Use https://, or set engine.allow_insecure_http: true if the "
            "network is trusted."
        )


def _api_message(message: dict[str, Any]) -> dict[str, Any]:
    """A conversation message as the API takes it (tool-call arguments as JSON text)."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    return {
        **message,
        "tool_calls": [
            {
                **c,
                "function": {
                    "name": c["function"]["name"],
                    "arguments": c["function"]["arguments"]
                    if isinstance(c["function"]["arguments"], str)
                    else json.dumps(c["function"]["arguments"]),
                },
            }
            for c in calls
        ],
    }


def _without_credentials(url: str) -> str:
    """`url` without a `user:password@` part."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))


def build(job: JobConfig, block: OpenAIEngineConfig, device: str) -> OpenAIEngine:
    served = job.serve.served_model_name if job.serve else None
    return OpenAIEngine(block.model_name or served or job.model, block)


def check(job: JobConfig, block: OpenAIEngineConfig, secret_env: dict[str, str]) -> None:
    """A key over plain http to another machine is refused before anything starts."""
    key = secret_env.get(block.api_key_env or "")
    refuse_insecure_key(block, (key,) if key else ())


register_engine(OpenAIEngineConfig, build=build, check=check)
