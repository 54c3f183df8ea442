"""Eval export: pass@k, majority@k, mean reward and no-answer rate per dataset, as JSON."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rollout_ray import storage
from rollout_ray.exports.writer import (
    ExportReport,
    Groups,
    Outputs,
    check_datasets,
    check_number,
    group_by_task,
    rewards,
    shards,
)

if TYPE_CHECKING:
    from rollout_ray.views.tables import Grid

COLUMNS = ["dataset", "task_id", "rollout_index", "reward", "verifier_details"]
ANSWER_KEY = "extracted_answer"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Python integers are exact and int / int is correctly rounded, so this has none of
    the overflow or cancellation the product form guards against.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def default_ks(max_n: int) -> list[int]:
    """Powers of two up to n, plus n: every k for n = 4, a short list for n = 100."""
    ks = {1 << i for i in range(max_n.bit_length()) if 1 << i <= max_n}
    return sorted(ks | {max_n}) if max_n >= 1 else []


@dataclass
class _Dataset:
    """Per-task figures of one dataset, gathered shard by shard (one value per task)."""

    rollouts: int = 0
    unscored: int = 0
    answers_reported: bool = False
    n: list[np.ndarray] = field(default_factory=list)
    c: list[np.ndarray] = field(default_factory=list)
    mean_reward: list[np.ndarray] = field(default_factory=list)
    no_answer: list[np.ndarray] = field(default_factory=list)
    majority: dict[int, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))


def export_eval(
    output: Outputs,
    dest: str,
    *,
    datasets: list[str] | None = None,
    ks: list[int] | None = None,
    correct_threshold: float = 0.5,
) -> ExportReport:
    """Compute eval metrics per dataset, write them as JSON to `dest` and return them.

    Every metric is the mean over tasks of a per-task value, with stderr =
    std(ddof=1) / sqrt(tasks); values are fractions, not percent.
      correct: reward >= correct_threshold. Null rewards are unscored: they count only
        in no_answer_rate. A task's n is its number of scored rollouts, c its correct.
      pass@k: `pass_at_k(n, c, k)`; tasks with n < k are excluded (`tasks_excluded`).
      majority@k: `_majority` over the task's first k scored rollouts by rollout_index;
        tasks with n < k excluded. Left out when the verifier never reports
        extracted_answer (no_answer_rate is then null too).
      mean_reward: the task's mean scored reward (tasks with none are excluded).
      no_answer_rate: the task's share of rollouts without an extracted_answer.
    ks defaults to `default_ks(max n)` for each dataset.
    """
    if not dest.lower().endswith(".json"):
        raise ValueError(f"eval destination {dest!r} must end in .json")
    metrics = eval_metrics(output, datasets=datasets, ks=ks, correct_threshold=correct_threshold)
    scored = [d for d in metrics["datasets"].values() if d["rollouts"] > d["unscored_rollouts"]]
    if scored:  # no reward anywhere: nothing to measure, nothing written (exports.empty)
        storage.write_json_atomic(dest, metrics)
    return ExportReport(
        kind="eval",
        dest=dest,
        rows_written=len(metrics["datasets"]) if scored else 0,
        tasks_seen=sum(d["tasks"] for d in metrics["datasets"].values()),
        extra=metrics,
    )


def eval_metrics(
    output: str,
    *,
    datasets: list[str] | None = None,
    ks: list[int] | None = None,
    correct_threshold: float = 0.5,
) -> dict[str, Any]:
    """The metrics `export_eval` writes (see there), without writing them."""
    threshold = check_number("correct_threshold", correct_threshold)
    ks = _check_ks(ks)
    datasets = check_datasets(output, datasets)
    found: dict[str, _Dataset] = defaultdict(_Dataset)
    for shard in shards(output, datasets, COLUMNS):
        for name in pc.unique(shard["dataset"]).to_pylist():
            part = shard.filter(pc.equal(shard["dataset"], name))
            _gather(found[name], group_by_task(part), threshold, ks)
    return {
        "correct_threshold": threshold,
        "datasets": {name: _summarize(found[name], ks) for name in sorted(found)},
    }


def _check_ks(ks: list[int] | None) -> list[int] | None:
    if ks is None:
        return None
    if isinstance(ks, int | str) or not ks:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {ks!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"ks must be positive integers, got {k!r}")
    return sorted(set(ks))


def _answers(details: pa.ChunkedArray) -> tuple[np.ndarray, bool]:
    """(answer code per row, -1 for none; whether any row reports the answer key).

    Answers are compared as stripped strings (JSON for non-strings); an empty one is
    no answer. Rows are parsed only when their details mention the key.
    """
    answers: list[str | None] = []
    reported = False
    for text in details.to_pylist():
        answer = None
        if text and ANSWER_KEY in text:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and ANSWER_KEY in parsed:
                reported = True
                value = parsed[ANSWER_KEY]
                if value is not None:
                    answer = value.strip() if isinstance(value, str) else json.dumps(value)
        answers.append(answer or None)
    codes = pc.dictionary_encode(pa.array(answers, pa.string())).indices
    return pc.fill_null(codes, -1).to_numpy().astype(np.int64), reported


def _gather(acc: _Dataset, groups: Groups, threshold: float, ks: list[int] | None) -> None:
    """Add one shard's tasks of one dataset to `acc`, vectorized over rows."""
    gid = groups.gid
    reward = rewards(groups.table)
    scored = ~np.isnan(reward)
    correct = scored & (reward >= threshold)
    code, reported = _answers(groups.table["verifier_details"])
    n = groups.reduce(np.add, scored.astype(np.int64))
    acc.rollouts += len(reward)
    acc.unscored += int((~scored).sum())
    acc.answers_reported |= reported
    acc.n.append(n)
    acc.c.append(groups.reduce(np.add, correct.astype(np.int64)))
    with np.errstate(invalid="ignore", divide="ignore"):
        acc.mean_reward.append(groups.reduce(np.add, np.where(scored, reward, 0.0)) / n)
    acc.no_answer.append(groups.reduce(np.add, (code < 0).astype(np.float64)) / groups.sizes)
    # Position of each scored rollout among its task's scored ones, by rollout_index.
    seen = np.cumsum(scored)
    rank = seen - (seen[groups.starts] - scored[groups.starts])[gid] - 1
    candidates = ks or sorted(set(default_ks(int(n.max()))) | set(n[n > 0].tolist()))
    for k in candidates:
        eligible = n >= k
        if eligible.any():
            votes = scored & (rank < k) & (code >= 0) & eligible[gid]
            acc.majority[k].append(_majority(gid[votes], code[votes], correct[votes], n)[eligible])


