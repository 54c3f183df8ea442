"""Turn a job's committed rollouts into training files (SFT, DPO, RL, a weighted mix)
and eval metrics."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rollout_ray.exports.dpo import export_dpo
from rollout_ray.exports.empty import NothingToExport, refuse_empty
from rollout_ray.exports.evaluation import default_ks, eval_table, export_eval, pass_at_k
from rollout_ray.exports.gym import export_gym
from rollout_ray.exports.mix import export_mix
from rollout_ray.exports.rl import export_rl
from rollout_ray.exports.sft import export_sft
from rollout_ray.exports.writer import ExportReport

#: Every export kind and the function that runs it; `export` dispatches through this.
EXPORTERS: dict[str, Callable[..., ExportReport]] = {
    "sft": export_sft,
    "dpo": export_dpo,
    "rl": export_rl,
    "eval": export_eval,
    "mix": export_mix,
    "gym": export_gym,
}

__all__ = [
    "EXPORTERS",
    "ExportReport",
    "NothingToExport",
    "default_ks",
    "eval_table",
    "export",
    "export_dpo",
    "export_eval",
    "export_gym",
    "export_mix",
    "export_rl",
    "export_sft",
    "options",
    "pass_at_k",
]


def options(kind: str) -> dict[str, Any]:
    """The options of an export kind and their defaults (for help texts and checks)."""
    exporter = _exporter(kind)
    parameters = inspect.signature(exporter).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def export(kind: str, output: str | list[str], dest: str, **options_: Any) -> ExportReport:
    """Export the committed rollouts of the job at `output` (or of several outputs) to `dest`.

    kind is one of EXPORTERS; options are that kind's keyword options. Unknown kinds or
    options raise ValueError naming what is allowed, before anything is read.

    Raises:
        NothingToExport: no row would be written; the message says why (no rewards,
            nothing reaching the threshold, no pairs); `dest` is left as it was.
    """
    allowed = options(kind)
    unknown = sorted(set(options_) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for the {kind} export; "
            f"it takes: {', '.join(allowed)}"
        )
    return refuse_empty(_exporter(kind)(output, dest, **options_))


def _exporter(kind: str) -> Callable[..., ExportReport]:
    if kind not in EXPORTERS:
        raise ValueError(f"unknown export kind {kind!r}; choose one of {', '.join(EXPORTERS)}")
    return EXPORTERS[kind]
