"""What a finished run prints: the per-dataset summary, reward histograms, a sweep's
comparison of settings, and `verify`'s re-scored counts.

Every table is a `Grid` (views/tables.py): at 80 columns it is a table when its cells
fit whole, else one line per dataset; never a cut name ("arit…") or figure.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from rollout_ray.views.tables import Grid

#: Reward histograms are shown for at most this many datasets (else they drown the rest).
MAX_HISTOGRAMS = 8


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def print_summary(console: Console, result: Any) -> None:
    """The end-of-job summary: per-dataset counts, tokens, rewards and where output is.
    A dataset whose input held no row is listed too, and named in a note: a path that
    matched an empty file is a mistake a user wants to hear about."""
    grid = Grid(
        f"rollout-ray: {result.status} in {duration(result.wall_s)}",
        ["dataset", "rollouts", "failed", "prompt tok", "output tok", "reward", "range"],
    )
    for name, counts in result.datasets.items():
        reward = (counts.get("stats") or {}).get("reward") or {}
        grid.add_row(
            Text(name),
            f"{counts['ok']:,}/{counts['expected']:,}",
            f"{counts['failed']:,}",
            f"{counts['prompt_tokens']:,}",
            f"{counts['output_tokens']:,}",
            f"{_num(reward.get('mean'), 2)}±{_num(reward.get('std'), 2)}" if reward else "-",
            f"{_short(reward.get('min'))}–{_short(reward.get('max'))}" if reward else "-",
        )
    console.print(grid)
    empty = [name for name, counts in result.datasets.items() if not counts.get("expected")]
    if empty:
        console.print(
            Text(f"no rows: {', '.join(empty)} (the input is empty, or `limit` is 0)"),
            style="yellow",
        )
    for name, counts in result.datasets.items():
        # Numeric fields the verifier reports beside the reward (e.g. Gym's accuracy).
        fields = {
            key.split(".", 1)[1]: value
            for key, value in (counts.get("stats") or {}).items()
            if key.startswith("verifier.") and value.get("count")
        }
        if fields:
            shown = ", ".join(
                f"{field} {_num(value['mean'])} (n={value['count']:,})"
                for field, value in sorted(fields.items())[:8]
            )
            console.print(Text(f"{name}: verifier field means: {shown}"))
    if len(result.datasets) <= MAX_HISTOGRAMS:
        for name, counts in result.datasets.items():
            histogram = ((counts.get("stats") or {}).get("reward") or {}).get("histogram")
            if histogram:
                print_histogram(console, f"reward histogram, {name}", histogram)
    run = result.progress.get("run", {})
    console.print(
        f"this run: {run.get('done', 0):,} rollouts, {run.get('output_tokens', 0):,} output "
        f"tokens, {run.get('output_tokens_per_s', 0):,.1f} output tok/s over "
        f"{duration(result.wall_s)} wall"
    )
    if result.metrics.get("sweep"):
        console.print(sweep_grid(result.metrics["sweep"]))
    if result.metrics.get("cost"):
        cost = result.metrics["cost"]
        console.print(
            f"cost: {cost['total']:,.4f} {cost['currency']} (tokens {cost['tokens']:,.4f}, "
            f"hardware {cost['hardware']:,.4f} for {cost['gpu_hours']:,.3f} GPU-hours)"
        )
    from rollout_ray import storage

    shown = storage.shown(result.output)
    console.print(Text(f"output: {shown}"))
    failed = sum(c["failed"] for c in result.datasets.values())
    if failed:
        console.print(
            Text(
                f"{failed:,} rollouts failed; reasons in {shown}/failures "
                "(`rollout-ray status` groups them)",
                style="yellow",
            )
        )


def print_histogram(console: Console, title: str, histogram: dict[str, int]) -> None:
    """A text bar chart of a reward histogram, from its first to its last filled bin."""
    filled = [label for label, count in histogram.items() if count]
    if not filled:
        return
    labels = list(histogram)
    shown = labels[labels.index(filled[0]) : labels.index(filled[-1]) + 1]
    top = max(histogram.values())
    console.print(Text(title, style="bold"))
    for label in shown:
        bar = "█" * round(30 * histogram[label] / top)
        console.print(f"  {label:>9} {bar} {histogram[label]:,}")


def sweep_grid(rows: list[dict[str, Any]]) -> Grid:
    """A sweep's settings side by side (rows from run.sweep.comparison): one column per
    swept key; rollouts and failures only where they differ between settings."""
    keys = list(dict.fromkeys(k for row in rows for k in row["setting"]))
    ks = sorted({k for row in rows for k in row["pass_at"]}, key=int)
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    counts = {(row["rollouts"], row["failed"]) for row in rows}
    same = len(counts) == 1 and not rows[0]["failed"]
    title = "sweep: one row per setting"
    if same:
        title += f", {rows[0]['rollouts']:,} rollouts each"
    named = (["dataset"] if len(datasets) > 1 else []) + keys
    figures = [] if same else ["rollouts", "failed"]
    figures += ["reward", *[f"pass@{k}" for k in ks], "out tok", "latency s"]
    grid = Grid(title + (f" ({datasets[0]})" if len(datasets) == 1 else ""), named + figures)
    grid.names = len(named)
    for row in rows:
        cells = ([row["dataset"]] if len(datasets) > 1 else []) + [
            str(row["setting"].get(k, "")) for k in keys
        ]
        if not same:
            cells += [f"{row['rollouts']:,}", f"{row['failed']:,}"]
        cells += [_num(row["mean_reward"]), *[_num(row["pass_at"].get(k)) for k in ks]]
        cells += [_num(row["tokens_per_rollout"], 1), _num(row["latency_s"], 2)]
        grid.add_row(*cells)
    return grid


def print_reverify(console: Console, result: dict[str, Any]) -> None:
    grid = Grid(
        f"re-scored into {result['output']} in {duration(result['seconds'])}",
        ["dataset", "rollouts", "failed", "mean reward", "std"],
    )
    for name, counts in result["datasets"].items():
        reward = counts["stats"].get("reward") or {}
        grid.add_row(
            Text(name),
            f"{counts['ok']:,}",
            f"{counts['failed']:,}",
            _num(reward.get("mean")),
            _num(reward.get("std")),
        )
    console.print(grid)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _short(value: float | None) -> str:
    """A reward bound as few digits as it needs: 0, 1, 0.5, 0.333."""
    return "-" if value is None else f"{value:.3g}"
