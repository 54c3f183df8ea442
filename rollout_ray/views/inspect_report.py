"""`rollout-ray inspect`: reward spread, per-task signal and readable examples of a job's output."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rollout_ray import storage
from rollout_ray.exports.writer import check_datasets, group_by_task, rewards
from rollout_ray.output import results
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import Commit
from rollout_ray.views.reading import cut, episode_lines, natural_key

#: Labels of the reward histogram: below 0, ten bins over [0, 1] (1 in the last), above 1.
BINS = ["<0"] + [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)] + [">1"]
#: (output tokens, reward) points kept for the scatter plot.
SCATTER_POINTS = 1000
DATA_COLUMNS = ["dataset", "task_id", "rollout_index", "reward", "finish_reason"]
DATA_COLUMNS += ["output_tokens", "prompt_messages", "response_text", "verifier_details"]
DATA_COLUMNS += ["episode"]


@dataclass
class Example:
    """One rollout, cut to what a reader needs to judge its reward."""

    dataset: str
    task_id: str
    rollout_index: int
    reward: float | None
    prompt: str | None
    response: str | None
    extracted_answer: str | None
    expected_answer: str | None
    finish_reason: str | None
    output_tokens: int | None
    #: An agent episode, item by item: "call add {...}", "tool -> ...", "answer ...".
    turns: list[str] | None = None


@dataclass
class TaskStats:
    """Reward across a task's repeats; `scored` counts the rollouts with a reward."""

    dataset: str
    task_id: str
    rollouts: int
    scored: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


@dataclass
class DatasetTotals:
    """A dataset's figures over the rollouts the dataset and task filters select;
    `in_range` counts those of them inside the reward range (all, without one)."""

    dataset: str
    rollouts: int = 0
    tasks: int = 0
    scored: int = 0
    in_range: int = 0
    mean_reward: float | None = None
    mean_output_tokens: float | None = None
    finish_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class InspectReport:
    """Everything the terminal and HTML views show, as plain data.

    Dataset and task filters select the rollouts of every view; the reward range
    selects only the examples (`samples`, `lowest`, `scatter`), so per-task spreads
    and the histograms keep describing whole tasks. `rollouts` counts what the
    dataset and task filters select (the sum of the datasets' `rollouts`, of the
    histograms and `unscored`); `matched`, those of them in the reward range (the sum
    of the datasets' `in_range`).
    """

    output: str
    filters: dict[str, Any]
    rollouts: int
    matched: int
    datasets: list[DatasetTotals]
    histogram: dict[str, int]
    #: The histogram of each dataset: datasets' rewards differ in kind and scale.
    histograms: dict[str, dict[str, int]]
    unscored: int
    signal: dict[str, int]
    task_mean_histogram: dict[str, int]
    tasks: list[TaskStats]
    lowest: list[Example]
    samples: list[Example]
    scatter: list[list[float]]
    failures: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(
    output: str,
    datasets: list[str] | None = None,
    task: str | None = None,
    min_reward: float | None = None,
    max_reward: float | None = None,
    lowest: int = 5,
    sample: int = 5,
    seed: int = 0,
) -> InspectReport:
    """Read the committed output shard by shard (a task's repeats share a shard) and keep
    only aggregates and bounded example sets, so any output size fits in memory.

    `task` matches a task id exactly or as a prefix. Samples are drawn uniformly from
    the matching rollouts with `seed`, so a report is reproducible.

    Raises:
        RolloutRayError: there is no job at `output`.
        ValueError: an unknown dataset, a negative count or an empty reward range.
    """
    if lowest < 0 or sample < 0:
        raise ValueError(f"lowest and sample must be >= 0, got {lowest} and {sample}")
    if min_reward is not None and max_reward is not None and min_reward > max_reward:
        raise ValueError(f"min_reward {min_reward} is above max_reward {max_reward}")
    datasets = check_datasets(output, datasets)
    shards = _shard_pieces(results.committed_pieces(output), datasets)
    answers = _answer_fields(output)
    acc = _Accumulator(task, min_reward, max_reward, lowest, sample, answers, seed)
    for pieces in shards.values():
        tables = [_read(p.data_file, DATA_COLUMNS + answers) for p in pieces if p.data_file]
        acc.add(results.concat([t for t in tables if t.num_rows]))
    filters = {"datasets": datasets, "task": task, "min_reward": min_reward}
    filters["max_reward"] = max_reward
    return acc.report(output, filters, _failures(shards, task))


