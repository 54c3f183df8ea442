"""The config reference, rendered from the pydantic models' own field descriptions.

docs/config-reference.md is this module's output (`rollout-ray config-reference`), and
a test keeps the two equal, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rollout_ray.config import (
    ENGINE_CONFIGS,
    DatasetConfig,
    JobConfig,
    VerifierConfig,
    free_on_resume,
    load_engine_plugins,
)
from rollout_ray.config.agents import AgentConfig
from rollout_ray.config.blocks import set_by_rollout_ray


def render_reference() -> str:
    """The whole reference as Markdown."""
    load_engine_plugins()  # installed engine kinds are documented with the built-in ones
    verifiers = [m for m in typing.get_args(typing.get_args(VerifierConfig)[0])]
    sections = [
        ("Job (top level)", JobConfig, ""),
        ("datasets[]", DatasetConfig, "datasets.N."),
        *[(f"engine (kind: {kind})", model, "engine.") for kind, model in ENGINE_CONFIGS.items()],
        (
            "sampling (job, dataset or row)",
            JobConfig.model_fields["sampling"].annotation,
            "sampling.",
        ),
        *[
            (f"verifier (kind: {m.model_fields['kind'].default})", m, "datasets.N.verifier.")
            for m in verifiers
        ],
        ("agent (datasets[].agent)", AgentConfig, "datasets.N.agent."),
        ("serve", _inner(JobConfig.model_fields["serve"].annotation), "serve."),
        ("cost", _inner(JobConfig.model_fields["cost"].annotation), "cost."),
        ("tracking", _inner(JobConfig.model_fields["tracking"].annotation), "tracking."),
    ]
    lines = [
        "# Config reference",
        "",
        "Generated from the code by `rollout-ray config-reference`; every key can also be",
        "set on the command line as a dotted override (`sampling.temperature=0.2`).",
        'Unknown keys are errors. "On resume": whether a resumed job may run with another',
        "value (it changes how the job runs, not what it writes) or is refused until",
        "`--force-new-config`.",
    ]
    for title, model, prefix in sections:
        lines += [
            "",
            f"## {title}",
            "",
            _first_line(model.__doc__),
            "",
            "| key | type | default | on resume | meaning |",
            "|---|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            if set_by_rollout_ray(field):
                continue
            key = field.alias or name
            lines.append(
                f"| `{prefix}{key}` | {_type(field.annotation)} | {_default(field)} | "
                f"{'may change' if free_on_resume(field) else 'refused if changed'} | "
                f"{(field.description or '').replace('|', '/')} |"
            )
    return "\n".join(lines) + "\n"


def _inner(annotation: Any) -> type[BaseModel]:
    return next(a for a in typing.get_args(annotation) if isinstance(a, type))


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _type(annotation: Any) -> str:
    """A type as a reader wants it: literal choices, unions with 'or', no module paths."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " / ".join(json.dumps(v) for v in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        kinds = list(dict.fromkeys(_type(a) for a in args if a is not type(None)))
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is not None:
        inner = ", ".join(_type(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "block"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return (
            f"`{json.dumps(field.default_factory())}`"
            if not isinstance(field.default_factory(), BaseModel)
            else "(block)"
        )
    if field.default is PydanticUndefined:
        return "required"
    return f"`{json.dumps(field.default)}`"
