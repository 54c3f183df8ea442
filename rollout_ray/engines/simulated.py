"""A dry-run engine with no model: deterministic text after a fixed latency.

It lets a user check a plan, the pipeline's own throughput and a cost estimate without
a GPU, and lets the scale tests run a million rollouts on a laptop. Like a real engine
it has a batch capacity (`max_num_seqs`): rollouts beyond it wait for a free slot.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from typing import Any

from rollout_ray.config import SimulatedEngineConfig
from rollout_ray.engines.base import Conversation, Engine, Generation, GenerationRequest, ToolCall
from rollout_ray.engines.registry import register_engine
from rollout_ray.errors import RowError
from rollout_ray.inputs.images import message_text

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


class SimulatedEngine(Engine):
    name = "simulated"

    def __init__(self, model: str, config: SimulatedEngineConfig):
        self._model = model
        self.config = config
        self._slots: asyncio.Semaphore | None = None
        self._running = 0

    @property
    def model_label(self) -> str:
        return self._model

    def prepare(self, messages: list[dict[str, str]], sampling: dict[str, Any]) -> list[int]:
        words = sum(len(message_text(m["content"]).split()) + 4 for m in messages)
        if words >= self.config.max_model_len:
            raise RowError(
                f"prompt is {words} tokens; the simulated context is "
                f"{self.config.max_model_len} (engine.max_model_len)",
                "prompt",
            )
        return list(range(1, words + 1))  # stand-in ids: only their count matters

    async def generate(self, request: GenerationRequest) -> Generation:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_num_seqs)
        started = time.monotonic()
        async with self._slots:
            self._running += 1
            try:
                if self.config.latency_s:
                    await asyncio.sleep(self.config.latency_s)
            finally:
                self._running -= 1
        # Deterministic for a prompt and seed: a rerun writes the same text.
        key = f"{request.messages[-1]['content']}|{request.sampling.get('seed')}"
        start = _stable_int(key, 0)
        n = min(self.config.output_tokens, request.sampling.get("max_tokens") or 10**9)
        want_ids = bool(request.sampling.get("return_token_ids"))
        ids = [(start + i) % 50000 for i in range(n)] if want_ids else None
        prompt_ids = request.prompt_token_ids or []
        return Generation(
            text=_text(start % len(_WORDS), n),
            finish_reason="length" if n == request.sampling.get("max_tokens") else "stop",
            prompt_tokens=len(prompt_ids),
            output_tokens=n,
            prompt_token_ids=list(prompt_ids) if want_ids else None,
            output_token_ids=ids,
            output_logprobs=[-((start + i) % 7) / 7 for i in range(n)]
            if request.sampling.get("logprobs")
            else None,
            latency_s=time.monotonic() - started,
            ttft_s=self.config.latency_s,
        )

    async def turn(self, conversation: Conversation, request: GenerationRequest) -> Generation:
        """A scripted episode: the first `tool_turns` turns call a tool (cycling through
        the tools, arguments made from each one's schema), then a plain answer."""
        conv = conversation
        if conv.token_ids is None:
            conv.token_ids = self.prepare(conv.messages, request.sampling)
            conv.prompt_len, conv.mask = len(conv.token_ids), [0] * len(conv.token_ids)
            conv.logprobs = [0.0] * len(conv.token_ids)
        else:
            new = conv.messages[conv.rendered :]
            added = sum(len(str(m.get("content") or "").split()) + 4 for m in new)
            conv.token_ids += [7] * added
            conv.mask += [0] * added
            conv.logprobs += [0.0] * added
        conv.rendered = len(conv.messages)
        done = sum(1 for m in conv.messages if m.get("role") == "assistant")
        calls: list[ToolCall] = []
        if conv.tools and conv.tool_choice != "none" and done < self.config.tool_turns:
            tool = conv.tools[done % len(conv.tools)]["function"]
            if conv.tool_choice not in ("auto", "required"):
                tool = next(
                    t["function"] for t in conv.tools if t["function"]["name"] == conv.tool_choice
                )
            args = json.dumps(example_arguments(tool.get("parameters") or {}))
            calls = [ToolCall(f"call_{done}_{request.request_id[-6:]}", tool["name"], args)]
        sampling = {**request.sampling, "return_token_ids": True, "logprobs": True}
        if calls:
            sampling["max_tokens"] = min(sampling.get("max_tokens") or 8, 8)
        gen = await self.generate(
            GenerationRequest(request.request_id, conv.messages, sampling, conv.token_ids)
        )
        ids = gen.output_token_ids or []
        conv.token_ids += ids
        conv.mask += [1] * len(ids)
        conv.logprobs += gen.output_logprobs or [0.0] * len(ids)
        if calls:
            gen.text, gen.finish_reason = "", "stop"
        gen.tool_calls = calls
        return gen

    async def finish(self, conversation: Conversation) -> None:
        conv = conversation
        if conv.token_ids is not None and conv.rendered < len(conv.messages):
            new = conv.messages[conv.rendered :]
            added = sum(len(str(m.get("content") or "").split()) + 4 for m in new)
            conv.token_ids += [7] * added
            conv.mask += [0] * added
            conv.logprobs += [0.0] * added
            conv.rendered = len(conv.messages)

    def stats(self) -> dict[str, float]:
        return {"requests_running": float(self._running)}


def example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a tool's parameters schema (any valid JSON schema: type
    lists, `$ref`s into `$defs`, anyOf/oneOf/allOf, enums, consts): its required
    properties, each a plain value of its type."""
    value = _example(schema, schema, 0)
    return value if isinstance(value, dict) else {}


_PLAIN = {"string": "x", "integer": 1, "number": 1.0, "boolean": True, "null": None}


def _example(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 32:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for part in ref[1:].strip("/").split("/") if ref != "#" else []:
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        return _example(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _example(schema[key][0], root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return _example(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            name: _example(props.get(name) or {}, root, depth + 1)
            for name in schema.get("required") or []
        }
    if kind == "array":
        return [_example(schema.get("items") or {}, root, depth + 1)] * int(
            schema.get("minItems") or 0
        )
    if kind == "integer" and isinstance(schema.get("minimum"), int | float):
        return int(schema["minimum"])
    if kind == "string" and isinstance(schema.get("minLength"), int):
        return "x" * schema["minLength"]
    return _PLAIN.get(kind)


@functools.lru_cache(maxsize=4096)
def _text(first: int, n: int) -> str:
    """n words of the cycle starting at word `first` (there are few distinct texts)."""
    return " ".join(_WORDS[(first + i) % len(_WORDS)] for i in range(n))


def _stable_int(text: str, salt: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}:{text}".encode(), digest_size=8).digest(), "big")


register_engine(
    SimulatedEngineConfig, build=lambda job, block, device: SimulatedEngine(job.model, block)
)
