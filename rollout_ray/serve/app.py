"""rollout-ray's own OpenAI-compatible Serve app: the jobs' engine behind HTTP.

Each replica hosts the same `VLLMEngine` an engine actor does (on CPU the engine core
stepped in-process, on GPU AsyncLLM), so a served model batches exactly as a job's
own engine would. Ray's `ray.serve.llm` app (`serve.server: ray-serve-llm`) gives the
wider OpenAI surface (streaming, LoRA) but on CPU always runs vLLM's multiprocess
executor: three processes per replica on cores the model's threads need, about 0.8x
the in-process engine's throughput where this app keeps to the same engine
(benchmarks/overheads.py serve).

Served: `GET /v1/models`, `POST /v1/chat/completions` (with `tools` and `tool_choice`:
serve/tools.py) and `POST /v1/responses`, without streaming; vLLM's extensions `top_k`,
`min_p`, `repetition_penalty`, `min_tokens` and `return_token_ids` are honoured.
Anything else in a request that would change its result is refused with a 400 that
names it, never ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from rollout_ray.config import VLLMEngineConfig
from rollout_ray.engines import EngineDead, Generation, GenerationRequest
from rollout_ray.errors import RowError
from rollout_ray.inputs.prompts import content_text
from rollout_ray.serve import tools

log = logging.getLogger(__name__)

api = FastAPI(title="rollout-ray")

#: Request fields that only shape the reply's form, accepted and ignored.
_HARMLESS = {"model", "user", "metadata", "store", "parallel_tool_calls", "service_tier"}
_SAMPLING = {
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "min_tokens",
}
_CHAT = (
    _HARMLESS
    | _SAMPLING
    | {
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "logprobs",
        "top_logprobs",
        "stream",
        "return_token_ids",
        "tools",
        "tool_choice",
    }
)
_RESPONSES = _HARMLESS | _SAMPLING | {"input", "instructions", "max_output_tokens", "stream"}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


def _messages(items: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(items, list) or not items:
        raise BadRequest(f"{where} must be a non-empty list of messages", where)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise BadRequest(f"{where}[{i}] must be a message with a role", f"{where}[{i}]")
        text = content_text(item.get("content"), f"{where}[{i}]")  # RowError: a 400
        out.append({"role": item["role"], "content": text})
    return out


def _sampling(body: dict[str, Any], allowed: set[str], max_key: str) -> dict[str, Any]:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"not served here: {', '.join(unknown)}", unknown[0])
    if body.get("stream"):
        raise BadRequest(
            "streaming is not served by rollout-ray's app; ask without `stream`, or deploy "
            "with serve.server: ray-serve-llm",
            "stream",
        )
    sampling = {k: body[k] for k in _SAMPLING if body.get(k) is not None}
    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    # No limit asked: the rest of the context, as vLLM's server does.
    sampling["max_tokens"] = body.get(max_key) or body.get("max_tokens") or 1 << 30
    return sampling


async def _read_at_most(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to be over `limit` bytes (a
    declared length, or the bytes streamed so far): a huge body is never held."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


class Limits:
    """What a replica takes from a client (ServeConfig's fields), and the SHA-256 of the
    key clients must present: the key itself never leaves the process that deploys."""

    def __init__(
        self,
        key_sha256: str | None = None,
        max_request_bytes: int = 4 << 20,
        max_messages: int = 512,
        max_n: int = 16,
    ):
        self.key_sha256 = key_sha256
        self.max_request_bytes = max_request_bytes
        self.max_messages = max_messages
        self.max_n = max_n

    def authorized(self, header: str | None) -> bool:
        if self.key_sha256 is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        presented = hashlib.sha256(token.strip().encode()).hexdigest()
        return hmac.compare_digest(presented, self.key_sha256)


class RolloutLLMServer:
    """One replica: one engine, the OpenAI routes in front of it."""

    def __init__(
        self,
        model: str,
        served_name: str,
        engine_json: str,
        device: str,
        limits: Limits | None = None,
    ):
        from rollout_ray.engines.vllm_engine import VLLMEngine
        from rollout_ray.logs import quiet_libraries

        quiet_libraries()
        config = VLLMEngineConfig.model_validate_json(engine_json)
        self.engine = VLLMEngine(model, config, device)
        self.name = served_name
        self.limits = limits or Limits()

    def check_health(self) -> None:
        """Serve replaces a replica whose engine died."""
        core = self.engine.engine  # SteppedEngine (CPU) or AsyncLLM (GPU)
        error = getattr(core, "error", None)
        if error is not None or getattr(core, "errored", False):
            raise RuntimeError(f"the engine died: {error or core.dead_error!r}")

    async def _generate(
        self, messages: list[dict[str, str]], sampling: dict[str, Any], n: int = 1
    ) -> list[Generation]:
        ids = await asyncio.to_thread(self.engine.prepare, messages, sampling)
        seed = sampling.get("seed")
        requests = [
            GenerationRequest(
                request_id=uuid.uuid4().hex,
                messages=messages,
                # n samples of one seeded request differ, as in vLLM's server.
                sampling=sampling if seed is None else {**sampling, "seed": seed + i},
                prompt_token_ids=ids,
            )
            for i in range(n)
        ]
        return list(await asyncio.gather(*(self.engine.generate(r) for r in requests)))

    async def _tool_turns(
        self, body: dict[str, Any], messages: list[dict[str, Any]], sampling: dict, n: int
    ) -> list[Generation]:
        """n turns of the conversation with its tools, as a job's episode turn runs."""
        seed = sampling.get("seed")

        async def one(i: int) -> Generation:
            conv = tools.conversation(body, [dict(m) for m in messages])
            own = sampling if seed is None else {**sampling, "seed": seed + i}
            return await self.engine.turn(conv, tools.turn_request(conv.messages, own))

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def _answer(self, request: Request, build) -> JSONResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            raw = await _read_at_most(request, self.limits.max_request_bytes)
            if raw is None:
                limit = self.limits.max_request_bytes
                return _error(413, f"the request body is over {limit} bytes")
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            if body.get("model") not in (None, self.name):
                message = f"model {body['model']!r} is not served here; this app serves "
                return _error(404, message + repr(self.name), "model")
            return JSONResponse(await build(body))
        except BadRequest as exc:
            return _error(400, str(exc), exc.param)
        except RowError as exc:  # e.g. a prompt longer than the context
            return _error(400, str(exc), "messages")
        except (ValueError, TypeError) as exc:  # not JSON, a bad sampling value
            return _error(400, str(exc))
        except EngineDead as exc:
            return _error(503, f"the engine died: {exc}")

    def _denied(self, request: Request) -> JSONResponse | None:
        if self.limits.authorized(request.headers.get("authorization")):
            return None
        return _error(401, "a valid API key is needed (Authorization: Bearer KEY)")

    @api.get("/v1/models")
    async def models(self, request: Request) -> Any:
        denied = self._denied(request)
        if denied is not None:
            return denied
        model = {"id": self.name, "object": "model", "created": 0, "owned_by": "rollout-ray"}
        return {"object": "list", "data": [model]}

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        return await self._answer(request, self._chat)

    async def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        sampling = _sampling(body, _CHAT, "max_completion_tokens")
        self._count(body.get("messages"), "messages")
        tooled = tools.wants_tools(body)
        if tooled:
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                raise BadRequest("messages must be a non-empty list of messages", "messages")
            try:
                messages = tools.history(body["messages"])
            except tools.ToolRequestError as exc:
                raise BadRequest(str(exc), exc.param) from None
        else:
            messages = _messages(body.get("messages"), "messages")
        if body.get("top_logprobs"):
            raise BadRequest("top_logprobs > 0 is not served; logprobs=true is", "top_logprobs")
        want_ids = bool(body.get("return_token_ids"))
        sampling["logprobs"] = bool(body.get("logprobs"))
        sampling["return_token_ids"] = want_ids or sampling["logprobs"]
        n = int(body.get("n") or 1)
        if not 1 <= n <= self.limits.max_n:
            raise BadRequest(f"n must be between 1 and {self.limits.max_n}", "n")
        if tooled:
            generations = await self._tool_turns(body, messages, sampling, n)
        else:
            generations = await self._generate(messages, sampling, n)
        choices = []
        for i, gen in enumerate(generations):
            message, finish = tools.reply_message(gen)
            choice: dict[str, Any] = {
                "index": i,
                "message": message,
                "finish_reason": finish,
                "logprobs": self._logprobs(gen) if sampling["logprobs"] else None,
            }
            if want_ids:
                choice["token_ids"] = gen.output_token_ids
            choices.append(choice)
        prompt_tokens = generations[0].prompt_tokens
        output_tokens = sum(g.output_tokens for g in generations)
        reply: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": prompt_tokens + output_tokens,
            },
        }
        if want_ids:
            reply["prompt_token_ids"] = generations[0].prompt_token_ids
        return reply

    def _count(self, items: Any, where: str) -> None:
        if isinstance(items, list) and len(items) > self.limits.max_messages:
            raise BadRequest(f"{where} has over {self.limits.max_messages} items", where)

    def _logprobs(self, gen: Generation) -> dict[str, Any]:
        decode = self.engine.tokenizer.decode
        content = []
        ids, logprobs = gen.output_token_ids or [], gen.output_logprobs or []
        for token_id, logprob in zip(ids, logprobs, strict=True):
            token = decode([token_id])
            content.append(
                {
                    "token": token,
                    "logprob": logprob,
                    "bytes": list(token.encode()),
                    "top_logprobs": [],
                }
            )
        return {"content": content}

    @api.post("/v1/responses")
    async def responses(self, request: Request) -> JSONResponse:
        return await self._answer(request, self._responses)

    async def _responses(self, body: dict[str, Any]) -> dict[str, Any]:
        sampling = _sampling(body, _RESPONSES, "max_output_tokens")
        given = body.get("input")
        self._count(given, "input")
        if isinstance(given, str):
            messages = [{"role": "user", "content": given}]
        else:
            messages = _messages(given, "input")
        if body.get("instructions"):
            messages.insert(0, {"role": "system", "content": str(body["instructions"])})
        (gen,) = await self._generate(messages, sampling)
        truncated = gen.finish_reason == "length"
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "model": self.name,
            "status": "incomplete" if truncated else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{uuid.uuid4().hex}",
                    "role": "assistant",
                    "status": "incomplete" if truncated else "completed",
                    "content": [{"type": "output_text", "text": gen.text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": gen.prompt_tokens,
                "output_tokens": gen.output_tokens,
                "total_tokens": gen.prompt_tokens + gen.output_tokens,
            },
        }


#: The Serve deployment; `serving.deploy` sets its replicas and resources.
deployment = serve.deployment(serve.ingress(api)(RolloutLLMServer))
