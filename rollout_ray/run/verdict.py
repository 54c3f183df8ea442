"""Whether a run that ended failed as a whole: every rollout it tried failed for one
and the same cause outside the rows (an endpoint down, a key refused by a verifier).

Rows fail alone and the job goes on: that is the rule for what a row brings. But when
nothing of a run succeeded and all its failures say the same thing at a stage that
depends on a service (generate, tool, verify), the fault is the job's: such a run used
to end with exit 0, "done", and no rollouts. It now ends as a job fault with that
cause (exit 1); its failure records stay committed, like any failure's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rollout_ray import storage
from rollout_ray.errors import JobFault
from rollout_ray.output.schema import Commit

#: Stages whose failures can come from outside the row: the engine or its endpoint,
#: a tool server, a verifier. Failures at read, parse or prompt are the rows' own.
SERVICE_STAGES = {"generate", "tool", "verify"}


class EveryRolloutFailed(JobFault):
    """Every rollout of the run failed for the same cause; `result` is the run's
    JobResult (its summary is still worth showing)."""

    def __init__(self, message: str, result: Any):
        super().__init__(message)
        self.result = result


class RunTally:
    """This run's commit records as they land, passed on to `forward` (run_job's
    on_commit): which pieces this run committed, so that only its failures are read."""

    def __init__(self, forward: Callable[[Commit], None] | None):
        self.forward = forward
        self.commits: list[Commit] = []

    def __call__(self, commit: Commit) -> None:
        self.commits.append(commit)
        if self.forward is not None:
            self.forward(commit)


def judge_run(tally: RunTally, result: Any, max_attempts: int) -> None:
    """Raise EveryRolloutFailed when the run failed as a whole (see the module).

    Raises:
        EveryRolloutFailed: with the cause, how many rollouts it took, and what to do.
    """
    found = common_cause(tally.commits)
    if found is None:
        return
    cause, failed = found
    if any(c.n_retryable for c in tally.commits):
        advice = (
            f"once it is fixed, run the job with max_attempts={max_attempts + 1} to try them again"
        )
    else:
        advice = "they are not tried again: once it is fixed, run the job into a new output"
    raise EveryRolloutFailed(
        f"all {failed:,} rollouts this run tried failed for the same cause, a fault of the "
        f"job rather than of its rows: {cause}. Their failure records are kept; {advice}.",
        result,
    )


def common_cause(commits: list[Commit]) -> tuple[str, int] | None:
    """(`stage: error`, rollouts) when every rollout of `commits` failed, all for one
    cause at a service stage; None otherwise (something succeeded, causes differ, or
    the rows were at fault). A rollout tried in several rounds counts once."""
    if not commits or any(c.n_ok for c in commits) or not any(c.n_failed for c in commits):
        return None
    causes: set[tuple[str, str]] = set()
    keys: set[tuple[Any, ...]] = set()
    columns = ["dataset", "task_id", "rollout_index", "stage", "error"]
    for commit in commits:
        if commit.failures_file is None:
            continue
        for row in storage.read_parquet(commit.failures_file, columns).to_pylist():
            if row["stage"] not in SERVICE_STAGES:
                return None
            causes.add((row["stage"], _without_place(row["error"] or "")))
            if len(causes) > 1:
                return None
            keys.add((row["dataset"], row["task_id"], row["rollout_index"]))
    if len(causes) != 1:
        return None
    ((stage, error),) = causes
    return f"{stage}: {error.rstrip('.')}", len(keys)


def _without_place(error: str) -> str:
    """A failure's message without the `FILE line N: ` it starts with."""
    head, sep, rest = error.partition(": ")
    return rest if sep and (" line " in head or " row " in head) else error
