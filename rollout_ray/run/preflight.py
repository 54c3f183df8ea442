"""What a job's config names that can be checked on this machine before anything is
planned or started: the model folder, the API key variables, each dataset's inputs.

Found late, these cost minutes and leave things behind: a model path with a typo went
on to vLLM, which took it for a hub name and failed after about two minutes, with a
planned output left behind; an unset key variable sent `Bearer EMPTY` and a job whose
endpoint was down retried for minutes and ended "done" with no rollouts. Every problem
found is reported at once, each naming its config key (exit code 2, nothing ran).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rollout_ray.config import DEFAULT_MODEL, JobConfig
from rollout_ray.config.engines import VLLMEngineConfig
from rollout_ray.errors import ConfigError, refuse
from rollout_ray.inputs.sources import discover

#: Values of HF_HUB_OFFLINE that huggingface_hub takes as on.
_ON = {"1", "on", "yes", "true"}


def check_job(config: JobConfig, environ: Mapping[str, str] | None = None) -> None:
    """Refuse the job, before anything starts, for what this machine can tell is wrong.

    Raises:
        ConfigError: every problem found, each naming the config key that fixes it.
    """
    environ = os.environ if environ is None else environ
    problems = unset_key_variables(config, environ)
    if isinstance(config.engine, VLLMEngineConfig):
        problems += model_problems(config.model, environ)
    refuse(problems + input_problems(config))


def input_problems(config: JobConfig) -> list[str]:
    """Each dataset whose inputs can't be found or read as rows (no file matches its
    path, a format that can't be told, a compressed Parquet file), naming its key."""
    problems, checked = [], set()
    for i, dataset in enumerate(config.datasets):
        index = dataset.sweep_origin if dataset.sweep_origin is not None else i
        if index in checked:
            continue  # a sweep's variants share their dataset's inputs
        checked.add(index)
        try:
            discover(dataset)
        except ConfigError as exc:
            problems.append(f"datasets.{index}.path: {exc}")
    return problems


def unset_key_variables(config: JobConfig, environ: Mapping[str, str]) -> list[str]:
    """A problem for each API key variable the config names that is not set here."""
    named: dict[str, str] = {}  # config key -> variable
    engine_key = getattr(config.engine, "api_key_env", None)
    if engine_key:
        named["engine.api_key_env"] = engine_key
    for i, dataset in enumerate(config.datasets):
        variable = getattr(dataset.verifier, "api_key_env", None)
        if variable:  # sweep variants share their dataset's verifier: one key each
            index = dataset.sweep_origin if dataset.sweep_origin is not None else i
            named.setdefault(f"datasets.{index}.verifier.api_key_env", variable)
    return [unset(key, variable) for key, variable in named.items() if not environ.get(variable)]


def unset(key: str, variable: str) -> str:
    """The problem of a key variable `variable`, named by config key `key`, not set."""
    return (
        f"{key}: the environment variable {variable} is not set here; set it to the key "
        f"(export {variable}=...), or set {key}: null for an endpoint that takes no key"
    )


def model_problems(model: str, environ: Mapping[str, str]) -> list[str]:
    """A problem when `model` is clearly a local path with nothing there, or a hub name
    that can't be had: not downloaded, and HF_HUB_OFFLINE forbids downloading it.

    Local: starts with `/`, `./`, `../` or `~`, or exists relative to here, or has
    more than one `/` (hub names are `name` or `org/name`). URIs (`s3://...`) and the
    embedded model's name are left to the engine.
    """
    if model == DEFAULT_MODEL or "://" in model:
        return []
    path = Path(model).expanduser()
    if path.exists():
        return []
    if model.startswith(("/", "./", "../", "~")) or model in (".", "..") or model.count("/") > 1:
        return [
            f"model: {model!r} is a local path and nothing is there ({path.absolute()}); "
            "point `model` at an HF model folder, or give a hub name (org/name)"
        ]
    if environ.get("HF_HUB_OFFLINE", "").lower() in _ON and not _in_hub_cache(model):
        return [
            f"model: {model!r} is not a local folder and not in the Hugging Face cache, and "
            f"HF_HUB_OFFLINE={environ['HF_HUB_OFFLINE']} forbids downloading it; download it "
            f"first (`hf download {model}`), unset HF_HUB_OFFLINE, or point `model` at a folder"
        ]
    return []


def _in_hub_cache(model: str) -> bool:
    """Whether the hub's cache holds `model` (its config.json); True when that can't be
    told (huggingface_hub not installed, a name it won't take): vLLM will say."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:
        return True