def _majority(gid: np.ndarray, code: np.ndarray, correct: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-task majority score from the votes (task, answer, correct): the correctness of
    the most common answer; on a tie, the mean correctness of the tied answers (NeMo
    Gym's fractional credit); 0 for a task without answers. An answer's correctness is
    the mean over its votes (it is 0 or 1 whenever the verifier is consistent)."""
    tasks = len(n)
    width = int(code.max()) + 1 if len(code) else 1
    keys, inverse, counts = np.unique(gid * width + code, return_inverse=True, return_counts=True)
    accuracy = np.bincount(inverse, weights=correct.astype(np.float64)) / counts
    task = keys // width
    top = np.zeros(tasks, dtype=np.int64)
    np.maximum.at(top, task, counts)
    tied = (counts == top[task]).astype(np.float64)
    credit = np.bincount(task, weights=accuracy * tied, minlength=tasks)
    return credit / np.maximum(np.bincount(task, weights=tied, minlength=tasks), 1.0)


def _summary(values: np.ndarray, excluded: int | None = None) -> dict[str, Any]:
    m = len(values)
    result: dict[str, Any] = {
        "value": float(values.mean()) if m else None,
        "stderr": float(values.std(ddof=1) / math.sqrt(m)) if m >= 2 else None,
        "tasks": m,
    }
    if excluded is not None:
        result["tasks_excluded"] = excluded
    return result


def _summarize(acc: _Dataset, ks: list[int] | None) -> dict[str, Any]:
    n = np.concatenate(acc.n)
    c = np.concatenate(acc.c)
    mean_reward = np.concatenate(acc.mean_reward)
    chosen = ks or default_ks(int(n.max()))
    metrics: dict[str, Any] = {
        "mean_reward": _summary(mean_reward[n > 0], excluded=int((n == 0).sum())),
        "no_answer_rate": (
            _summary(np.concatenate(acc.no_answer)) if acc.answers_reported else None
        ),
    }
    pairs = np.stack([n, c], axis=1)
    for k in chosen:
        eligible = n >= k
        unique, inverse = np.unique(pairs[eligible], axis=0, return_inverse=True)
        table = np.array([pass_at_k(int(a), int(b), k) for a, b in unique], dtype=np.float64)
        metrics[f"pass@{k}"] = _summary(table[inverse.reshape(-1)], int((~eligible).sum()))
    if acc.answers_reported:
        for k in chosen:
            parts = acc.majority.get(k, [])
            values = np.concatenate(parts) if parts else np.zeros(0)
            metrics[f"majority@{k}"] = _summary(values, int((n < k).sum()))
    return {
        "tasks": len(n),
        "rollouts": acc.rollouts,
        "unscored_rollouts": acc.unscored,
        "ks": chosen,
        "answers_reported": acc.answers_reported,
        "metrics": metrics,
    }


def eval_table(metrics: dict[str, Any]) -> Grid:
    """The metrics of `export_eval` as a grid, one row per dataset and metric."""
    from rollout_ray.views.tables import Grid

    grid = Grid(
        f"eval (correct: reward >= {metrics['correct_threshold']})",
        ["dataset", "metric", "value", "± stderr", "tasks"],
        names=2,
    )
    for dataset, found in metrics["datasets"].items():
        for metric, figure in found["metrics"].items():
            if figure is None:
                grid.add_row(dataset, metric, "n/a", "", "")
                continue
            excluded = figure.get("tasks_excluded")
            tasks = f"{figure['tasks']}" + (f" ({excluded} excluded)" if excluded else "")
            grid.add_row(dataset, metric, _fmt(figure["value"]), _fmt(figure["stderr"]), tasks)
    return grid


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
