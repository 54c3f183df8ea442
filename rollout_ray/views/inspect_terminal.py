"""The terminal views of `rollout-ray inspect` (the data comes from inspect_report)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from rollout_ray.views.inspect_report import Example, InspectReport
from rollout_ray.views.reading import headline, ranged
from rollout_ray.views.tables import Grid
from rollout_ray.views.terminal import visible

#: Characters of a text shown in the terminal.
SHOW_CHARS = 400
#: Tasks listed (lowest mean reward first).
SHOW_TASKS = 15


def render_report(console: Console, report: InspectReport) -> None:
    """Print the views in reading order: totals, reward spread, per-task signal, the
    examples a verifier is judged by, then failures. User text is never markup."""
    console.print(Text(headline(report), style="bold"))
    in_range = ranged(report)
    columns = ["dataset", "rollouts", *(["in range"] if in_range else []), "tasks", "scored"]
    grid = Grid("datasets", [*columns, "reward", "out tok"])
    for d in report.datasets:
        counts = [d.rollouts, *([d.in_range] if in_range else []), d.tasks, d.scored]
        row = [f"{n:,}" for n in counts] + [_num(d.mean_reward), _num(d.mean_output_tokens, 1)]
        grid.add_row(Text(d.dataset), *row)
    console.print(grid)
    for d in report.datasets:  # a line each: a table column of them wrapped mid-pair
        finish = ", ".join(f"{k}: {v:,}" for k, v in d.finish_reasons.items())
        console.print(Text(f"finish reasons, {d.dataset}: {finish}"))
    for name, histogram in report.histograms.items():
        _bars(console, f"reward histogram, {name}", histogram)
    if report.unscored:
        console.print(f"{report.unscored:,} rollouts with no reward (not in the histograms)")
    s = report.signal
    console.print(
        f"{s['tasks']:,} tasks ({s['scored_tasks']:,} scored): {s['all_equal']:,} with all-equal "
        f"rewards, no signal for DPO/GRPO ({s['all_zero']:,} all 0, {s['all_one']:,} all 1); "
        f"{s['single_rollout']:,} with a single scored rollout"
    )
    shown = report.tasks[:SHOW_TASKS]
    title = f"tasks, lowest mean reward first ({len(shown)} of {len(report.tasks):,})"
    grid = Grid(title, ["dataset", "task", "n", "scored", "mean", "std", "min", "max"], names=2)
    for t in shown:
        stats = [_num(t.mean), _num(t.std), _num(t.min), _num(t.max)]
        grid.add_row(Text(t.dataset), Text(t.task_id), str(t.rollouts), str(t.scored), *stats)
    console.print(grid)
    where = " in the reward range" if in_range else ""
    lowest = f"lowest reward{where}, one per task first"
    for title, examples in ((lowest, report.lowest), (f"sample{where}", report.samples)):
        console.print(Text(f"{title}: {len(examples)} rollouts", style="bold"))
        for example in examples:
            console.print(_panel(example))
    if report.failures:
        grid = Grid("failures", ["dataset", "stage", "error class", "count", "retried"], names=3)
        for f in report.failures:
            names = [Text(str(f[k])) for k in ("dataset", "stage", "error_class")]
            grid.add_row(*names, f"{f['count']:,}", f"{f['retried']:,}")
        console.print(grid)


def _bars(console: Console, title: str, histogram: dict[str, int], width: int = 40) -> None:
    """A histogram from its first to its last filled bin (all of [0, 1] when empty)."""
    filled = [k for k, v in histogram.items() if v]
    labels = list(histogram)
    if filled:
        labels = labels[labels.index(filled[0]) : labels.index(filled[-1]) + 1]
    else:
        labels = [k for k in labels if k not in ("<0", ">1")]
    grid = Grid(title, ["reward", "count", "bar"], wrap=("bar",))
    top = max(histogram.values(), default=0) or 1
    for label in labels:
        count = histogram[label]
        grid.add_row(label, f"{count:,}", Text("█" * round(width * count / top), "cyan"))
    console.print(grid)


def _panel(e: Example) -> Panel:
    """One rollout, all of it in the body (which wraps): a title is cut at the edge."""
    body = Text()
    head = f"{e.dataset} / {e.task_id} #{e.rollout_index}  reward {_num(e.reward)}\n"
    body.append(visible(head), style="bold")
    body.append("prompt: ", style="bold cyan").append(_cut(e.prompt) + "\n")
    for i, line in enumerate(e.turns or []):
        body.append(f"  {i + 1}. ", style="bold magenta").append(_cut(line, 200) + "\n")
    body.append("response: ", style="bold cyan").append(_cut(e.response) + "\n")
    meta = [("extracted", e.extracted_answer), ("expected", e.expected_answer)]
    meta += [("finish", e.finish_reason), ("tokens", e.output_tokens)]
    for label, value in meta:
        body.append(f"{label}: ", style="bold").append(f"{_cut(value, 80)}  ")
    return Panel(body, expand=False)


def _cut(value: Any, limit: int = SHOW_CHARS) -> str:
    """Cut, and controls made visible before layout (the console would too, after it)."""
    text = "-" if value is None else str(value)
    text = text if len(text) <= limit else f"{text[:limit]}… (+{len(text) - limit:,} chars)"
    return visible(text)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