# ---------------------------------------------------------------------------- reading


def _answer_fields(output: str) -> list[str]:
    """Row fields holding reference answers: `expected_answer` and the verifiers' own."""
    config = storage.read_json(Layout(output).job).get("config") or {}
    names = ["expected_answer"]
    for dataset in config.get("datasets") or []:
        name = ((dataset or {}).get("verifier") or {}).get("answer_field")
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def _read(uri: str, wanted: list[str]) -> pa.Table:
    """A file's `wanted` columns that it has (carried input fields vary by dataset)."""
    return storage.read_parquet(uri, wanted, present_only=True)


def _shard_pieces(pieces: list[Commit], datasets: list[str] | None) -> dict[str, list[Commit]]:
    """Committed pieces by shard: a shard's rounds together hold all of its tasks' rollouts."""
    by_shard: dict[str, list[Commit]] = defaultdict(list)
    for piece in pieces:
        if not datasets or piece.dataset in datasets:
            by_shard[piece.shard_id].append(piece)
    return dict(sorted(by_shard.items()))


def _failures(shards: dict[str, list[dict]], task: str | None) -> list[dict[str, Any]]:
    """Failures by (dataset, stage, error_class). `count` is what the output lacks now:
    terminal failures of any round and every failure of a shard's latest round;
    `retried` counts earlier retryable failures that a later round redid."""
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    names = ["dataset", "task_id", "stage", "error_class", "terminal"]
    for pieces in shards.values():
        latest = max(p.round for p in pieces)
        for piece in pieces:
            if not piece.failures_file:
                continue
            table = _read(piece.failures_file, names).to_pydict()
            for ds, task_id, stage, error, terminal in zip(*(table[n] for n in names), strict=True):
                if task and not (task_id or "").startswith(task):
                    continue
                current = bool(terminal) or piece.round == latest
                counts[(ds, stage or "?", error or "?")][0 if current else 1] += 1
    return [
        {"dataset": k[0], "stage": k[1], "error_class": k[2], "count": v[0], "retried": v[1]}
        for k, v in sorted(counts.items())
    ]


# ---------------------------------------------------------------------------- aggregating


def _bins(values: np.ndarray) -> np.ndarray:
    """Histogram bin of each value, as `aggregates` bins a piece's rewards."""
    inner = 1 + np.minimum((np.clip(values, 0, 1) * 10).astype(np.int64), 9)
    return np.where(values < 0, 0, np.where(values > 1, len(BINS) - 1, inner))


