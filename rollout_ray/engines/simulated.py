"""A dry-run engine with no model: deterministic text after a fixed latency.

It lets a user check a plan, the pipeline's own throughput and a cost estimate without
a GPU, and lets the scale tests run a million rollouts on a laptop. Like a real engine
it has a batch capacity (`max_num_seqs`): rollouts beyond it wait for a free slot.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from typing import Any

from rollout_ray.config import SimulatedEngineConfig
from rollout_ray.engines.base import Engine, Generation, GenerationRequest
from rollout_ray.errors import RowError

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
        words = sum(len(m["content"].split()) + 4 for m in messages)
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

    def stats(self) -> dict[str, float]:
        return {"requests_running": float(self._running)}


@functools.lru_cache(maxsize=4096)
def _text(first: int, n: int) -> str:
    """n words of the cycle starting at word `first` (there are few distinct texts)."""
    return " ".join(_WORDS[(first + i) % len(_WORDS)] for i in range(n))


def _stable_int(text: str, salt: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}:{text}".encode(), digest_size=8).digest(), "big")
