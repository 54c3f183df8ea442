"""What the CLI shows: a live progress bar, or plain lines when output is a log file.

A terminal gets a rich progress bar; anything else (`ray job submit` logs, CI) gets
one line every LOG_EVERY_S seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

LOG_EVERY_S = 10.0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressView:
    """Receives coordinator progress dicts and shows them."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self._progress: Progress | None = None
        self._task = None
        self._last_line = 0.0

    def __enter__(self) -> ProgressView:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]rollouts"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("run", total=None, rate="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def message(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]" if self.live else text)

    def update(self, progress: dict[str, Any]) -> None:
        run = progress.get("run", {})
        rate = f"{run.get('output_tokens_per_s', 0):,.0f} tok/s"
        if self._progress is not None:
            self._progress.update(
                self._task, total=run.get("todo") or 0, completed=run.get("done", 0), rate=rate
            )
            return
        now = time.monotonic()
        finished = progress.get("status") not in (None, "running")
        if now - self._last_line < LOG_EVERY_S and not finished:
            return
        self._last_line = now
        todo, done = run.get("todo") or 0, run.get("done", 0)
        share = f"{100 * done / todo:.0f}%" if todo else "-"
        print(
            f"[rollout-ray] {done:,}/{todo:,} rollouts ({share}), {rate}, "
            f"{run.get('rollouts_per_s', 0):,.1f} rollouts/s, ETA {_duration(run.get('eta_s'))}",
            file=sys.stderr,
            flush=True,
        )


def print_summary(console: Console, result: Any) -> None:
    """The end-of-job summary: per-dataset counts, tokens, rate and where output is."""
    table = Table(title=f"rollout-ray: {result.status} in {_duration(result.wall_s)}")
    for column in ("dataset", "rollouts", "failed", "prompt tok", "output tok", "mean reward"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, counts in result.datasets.items():
        reward = (
            f"{counts['reward_sum'] / counts['reward_count']:.3f}"
            if counts["reward_count"]
            else "-"
        )
        table.add_row(
            name,
            f"{counts['ok']:,}/{counts['expected']:,}",
            f"{counts['failed']:,}",
            f"{counts['prompt_tokens']:,}",
            f"{counts['output_tokens']:,}",
            reward,
        )
    console.print(table)
    run = result.progress.get("run", {})
    console.print(
        f"this run: {run.get('done', 0):,} rollouts, {run.get('output_tokens', 0):,} output "
        f"tokens, {run.get('output_tokens_per_s', 0):,.1f} output tok/s over "
        f"{_duration(result.wall_s)} wall"
    )
    console.print(f"output: {result.output}")
    failed = sum(c["failed"] for c in result.datasets.values())
    if failed:
        console.print(
            f"[yellow]{failed:,} rollouts failed; reasons in {result.output}/failures "
            "(`rollout-ray status` groups them)[/yellow]"
        )