class _Accumulator:
    """Per-task and per-dataset figures plus bounded example sets, shard after shard."""

    def __init__(self, task, min_reward, max_reward, lowest, sample, answers, seed) -> None:
        self.task, self.min, self.max = task, min_reward, max_reward
        self.lowest_n, self.sample_n, self.answers = lowest, sample, answers
        self.rng = np.random.default_rng(seed)
        self.totals: dict[str, dict[str, Any]] = {}
        self.hists: dict[str, np.ndarray] = {}
        self.unscored = self.matched = 0
        self.tasks: list[TaskStats] = []
        self.lowest: list[tuple[tuple, Example]] = []
        self.samples: list[tuple[float, Example]] = []
        self.scatter = np.empty((0, 3))  # key, output tokens, reward

    def add(self, table: pa.Table) -> None:
        if self.task and table.num_rows:
            table = table.filter(pc.starts_with(table["task_id"], self.task))
        if not table.num_rows:
            return
        groups = group_by_task(table)
        t, r = groups.table, rewards(groups.table)
        scored = ~np.isnan(r)
        tokens = pc.fill_null(t["output_tokens"].cast(pa.float64()), np.nan).to_numpy()
        self._tasks(groups, r, scored)
        self.unscored += int((~scored).sum())
        mask = np.ones(len(r), bool)  # a reward range leaves unscored rollouts out
        if self.min is not None:
            mask &= r >= self.min
        if self.max is not None:
            mask &= r <= self.max
        self.matched += int(mask.sum())
        self._totals(groups, r, scored, tokens, mask)
        self._lowest(t, np.flatnonzero(mask & scored))
        self._sample(t, np.flatnonzero(mask))
        keep = np.flatnonzero(mask & scored & ~np.isnan(tokens))
        points = np.column_stack([self.rng.random(len(keep)), tokens[keep], r[keep]])
        points = np.concatenate([self.scatter, points])
        self.scatter = points[np.argsort(points[:, 0], kind="stable")[:SCATTER_POINTS]]

    def _tasks(self, groups: Any, r: np.ndarray, scored: np.ndarray) -> None:
        n = groups.reduce(np.add, scored.astype(np.int64))
        mean = groups.reduce(np.add, np.where(scored, r, 0.0)) / np.maximum(n, 1)
        dev = np.where(scored, r - mean[groups.gid], 0.0)
        std = np.sqrt(groups.reduce(np.add, dev * dev) / np.maximum(n - 1, 1))
        low, high = groups.reduce(np.fmin, r), groups.reduce(np.fmax, r)
        starts = pa.array(groups.starts)
        names = groups.table["dataset"].take(starts).to_pylist()
        ids = groups.table["task_id"].take(starts).to_pylist()
        for g, size in enumerate(groups.sizes.tolist()):
            k = int(n[g])
            values = [float(mean[g]), float(std[g]), float(low[g]), float(high[g])]
            self.tasks.append(TaskStats(names[g], ids[g], size, k, *(values if k else [None] * 4)))

    def _totals(
        self, groups: Any, r: np.ndarray, scored: np.ndarray, tokens: np.ndarray, in_range: Any
    ) -> None:
        t = groups.table
        firsts = np.asarray(t["dataset"].take(pa.array(groups.starts)).to_pylist(), dtype=object)
        for name in pc.unique(t["dataset"]).to_pylist():
            m = pc.equal(t["dataset"], name).to_numpy()
            s = self.totals.setdefault(name, _new_totals())
            s["rollouts"] += int(m.sum())
            s["tasks"] += int((firsts == name).sum())
            s["scored"] += int((m & scored).sum())
            s["in_range"] += int((m & in_range).sum())
            hist = self.hists.setdefault(name, np.zeros(len(BINS), np.int64))
            hist += np.bincount(_bins(r[m & scored]), minlength=len(BINS))
            s["reward"] += float(r[m & scored].sum())
            has = m & ~np.isnan(tokens)
            s["tokens"] += float(tokens[has].sum())
            s["with_tokens"] += int(has.sum())
            for item in pc.value_counts(t["finish_reason"].filter(pa.array(m))).to_pylist():
                s["finish"][item["values"] or "none"] += item["counts"]

    def _example(self, t: pa.Table, i: int) -> Example:
        row = {c: t[c][int(i)].as_py() for c in t.column_names}
        try:
            details = json.loads(row.get("verifier_details") or "{}")
        except ValueError:
            details = {}
        details = details if isinstance(details, dict) else {}
        messages = row.get("prompt_messages") or []
        users = [m for m in messages if m.get("role") == "user"] or messages
        expected = next((row[a] for a in self.answers if row.get(a) is not None), None)
        expected = cut(details.get("expected_answer") if expected is None else expected, 200)
        texts = [cut(users[-1].get("content")) if users else None, cut(row["response_text"])]
        texts += [cut(details.get("extracted_answer"), 200), expected]
        reward = row["reward"] if row["reward"] == row["reward"] else None  # NaN: unscored
        key = [row["dataset"], row["task_id"], row["rollout_index"], reward]
        turns = episode_lines(row.get("episode"))
        return Example(*key, *texts, row["finish_reason"], row["output_tokens"], turns)

    def _lowest(self, t: pa.Table, rows: np.ndarray) -> None:
        """Keep the `lowest` lowest rewards, one per task before a task's second: five
        copies of one failing task say less than five failing tasks. Ties go by task
        id (in natural order), rollout index, dataset. A task's rollouts are all in
        one call (a shard's rounds are read together), so ranks within it are whole."""
        if not rows.size or not self.lowest_n:
            return
        small = t.select(["reward", "task_id", "rollout_index", "dataset"]).take(pa.array(rows))
        columns = small.to_pydict()
        by_task: dict[tuple[str, str], list[tuple[Any, int]]] = defaultdict(list)
        for j, (reward, task, index, dataset) in enumerate(zip(*columns.values(), strict=True)):
            key = (reward, natural_key(task), index, dataset)
            by_task[(dataset, task)].append((key, j))
        ranked = []
        for candidates in by_task.values():
            candidates.sort()
            ranked += [((rank, key), j) for rank, (key, j) in enumerate(candidates)]
        for key, j in sorted(ranked)[: self.lowest_n]:
            if len(self.lowest) < self.lowest_n or key < self.lowest[-1][0]:
                self.lowest.append((key, self._example(t, rows[j])))
                self.lowest = sorted(self.lowest, key=lambda p: p[0])[: self.lowest_n]

    def _sample(self, t: pa.Table, rows: np.ndarray) -> None:
        """Bottom-k of uniform random keys: a uniform sample without replacement."""
        keys = self.rng.random(len(rows))
        for i in np.argsort(keys, kind="stable")[: self.sample_n]:
            if len(self.samples) < self.sample_n or keys[i] < self.samples[-1][0]:
                self.samples.append((float(keys[i]), self._example(t, rows[i])))
                self.samples = sorted(self.samples, key=lambda p: p[0])[: self.sample_n]

    def report(self, output: str, filters: dict, failures: list) -> InspectReport:
        tasks = sorted(
            self.tasks,
            key=lambda s: (s.mean is None, s.mean or 0, s.dataset, natural_key(s.task_id)),
        )
        means = np.array([s.mean for s in tasks if s.mean is not None], dtype=float)
        flat = [s for s in tasks if s.scored and s.min == s.max]
        signal = {
            "tasks": len(tasks),
            "scored_tasks": int(means.size),
            "single_rollout": sum(1 for s in tasks if s.scored == 1),
            "all_equal": len(flat),
            "all_zero": sum(1 for s in flat if s.min == 0),
            "all_one": sum(1 for s in flat if s.min == 1),
        }
        totals = []
        for name, s in sorted(self.totals.items()):
            avg = [_mean(s["reward"], s["scored"]), _mean(s["tokens"], s["with_tokens"])]
            counts = [s["rollouts"], s["tasks"], s["scored"], s["in_range"]]
            totals.append(DatasetTotals(name, *counts, *avg, dict(sorted(s["finish"].items()))))
        samples = [e for _, e in self.samples]
        hists = dict(sorted(self.hists.items()))
        return InspectReport(
            output=output,
            filters=filters,
            rollouts=sum(d.rollouts for d in totals),
            matched=self.matched,
            datasets=totals,
            histogram=_histogram(sum(hists.values(), np.zeros(len(BINS), np.int64))),
            histograms={name: _histogram(counts) for name, counts in hists.items()},
            unscored=self.unscored,
            signal=signal,
            task_mean_histogram=_histogram(np.bincount(_bins(means), minlength=len(BINS))),
            tasks=tasks,
            lowest=[e for _, e in self.lowest],
            samples=sorted(
                samples, key=lambda e: (e.dataset, natural_key(e.task_id), e.rollout_index)
            ),
            scatter=self.scatter[:, 1:].tolist(),
            failures=failures,
        )


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def _histogram(counts: np.ndarray) -> dict[str, int]:
    return dict(zip(BINS, counts.tolist(), strict=True))


def _new_totals() -> dict[str, Any]:
    names = ["rollouts", "tasks", "scored", "in_range", "reward", "tokens", "with_tokens"]
    counts = dict.fromkeys(names, 0)
    return {**counts, "finish": defaultdict(int)}
