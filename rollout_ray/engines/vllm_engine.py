"""vLLM inside the actor: the default engine.

Every rollout is its own request; vLLM's scheduler batches whatever is in flight, so
feeding it is just submitting. On GPU the engine is AsyncLLM (its core in a second
process); on CPU the core runs in this process, stepped by a thread (vllm_stepper.py
says why). Prompts are templated and tokenized here with the model's own chat
template, which lets us refuse a too-long prompt with a clear reason and store prompt
token ids for RL without asking vLLM twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from rollout_ray.chat.forced import forced_schema
from rollout_ray.config import VLLMEngineConfig
from rollout_ray.engines.base import (
    Conversation,
    Engine,
    EngineDead,
    Generation,
    GenerationRequest,
)
from rollout_ray.engines.embedded_model import resolve_model
from rollout_ray.engines.reasoning import ReasoningSplitter
from rollout_ray.engines.registry import register_engine
from rollout_ray.engines.vllm_placement import (
    explain_start_failure,
    in_process_core,
    placement,
    prepare,
)
from rollout_ray.engines.vllm_quirks import tolerate_proxies_in_kernel_scan
from rollout_ray.engines.vllm_stepper import SteppedEngine
from rollout_ray.engines.vllm_turns import TurnRenderer
from rollout_ray.errors import RowError
from rollout_ray.inputs.images import has_images

if TYPE_CHECKING:
    from rollout_ray.config import JobConfig

log = logging.getLogger(__name__)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: str, config: VLLMEngineConfig, device: str, metrics: bool = True):
        self._model_name = model
        self.config = config
        self.device = device
        self.metrics = metrics
        self._start()

    def _start(self) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        config, device, model = self.config, self.device, self._model_name
        path = resolve_model(model, announce=log.warning)
        self.model_version = checkpoint_version(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.turns = TurnRenderer(self.tokenizer, config.tool_parser)
        self.reasoning = (
            ReasoningSplitter(self.tokenizer, config.reasoning_parser)
            if config.reasoning_parser
            else None
        )
        kwargs = engine_kwargs(config, device, path, self.metrics)
        started = time.monotonic()
        # Offline batch defaults (as vllm.LLM gets): twice the sequences per batch of
        # the engine-context defaults (256 vs 128 on CPU).
        usage = UsageContext.LLM_CLASS
        loggers = ray_stat_loggers() if self.metrics else None
        self.stepped = self.freed_by_exit = in_process_core(config, device)  # else a process
        tolerate_proxies_in_kernel_scan()
        if self.stepped:
            self.engine = SteppedEngine(EngineArgs(**kwargs), usage, loggers)
        else:
            self.engine = AsyncLLM.from_engine_args(
                AsyncEngineArgs(**kwargs), usage_context=usage, stat_loggers=loggers
            )
        self.max_model_len = self.engine.model_config.max_model_len
        log.info("vLLM engine for %s ready in %.1f s", model, time.monotonic() - started)

    @property
    def model_label(self) -> str:
        return self._model_name

    def checkpoint_changed(self) -> bool:
        path = resolve_model(self._model_name)
        return checkpoint_version(path) != self.model_version

    def reload(self) -> None:
        """Load the model's folder again (a new checkpoint was written there)."""
        log.warning("new checkpoint in %s: reloading the engine", self._model_name)
        self.close()
        self._start()

    def prepare(self, messages: list[dict[str, Any]], sampling: dict[str, Any]) -> list[int]:
        refuse_images(messages)
        try:
            text = self.turns.render(messages, sampling.get("chat_template_kwargs") or {})
        except Exception as exc:  # a template may reject a role order, for instance
            raise RowError(
                f"the model's chat template rejected the messages: {exc}", "prompt"
            ) from None
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= self.max_model_len:
            raise RowError(
                f"prompt is {len(ids)} tokens; the model's context is {self.max_model_len} "
                "(engine.max_model_len)",
                "prompt",
            )
        return ids

    async def generate(self, request: GenerationRequest) -> Generation:
        prompt_ids = request.prompt_token_ids or []
        params = self._sampling_params(request.sampling, len(prompt_ids))
        gen = await self._run(prompt_ids, params, request)
        self._split_reasoning(gen, request.sampling.get("chat_template_kwargs") or {})
        return gen

    def _split_reasoning(self, gen: Generation, template_kwargs: dict[str, Any]) -> None:
        if self.reasoning is not None:
            gen.reasoning_text, gen.text = self.reasoning.split(gen.text, template_kwargs)

    async def turn(self, conversation: Conversation, request: GenerationRequest) -> Generation:
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import StructuredOutputsParams

        conv = conversation
        refuse_images(conv.messages)
        prompt_ids = self.turns.prompt_ids(conv, self.max_model_len)
        # Logprobs are kept for the episode's RL record whenever token ids are.
        sampling = request.sampling
        params = self._sampling_params(sampling, len(prompt_ids))
        schema = forced_schema(
            conv.tool_choice, conv.tools, conv.parallel_tool_calls, conv.calls_left
        )
        if schema is not None:
            params.structured_outputs = StructuredOutputsParams(json=schema)
        turn_request = GenerationRequest(
            f"{request.request_id}/t{len(conv.messages)}", conv.messages, sampling, prompt_ids
        )
        try:
            gen = await self._run(list(prompt_ids), params, turn_request, keep_ids=True)
        except VLLMClientError as exc:
            if schema is None:
                raise
            # The same schema is refused on every try: the row's fault, not the engine's.
            raise RowError(
                f"the tools' parameters can't be enforced for tool_choice "
                f"{conv.tool_choice!r}: {str(exc)[:300]}",
                "generate",
            ) from None
        self.turns.record_turn(conv, gen.output_token_ids or [], gen.output_logprobs)
        self._split_reasoning(gen, conv.template_kwargs)
        gen.text, gen.tool_calls = self.turns.calls(gen.text, conv, gen.finish_reason == "length")
        return gen

    async def finish(self, conversation: Conversation) -> None:
        self.turns.prompt_ids(conversation, None, generation=False)

    async def _run(
        self, prompt_ids: list[int], params: Any, request: GenerationRequest, keep_ids=False
    ) -> Generation:
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        started = time.monotonic()
        prompt = TokensPrompt(prompt_token_ids=prompt_ids)
        final = None
        try:
            if self.stepped:
                final = await self.engine.generate(prompt, params, request.request_id)
            else:
                async for output in self.engine.generate(prompt, params, request.request_id):
                    final = output
        except EngineDeadError as exc:
            raise EngineDead(str(exc)) from exc
        except RuntimeError as exc:
            if self.stepped and self.engine.error is not None:
                raise EngineDead(str(exc)) from exc
            raise
        assert final is not None, "vLLM returned no output"
        completion = final.outputs[0]
        token_ids = list(completion.token_ids)
        logprobs = None
        if completion.logprobs is not None:
            logprobs = [
                float(step[tok].logprob)
                for step, tok in zip(completion.logprobs, token_ids, strict=False)
            ]
        metrics = getattr(final, "metrics", None)
        ttft = getattr(metrics, "first_token_latency", None)
        want_ids = keep_ids or bool(request.sampling.get("return_token_ids"))
        return Generation(
            text=completion.text,
            finish_reason=str(completion.finish_reason or "unknown"),
            prompt_tokens=len(final.prompt_token_ids or ()),
            output_tokens=len(token_ids),
            prompt_token_ids=list(final.prompt_token_ids) if want_ids else None,
            output_token_ids=token_ids if want_ids else None,
            output_logprobs=logprobs,
            latency_s=time.monotonic() - started,
            ttft_s=float(ttft) if ttft else None,
        )

    def _sampling_params(self, sampling: dict[str, Any], prompt_len: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        max_tokens = sampling.get("max_tokens") or 256
        top_k = sampling.get("top_k")
        return SamplingParams(
            n=1,
            temperature=sampling.get("temperature", 1.0),
            top_p=sampling.get("top_p", 1.0),
            top_k=top_k if top_k and top_k > 0 else 0,
            min_p=sampling.get("min_p") or 0.0,
            # Never ask for more than the context leaves: vLLM would refuse the request.
            max_tokens=max(1, min(max_tokens, self.max_model_len - prompt_len)),
            min_tokens=sampling.get("min_tokens") or 0,
            stop=sampling.get("stop") or None,
            seed=sampling.get("seed"),
            presence_penalty=sampling.get("presence_penalty") or 0.0,
            frequency_penalty=sampling.get("frequency_penalty") or 0.0,
            repetition_penalty=sampling.get("repetition_penalty") or 1.0,
            logprobs=0 if sampling.get("logprobs") else None,
            # Only the finished rollout is needed: no per-step output objects.
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def describe(self) -> dict[str, Any]:
        return effective_config(self.engine.vllm_config)

    def stats(self) -> dict[str, float]:
        try:
            return {"requests_running": float(self.engine.get_num_unfinished_requests())}
        except Exception:  # stats are best effort
            return {}

    def close(self) -> None:
        if self.stepped:
            self.engine.shutdown()
            return
        # Stop the output handler before the engine core: vLLM's own shutdown kills the
        # core first, and the handler then logs a spurious "EngineDeadError".
        handler = getattr(self.engine, "output_handler", None)
        if handler is not None and not handler.done():
            loop = handler.get_loop()

            async def cancel() -> None:
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)

            if loop.is_running():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(cancel(), loop).result(timeout=5)
        self.engine.shutdown()


def effective_config(vllm_config: Any) -> dict[str, Any]:
    """What decides an engine's speed, from vLLM's own effective config."""
    model, scheduler = vllm_config.model_config, vllm_config.scheduler_config
    cache = vllm_config.cache_config
    return {
        "dtype": str(model.dtype).removeprefix("torch."),
        "max_model_len": model.max_model_len,
        "max_num_seqs": scheduler.max_num_seqs,
        "max_num_batched_tokens": scheduler.max_num_batched_tokens,
        "chunked_prefill": scheduler.enable_chunked_prefill,
        "prefix_caching": cache.enable_prefix_caching,
        "block_size": cache.block_size,
        "enforce_eager": model.enforce_eager,
        "cpu_kvcache_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "niceness": os.nice(0),
    }


CPU_BLOCK_SIZE = 32
#: Every CPU engine's, a job's or a Serve app's (their own engine_kwargs win). Eager:
#: torch.compile costs 20-45 s at start. No chunked prefill: with seeded requests it kills
#: the CPU engine. KV blocks of 32 tokens, not vLLM-CPU's 128: prefix caching reuses whole
#: blocks only, so an agent's next turn recomputed up to 127 tokens it had seen (agent
#: turns 1.195x, rows sharing a system prompt 1.14x: docs/benchmarks.md).
CPU_ENGINE_ARGS: dict[str, Any] = {
    "enforce_eager": True,
    "enable_chunked_prefill": False,
    "block_size": CPU_BLOCK_SIZE,
}


def engine_kwargs(
    config: VLLMEngineConfig, device: str, path: str, metrics: bool
) -> dict[str, Any]:
    """vLLM's engine arguments for this block: what every rollout-ray engine gets (and
    what benchmarks give raw vLLM, so both sides run the same engine)."""
    kwargs: dict[str, Any] = {
        "model": path,
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "max_model_len": config.max_model_len,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        # vLLM's own metrics (vllm:*), exported through Ray when inside Ray.
        "disable_log_stats": not metrics,
        "use_tqdm_on_load": False,
        # A row's repeats are submitted together and share its prompt: the prompt's
        # KV blocks, cached as the first repeat is scheduled, serve the others in
        # the same step (vLLM's own `n` fans out into such requests, seeds seed + i,
        # as ours are). vLLM's default; set so a repeat's prefill is never redone.
        "enable_prefix_caching": True,
    }
    if config.max_num_seqs:
        kwargs["max_num_seqs"] = config.max_num_seqs
    # vLLM seeds its sampler with 0 at every start: unseeded requests would then
    # sample the same rollouts in every run. Each start draws its own seed instead
    # (sampling.seed still makes rollouts reproducible, request by request).
    kwargs["seed"] = int.from_bytes(os.urandom(4), "big") >> 1
    # Forced tool calls (tool_choice required or named) as compact JSON: no tokens
    # spent on whitespace, which a weak model can fill its budget with. (What
    # xgrammar can't enforce of a schema is loosened first: chat/forced.py.)
    from vllm.config import StructuredOutputsConfig

    kwargs["structured_outputs_config"] = StructuredOutputsConfig(
        backend="xgrammar", disable_any_whitespace=True
    )
    if device == "cpu":
        kwargs.update(CPU_ENGINE_ARGS)
    if config.tensor_parallel_size > 1:
        kwargs["distributed_executor_backend"] = "ray"
    kwargs.update(config.engine_kwargs)
    return kwargs


def refuse_images(messages: list[dict[str, Any]]) -> None:
    """Rows with images fail here, with the way out: this engine renders prompts with
    the tokenizer's chat template, which would print image parts as text.

    Raises:
        RowError: a message has image parts (stage `prompt`, terminal).
    """
    if has_images(messages):
        raise RowError(
            "the row has images (input_image / image_url parts): the vllm engine runs "
            "text prompts only; use the openai engine with a vision model's endpoint "
            "(docs/inputs.md#images)",
            "prompt",
        )


def ray_stat_loggers() -> list | None:
    """vLLM's own metrics (vllm:*) through Ray's metrics API when inside a Ray worker,
    as ray.data.llm does: the dashboard and Ray's Prometheus endpoint show them as
    ray_vllm_*. Outside Ray, vLLM's default loggers."""
    from rollout_ray.run.ray_facts import in_ray

    if not in_ray():
        return None
    try:
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger
    except ImportError:
        return None
    return [RayPrometheusStatLogger]


def checkpoint_version(path: str) -> str:
    """What identifies a checkpoint: the folder a path resolves to (symlinks followed)
    and when its weights and config last changed."""
    if not os.path.isdir(path):
        return path  # a hub name: its version is its name
    real = os.path.realpath(path)
    stamps = [
        os.stat(os.path.join(real, name)).st_mtime_ns
        for name in os.listdir(real)
        if name.endswith((".safetensors", ".bin", ".json"))
    ]
    return f"{os.path.basename(real)}@{max(stamps, default=0)}"


def build(job: JobConfig, block: VLLMEngineConfig, device: str) -> VLLMEngine:
    return VLLMEngine(job.model, block, device, metrics=job.metrics)


register_engine(
    VLLMEngineConfig,
    build=build,
    placement=placement,
    prepare=prepare,
    explain=explain_start_failure,
)
