"""`rollout-ray status`: how far a job is, from its manifest files alone.

It reads job.json, the plan, the commit records and progress.json (for the live rate),
plus the `error_class` column of the failure files; never a rollout.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from rollout_ray import storage
from rollout_ray.errors import RolloutRayError
from rollout_ray.inputs.sources import Shard
from rollout_ray.output import manifest
from rollout_ray.output.integrity import Check
from rollout_ray.output.job_state import JobState
from rollout_ray.output.lease import Lease, alive_here
from rollout_ray.output.manifest import Layout
from rollout_ray.views.tables import Grid


def job_status(output: str) -> dict[str, Any]:
    """Per-dataset counts, failures by class, and the live rate and ETA if running.

    Raises:
        RolloutRayError: there is no job at `output`.
    """
    layout = Layout(output)
    if not storage.exists(layout.job):
        raise RolloutRayError(f"no rollout-ray job at {output} (no _manifest/job.json)")
    job = storage.read_json(layout.job)
    plan = storage.read_parquet(layout.plan)
    commits = manifest.read_commits(layout)
    max_attempts = int((job.get("config") or {}).get("max_attempts") or 3)
    shards = [Shard.from_dict(r) for r in plan.to_pylist()]
    names = [d.get("name") for d in (job.get("config") or {}).get("datasets") or []]
    state = JobState(layout, shards, commits, max_attempts, [n for n in names if n])
    failures: dict[str, Counter[str]] = {}
    for latest in state.latest.values():
        if latest.failures_file:
            table = storage.read_parquet(latest.failures_file, ["dataset", "error_class"])
            for row in table.to_pylist():
                failures.setdefault(row["dataset"], Counter())[row["error_class"]] += 1
    progress = storage.read_json(layout.progress) if storage.exists(layout.progress) else {}
    live = progress.get("status") == "running" and _live(layout, progress)
    datasets = state.totals()
    expected = sum(d["expected"] for d in datasets.values())
    settled = sum(d["ok"] + d["failed"] - d["retryable"] for d in datasets.values())
    return {
        "output": output,
        # A run killed outright (kill -9, a crash) leaves "running": it stopped.
        "status": "running" if live else _ended(progress.get("status")),
        "planned_at": job.get("planned_at"),
        "model": job["config"].get("model"),
        "complete": state.settled(),
        "max_attempts": max_attempts,
        "exhausted": sum(d["exhausted"] for d in datasets.values()),
        "expected": expected,
        "settled": settled,
        "datasets": datasets,
        "failures_by_class": {k: dict(v) for k, v in failures.items()},
        "run": progress.get("run", {}) if progress else {},
        # Shards with a commit, against shards planned; a shard's retry rounds are
        # pieces of their own (counted apart, never against the plan).
        "pieces": {
            "planned": plan.num_rows,
            "committed": sum(1 for shard in shards if shard.shard_id in state.latest),
            "retries": len({c.piece_id for c in commits if c.round > 0}),
        },
    }


def _live(layout: Layout, progress: dict[str, Any]) -> bool:
    """A 'running' progress file is its job's while the job updates it and, when the
    job holds the lease from this host, while its process lives."""
    try:
        updated = datetime.fromisoformat(progress["updated_at"]).timestamp()
    except (KeyError, ValueError):
        return False
    if time.time() - updated >= 30:
        return False
    held = Lease(layout.lease_dir, {}).latest()
    return held is None or alive_here(held[1]) is not False


def _ended(status: str | None) -> str:
    return "stopped" if status == "running" else status or "planned"


def render_status(console: Console, report: dict[str, Any]) -> None:
    grid = Grid(
        f"{report['output']}: {report['status']}",
        ["dataset", "done", "ok", "failed", "to retry", "output tok", "failures"],
        wrap=("failures",),
    )
    for name, counts in report["datasets"].items():
        done = counts["ok"] + counts["failed"] - counts["retryable"]
        classes = report["failures_by_class"].get(name, {})
        grid.add_row(
            Text(name),
            f"{done:,}/{counts['expected']:,}",
            f"{counts['ok']:,}",
            f"{counts['failed']:,}",
            f"{counts['retryable']:,}",
            f"{counts['output_tokens']:,}",
            Text(", ".join(f"{k}: {v}" for k, v in sorted(classes.items())) or "-"),
        )
    console.print(grid)
    run = report.get("run") or {}
    if report["status"] == "running" and run:
        eta = run.get("eta_s")
        console.print(
            f"rate {run.get('rollouts_per_s', 0):,.1f} rollouts/s, "
            f"{run.get('output_tokens_per_s', 0):,.0f} output tok/s, "
            f"ETA {'?' if eta is None else f'{eta:,.0f} s'}"
        )
    pieces = report["pieces"]
    retries = f" ({pieces['retries']:,} retry pieces)" if pieces.get("retries") else ""
    console.print(
        f"shards committed {pieces['committed']:,}/{pieces['planned']:,}{retries}; "
        f"{_verdict(report)}"
    )


def _verdict(report: dict[str, Any]) -> str:
    """What the job's state means for the user, and only advice that would help."""
    if report["status"] == "running":
        return "running"
    if not report["complete"]:
        return "incomplete: run the job again to finish it"
    exhausted = report.get("exhausted") or 0
    if not exhausted:
        return "complete"
    return (
        f"complete; {exhausted:,} rollouts failed on errors that may pass (timeouts, crashes) "
        f"after max_attempts={report['max_attempts']} tries. To try them again, run the job "
        f"with max_attempts={report['max_attempts'] + 1}."
    )


def render_check(console: Console, found: Check) -> None:
    """What `status --check` found (rollout_ray.output.integrity)."""
    if found.ok:
        console.print(
            f"check: ok: {found.committed:,} committed rollouts, every file their commits "
            f"name is there and reads back ({found.read:,})"
        )
    for problem in found.problems:
        console.print(f"[red]check: {escape(problem)}[/red]")
    for note in found.notes:
        console.print(f"[yellow]note: {escape(note)}[/yellow]")
