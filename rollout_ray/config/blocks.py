"""Config blocks that stand alone: sampling, engines, serving, prices."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

#: Marks a field whose value may differ when a job is resumed: it changes how a job
#: runs (actors, budgets, ports, retries), not what it writes. Every other field is part
#: of the resume fingerprint, so changing it refuses a resume (see output/plan.py).
RESUME_FREE: dict[str, Any] = {"resume": "free"}


def free_on_resume(field: FieldInfo) -> bool:
    """Whether a field may change between runs of one job."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("resume") == "free"


def added_later(before: Any) -> dict[str, Any]:
    """Marks a field added after outputs were written without it: at `before` (what the
    code did before the field existed) it is left out of the resume fingerprint, so those
    outputs still resume; any other value is part of it, like every field."""
    return {"before": before}


def fingerprint_omits(field: FieldInfo, value: Any) -> bool:
    """Whether a field at `value` is left out of the fingerprint (see added_later)."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and "before" in extra and value == extra["before"]


#: Marks a field rollout-ray sets itself (sweep expansion, the command line's record):
#: a user never writes it, so the reference and unknown-key errors don't offer it.
SET_BY_ROLLOUT_RAY: dict[str, Any] = {"internal": True}


def set_by_rollout_ray(field: FieldInfo) -> bool:
    """Whether a field is rollout-ray's own bookkeeping, not a setting."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("internal") is True


class _Strict(BaseModel):
    """Base for every config block: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_INT32_MAX = 2**31 - 1
#: Rollout i samples with seed + i, and seeds are stored as 64-bit integers.
_SEED_MAX = 2**63 - 1 - 2**20


def sampling_conflict(values: dict[str, Any]) -> str | None:
    """What no engine can sample with, in values each valid alone (and in the merge of
    a job's, a dataset's and a row's): said before the first request, not by an engine
    refusing it on every try."""
    low, high = values.get("min_tokens"), values.get("max_tokens")
    if low and high is not None and low > high:
        return f"min_tokens ({low}) is above max_tokens ({high})"
    if any(stop == "" for stop in values.get("stop") or ()):
        return "stop holds an empty string"
    return None


class SamplingConfig(_Strict):
    """Sampling parameters. Unset fields inherit from the level above
    (job -> dataset -> row); command-line overrides win over all of them."""

    # inf or nan (`temperature: .inf`) passes a `ge` bound; every engine refuses it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    temperature: float | None = Field(None, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(
        None, ge=-1, le=_INT32_MAX, description="Top-k cut-off; -1 or 0 disables it."
    )
    min_p: float | None = Field(None, ge=0, le=1, description="Minimum token probability.")
    max_tokens: int | None = Field(
        None, ge=1, le=_INT32_MAX, description="Maximum tokens generated per rollout."
    )
    min_tokens: int | None = Field(
        None, ge=0, le=_INT32_MAX, description="Minimum tokens before a stop may end."
    )
    stop: list[str] | None = Field(
        None, description="Strings that end generation (not included); one string is a list of one."
    )
    seed: int | None = Field(
        None,
        ge=-(2**63),
        le=_SEED_MAX,
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
    chat_template_kwargs: dict[str, Any] | None = Field(
        None,
        description="Extra arguments of the model's chat template, e.g. {enable_thinking: "
        "false} (vLLM in-process and vLLM servers).",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # as the OpenAI API takes it

    @model_validator(mode="after")
    def _consistent(self) -> SamplingConfig:
        conflict = sampling_conflict(self.model_dump(include={"min_tokens", "max_tokens", "stop"}))
        if conflict:
            raise ValueError(conflict)
        return self

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


class ServeConfig(_Strict):
    """A vLLM model served by Ray Serve as an OpenAI-compatible app (`rollout-ray serve`),
    which several jobs, datasets and sweep settings share."""

    name: str = Field("rollout-ray-llm", description="The Serve application's name.")
    server: Literal["rollout-ray", "ray-serve-llm"] = Field(
        "rollout-ray",
        description="rollout-ray: each replica hosts the jobs' own engine (chat completions "
        "and responses, no streaming); ray-serve-llm: Ray's ray.serve.llm app (streaming, "
        "LoRA; on CPU about 0.8x the throughput).",
    )
    max_ongoing_requests: int = Field(
        1024, ge=1, description="Requests one replica takes at once; the rest queue in Serve."
    )
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
    api_key_env: str | None = Field(
        None,
        description="Environment variable with the key clients must send as a Bearer token "
        "(as vLLM's server takes --api-key); jobs set engine.api_key_env to the same name. "
        "Required to listen on a non-loopback host (unless `serve --insecure`).",
    )
    max_request_bytes: int = Field(
        4 << 20, ge=1024, description="Largest request body a replica reads (413 above)."
    )
    max_messages: int = Field(
        512, ge=1, description="Most messages (or input items) in one request (400 above)."
    )
    max_n: int = Field(16, ge=1, description="Most samples one request may ask for (`n`).")
    tool_parser: str = Field(
        "hermes",
        description="rollout-ray's app: vLLM's tool parser for requests with `tools` "
        "(`tool_choice: auto`), as engine.tool_parser for jobs (hermes, llama3_json, ...).",
    )


class TrackingConfig(_Strict):
    """Send a run's config, progress, final figures, reward histograms and a sample of
    its rollouts to an experiment tracker (the package must be installed: `wandb` or
    `mlflow`/`mlflow-skinny`; neither is a dependency of rollout-ray)."""

    kind: Literal["wandb", "mlflow"] = Field(..., description="The tracker.")
    project: str = Field("rollout-ray", description="W&B project, or MLflow experiment name.")
    run_name: str | None = Field(None, description="Default: the output's last folder name.")
    uri: str | None = Field(
        None,
        description="mlflow: the tracking URI (default: MLflow's, e.g. MLFLOW_TRACKING_URI); "
        "wandb: the folder its run files go to.",
    )
    mode: Literal["online", "offline"] = Field(
        "online", description="wandb: offline writes the run locally (`wandb sync` later)."
    )
    every_s: float = Field(10.0, gt=0, description="Seconds between progress logs.")
    sample_rows: int = Field(
        20, ge=0, description="Rollouts in the sample table logged at the end."
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
