"""What the CLI shows: a live progress bar, or plain lines when output is a log file.

A terminal gets a rich progress bar; anything else (`ray job submit` logs, CI) gets
one line every LOG_EVERY_S seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from rollout_ray.views.summary import duration
from rollout_ray.views.terminal import SafeConsole, visible

if TYPE_CHECKING:
    from rollout_ray.output.schema import Commit

LOG_EVERY_S = 10.0


class ProgressView:
    """Receives coordinator progress dicts and shows them."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or SafeConsole(stderr=True)
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
                TextColumn("[dim]{task.fields[committed]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("run", total=None, rate="", committed="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def message(self, text: str) -> None:
        from rich.markup import escape

        text = escape(text)
        self.console.print(f"[dim]{text}[/dim]" if self.live else text)

    def update(self, progress: dict[str, Any]) -> None:
        run = progress.get("run", {})
        rate = f"{run.get('output_tokens_per_s', 0):,.0f} tok/s"
        # Done includes rollouts of pieces still running; only committed ones are kept
        # whatever happens next (a Ctrl-C commits the finished ones of running pieces).
        committed = f"{run.get('committed', run.get('done', 0)):,} committed"
        if self._progress is not None:
            self._progress.update(
                self._task,
                total=run.get("todo") or 0,
                completed=run.get("done", 0),
                rate=rate,
                committed=committed,
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
            f"[rollout-ray] {done:,}/{todo:,} rollouts ({share}, {committed}), {rate}, "
            f"{run.get('rollouts_per_s', 0):,.1f} rollouts/s, ETA {duration(run.get('eta_s'))}",
            file=sys.stderr,
            flush=True,
        )


def print_phases(console: Console, metrics: dict[str, Any]) -> None:
    """Where the run's wall time went (`--verbose`): seconds from the job's start to
    the end of each phase, and the engine's own start where this process saw it."""
    phases = metrics.get("phases") or {}
    if phases:
        steps = ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items())
        console.print(f"phases ({metrics.get('executor', '?')} executor), s: {steps}")


def kept_line(result: Any) -> str:
    """What an interrupted run kept, for the line after its summary."""
    run = result.progress.get("run", {})
    total = sum(c.get("ok", 0) for c in result.datasets.values())
    expected = sum(c.get("expected", 0) for c in result.datasets.values())
    return (
        f"{run.get('committed', 0):,} rollouts committed by this run; the output holds "
        f"{total:,} of {expected:,}: run the same command again to resume."
    )


def print_projection(console: Console, projection: Any) -> None:
    """What the pilot says the full job will take."""
    p = projection
    console.print(
        f"pilot: {p.pilot_rollouts:,} rollouts; the full job has {p.full_rollouts:,}. Projected: "
        f"{p.prompt_tokens:,} prompt + {p.output_tokens:,} output tokens, "
        f"{duration(p.seconds)} with this config (start-up {duration(p.startup_s)})"
    )
    if p.cost:
        console.print(
            f"projected cost: {p.cost['total']:,.2f} {p.cost['currency']} "
            f"(tokens {p.cost['tokens']:,.2f}, hardware {p.cost['hardware']:,.2f} for "
            f"{p.cost['gpu_hours']:,.2f} GPU-hours)"
        )


def print_export(console: Console, report: Any) -> None:
    console.print(
        f"{report.kind}: {report.rows_written:,} rows from {report.tasks_seen:,} tasks -> "
        f"{report.dest}"
    )
    if report.kind == "eval":
        from rollout_ray.exports.evaluation import eval_table

        console.print(eval_table(report.extra.get("metrics", report.extra)))
    elif report.extra:
        details = ", ".join(f"{k}: {v}" for k, v in report.extra.items() if not isinstance(v, dict))
        if details:
            console.print(details)


def show_piece(console: Console, commit: Commit) -> None:
    """Print a just-committed piece's rollouts and failures readably (`run --show`)."""
    from rich.markup import escape
    from rich.panel import Panel

    from rollout_ray import storage

    if commit.data_file:
        for r in storage.read_parquet(commit.data_file).to_pylist():
            prompt = (r["prompt_messages"] or [{}])[-1].get("content", "")
            reward = "" if r["reward"] is None else f", reward {r['reward']:.3f}"
            about = f"{r['finish_reason']}, {r['output_tokens']} tokens{reward}"
            details = r.get("verifier_details")
            # All in the body, which wraps to the panel: a title or subtitle is cut at
            # the panel's edge (a long task id; the verifier's details at 80 columns).
            body = (
                f"[bold]{_clip(r['task_id'], 200)} #{r['rollout_index']}[/bold]\n"
                f"[bold]prompt[/bold] {_clip(prompt)}\n[bold]response[/bold] "
                f"{_clip(r['response_text'])}\n[dim]{escape(about)}[/dim]"
            )
            if details:
                body += f"\n[dim]verifier[/dim] {_clip(details, 200)}"
            console.print(Panel(body, expand=False))
    if commit.failures_file:
        for f in storage.read_parquet(commit.failures_file).to_pylist():
            where = f"{_clip(f['task_id'], 200)} #{f['rollout_index']}"
            console.print(
                f"[red]failed[/red] {where} ({f['stage']}, {f['error_class']}): {_clip(f['error'])}"
            )


def _clip(text: str | None, limit: int = 400) -> str:
    """Cut, controls made visible before layout (so panels keep their width), and
    escaped: rows' and models' text is neither markup nor terminal commands."""
    from rich.markup import escape

    text = text or ""
    return escape(visible(text if len(text) <= limit else text[:limit] + " …"))
