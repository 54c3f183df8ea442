"""The terminal views of `rollout-ray inspect` (the data comes from inspect_report)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rollout_ray.views.inspect_report import Example, InspectReport
from rollout_ray.views.terminal import visible

#: Characters of a text shown in the terminal.
SHOW_CHARS = 400
#: Tasks listed (lowest mean reward first).
SHOW_TASKS = 15


def render_report(console: Console, report: InspectReport) -> None:
    """Print the views in reading order: totals, reward spread, per-task signal, the
    examples a verifier is judged by, then failures. User text is never markup."""
    chosen = ", ".join(f"{k}={v}" for k, v in report.filters.items() if v is not None)
    head = f"{report.output}: {report.matched:,} matching rollouts" + (
        f" ({chosen})" if chosen else ""
    )
    console.print(Text(head, style="bold"))
    table = _table("datasets", "dataset|rollouts|tasks|scored|mean reward|mean out tok|finish")
    for d in report.datasets:
        finish = ", ".join(f"{k}: {v:,}" for k, v in d.finish_reasons.items())
        row = [f"{d.rollouts:,}", f"{d.tasks:,}", f"{d.scored:,}", _num(d.mean_reward)]
        table.add_row(Text(d.dataset), *row, _num(d.mean_output_tokens, 1), Text(finish))
    console.print(table)
    _bars(
        console, f"reward histogram ({report.unscored:,} rollouts with no reward)", report.histogram
    )
    s = report.signal
    console.print(
        f"{s['tasks']:,} tasks ({s['scored_tasks']:,} scored): {s['all_equal']:,} with all-equal "
        f"rewards, no signal for DPO/GRPO ({s['all_zero']:,} all 0, {s['all_one']:,} all 1); "
        f"{s['single_rollout']:,} with a single scored rollout"
    )
    shown = report.tasks[:SHOW_TASKS]
    title = f"tasks, lowest mean reward first ({len(shown)} of {len(report.tasks):,})"
    table = _table(title, "dataset|task|n|scored|mean|std|min|max", names=2)
    for t in shown:
        stats = [_num(t.mean), _num(t.std), _num(t.min), _num(t.max)]
        table.add_row(Text(t.dataset), Text(t.task_id), str(t.rollouts), str(t.scored), *stats)
    console.print(table)
    for title, examples in (("lowest reward", report.lowest), ("sample", report.samples)):
        console.print(Text(f"{title}: {len(examples)} rollouts", style="bold"))
        for example in examples:
            console.print(_panel(example))
    if report.failures:
        table = _table("failures", "dataset|stage|error class|count|retried", names=3)
        for f in report.failures:
            names = [Text(str(f[k])) for k in ("dataset", "stage", "error_class")]
            table.add_row(*names, f"{f['count']:,}", f"{f['retried']:,}")
        console.print(table)


def _table(title: str, columns: str, names: int = 1) -> Table:
    """A table whose first `names` columns (and any bar or finish list) are text."""
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns.split("|")):
        text = i < names or column in ("bar", "finish")
        table.add_column(column, justify="left" if text else "right")
    return table


def _bars(console: Console, title: str, histogram: dict[str, int], width: int = 40) -> None:
    table = _table(title, "reward|count|bar")
    top = max(histogram.values(), default=0) or 1
    for label, count in histogram.items():
        if count or label not in ("<0", ">1"):
            table.add_row(label, f"{count:,}", Text("█" * round(width * count / top), "cyan"))
    console.print(table)


def _panel(e: Example) -> Panel:
    body = Text()
    body.append("prompt: ", style="bold cyan").append(_cut(e.prompt) + "\n")
    for i, line in enumerate(e.turns or []):
        body.append(f"  {i + 1}. ", style="bold magenta").append(_cut(line, 200) + "\n")
    body.append("response: ", style="bold cyan").append(_cut(e.response) + "\n")
    meta = [("extracted", e.extracted_answer), ("expected", e.expected_answer)]
    meta += [("finish", e.finish_reason), ("tokens", e.output_tokens)]
    for label, value in meta:
        body.append(f"{label}: ", style="bold").append(f"{_cut(value, 80)}  ")
    title = Text(f"{e.dataset} / {e.task_id} #{e.rollout_index}  reward {_num(e.reward)}")
    return Panel(body, title=title, title_align="left")


def _cut(value: Any, limit: int = SHOW_CHARS) -> str:
    """Cut, and controls made visible before layout (the console would too, after it)."""
    text = "-" if value is None else str(value)
    text = text if len(text) <= limit else f"{text[:limit]}… (+{len(text) - limit:,} chars)"
    return visible(text)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
