"""An export with no row to write is refused, saying why, instead of writing an empty
file: `export mix --threshold 1` over an output where one dataset had no rewards wrote
an empty mix and exited 0, and nothing said the file was useless.

Each kind's report already counts what it skipped; `why_empty` turns those counts
into the reason (no rewards, nothing reaching the threshold, no pairs). The
destination is left as it was (the writers don't put an empty file in place).
"""

from __future__ import annotations

from typing import Any

from rollout_ray.errors import RolloutRayError
from rollout_ray.exports.writer import ExportReport


class NothingToExport(RolloutRayError):
    """The export would write no row; the message says why (exit code 2, as for any
    request refused before anything was written)."""


def refuse_empty(report: ExportReport) -> ExportReport:
    """`report`, unless its export wrote no row anywhere.

    Raises:
        NothingToExport: why nothing was written.
    """
    if report.rows_written or report.extra.get("val_rows"):
        return report
    raise NothingToExport(f"nothing to export to {report.dest} (not written): {why_empty(report)}")


def why_empty(report: ExportReport) -> str:
    extra = report.extra
    if not report.tasks_seen and report.kind != "mix":
        return "the output has no committed rollouts"
    reason = {"sft": _sft, "dpo": _dpo, "rl": _rl, "eval": _eval, "mix": _mix}.get(report.kind)
    return reason(extra) if reason else f"0 rows from {report.tasks_seen:,} tasks"


def _no_rewards(count: int) -> str:
    return (
        f"none of its {count:,} rollouts has a reward (the job ran without a verifier? "
        "`rollout-ray verify` scores committed rollouts into a new output)"
    )


def _sft(extra: dict[str, Any]) -> str:
    seen, unscored = extra["rollouts_seen"], extra["skipped_unscored"]
    if unscored == seen:
        return _no_rewards(seen)
    highest = extra.get("highest_reward")
    return (
        f"0 of {seen:,} rollouts reach threshold {extra['threshold']:g} (highest reward "
        f"{highest:g}; {unscored:,} without a reward)"
    )


def _dpo(extra: dict[str, Any]) -> str:
    return (
        f"no task makes a pair: of {extra['tasks_seen']:,} tasks, "
        f"{extra['skipped_all_equal']:,} have equal rewards, "
        f"{extra['skipped_gap_below_min']:,} a gap below min_gap {extra['min_gap']:g}, and "
        f"{extra['skipped_fewer_than_2_scored']:,} fewer than 2 rollouts with a reward"
    )


def _rl(extra: dict[str, Any]) -> str:
    return _no_rewards(extra["skipped_unscored"])


def _eval(extra: dict[str, Any]) -> str:
    datasets = extra.get("datasets") or {}
    names = ", ".join(sorted(datasets))
    return f"no dataset has a rollout with a reward ({names}): there is nothing to score"


def _mix(extra: dict[str, Any]) -> str:
    threshold = extra.get("threshold")
    reasons = []
    for name, count in extra["available"].items():
        if count:
            continue
        scored, highest = extra["scored"][name], extra["highest_reward"][name]
        if threshold is not None and not scored:
            reasons.append(f"dataset {name} has no rewards")
        elif threshold is not None:
            reasons.append(
                f"dataset {name}: 0 of its rollouts reach threshold {threshold:g} "
                f"(highest reward {highest:g})"
            )
        else:
            reasons.append(f"dataset {name} has no committed rollouts")
    if not reasons:
        return f"the mix's total is {sum(extra['taken'].values())}"
    return "every dataset must offer rows at its share of the mix, and " + "; ".join(reasons)
