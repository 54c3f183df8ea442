"""Loading a config: YAML, dotted command-line overrides, and errors that name the
key and what it allows."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rollout_ray.config.blocks import set_by_rollout_ray
from rollout_ray.config.engines import ENGINE_CONFIGS
from rollout_ray.config.job import JobConfig, quickstart_dict
from rollout_ray.config.verifiers import VerifierConfig
from rollout_ray.errors import ConfigError


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.0.c=value` into its key path and YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {item!r} has an empty key")
    if raw.lstrip().startswith("#"):  # YAML would read a comment: `stop=###` as null
        return path, raw.strip()
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
        raise ConfigError(format_validation_error(exc, origin, overrides)) from None


#: Fields holding a discriminated union, and each member by its `kind` tag.
_UNION_FIELDS = {"engine", "verifier"}


_VERIFIER_UNION = typing.get_args(VerifierConfig)[0]


def _tagged() -> dict[str, type[BaseModel]]:
    """Each member of those unions by its `kind` (engine kinds may be registered later)."""
    return {
        **ENGINE_CONFIGS,
        **{m.model_fields["kind"].default: m for m in typing.get_args(_VERIFIER_UNION)},
    }


def format_validation_error(
    exc: ValidationError, origin: str, overrides: list[str] | tuple[str, ...] = ()
) -> str:
    """Turn pydantic's errors into lines that name the key, where it was written (the
    config file or a command-line override) and what it allows: a near miss of an
    allowed key is offered first ("did you mean"), as a typo is the usual cause."""
    problems = [_problem(error, overrides) for error in exc.errors()]
    if problems and all(source for _, source in problems):
        lines = [f"invalid command-line override (config: {origin}):"]
    else:
        lines = [f"invalid config in {origin}:"]
    lines += [f"  {text}" for text, _ in problems]
    return "\n".join(lines)


def _problem(error: Any, overrides: list[str] | tuple[str, ...]) -> tuple[str, str | None]:
    """One error as a line, and the override it came from (None: the config itself)."""
    # Discriminated unions add the tag to the location: engine.vllm.foo -> engine.foo
    loc = [
        str(p)
        for i, p in enumerate(error["loc"])
        if not (i and error["loc"][i - 1] in _UNION_FIELDS and p in _tagged())
    ]
    key = ".".join(loc) or "(top level)"
    source = _override_for(loc, overrides)
    where = f" (command-line override {source})" if source else ""
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(error["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6) if loc else []
        hint = f"; did you mean {close[0]}?" if close else ""
        hint += f" allowed here: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{where}{hint}", source
    if error["type"] == "missing":
        return f"{key}: required but missing{where}", source
    return f"{key}: {error['msg']} (got {error.get('input')!r}){where}", source


def _override_for(loc: list[str], overrides: list[str] | tuple[str, ...]) -> str | None:
    """The command-line override that set the value at `loc` (or a block holding it)."""
    for item in reversed(overrides):  # the last override of a key is the one that holds
        path = [p for p in item.split("=", 1)[0].strip().split(".") if p]
        if path and loc[: len(path)] == path:
            return item
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names a user may write in the model found at `loc` inside JobConfig."""
    model: Any = JobConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return []
        field = model.model_fields.get(part)
        # A discriminated union puts its tag in the location: engine.vllm.<key>
        model = _model_of(field.annotation) if field else _tagged().get(part)
    if model is None:
        return []
    return sorted(
        name for name, field in model.model_fields.items() if not set_by_rollout_ray(field)
    )


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `list[X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
