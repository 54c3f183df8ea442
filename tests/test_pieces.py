"""The piece runner and the resume rule without Ray: retryable failures come back as
retry pieces holding exactly their rollouts, up to max_attempts."""

from __future__ import annotations

import asyncio
import shutil

from helpers import read_output, write_jsonl

from rollout_ray import storage
from rollout_ray.config import load_config
from rollout_ray.coordinator import JobState
from rollout_ray.engines import create_engine
from rollout_ray.manifest import Layout, read_commits, write_commits
from rollout_ray.plan import build_plan, shards_table


class LocalCoordinator:
    """The coordinator's contract, in process: commits go straight to the manifest."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.tries: dict[str, int] = {}

    async def begin(self, piece_id, node=""):
        self.tries[piece_id] = self.tries.get(piece_id, 0) + 1
        return {"committed": None, "tries": self.tries[piece_id]}

    async def commit(self, record):
        write_commits(self.layout, [record])

    def report(self, partials, actor="", engine_stats=None):
        pass


def make_job(tmp_path, max_attempts=3):
    path = write_jsonl(tmp_path / "in" / "rows.jsonl", [{"prompt": f"p{i}"} for i in range(6)])
    config = load_config(
        {
            "model": "sim",
            "engine": {"kind": "simulated", "output_tokens": 4},
            "datasets": [{"name": "rows", "path": str(path), "num_repeats": 2}],
            "output": str(tmp_path / "out"),
            "shard_size": 4,
            "max_attempts": max_attempts,
        }
    )
    _, shards = build_plan(config)
    layout = Layout(config.output)
    storage.write_parquet_atomic(layout.plan, shards_table(shards))
    return config, layout, shards, path


def run_pieces(config, layout, items):
    from rollout_ray.worker import PieceRunner

    runner = PieceRunner(config, create_engine(config), LocalCoordinator(layout), layout)

    async def go():
        return [await runner.run(item) for item in items]

    return asyncio.run(go())


def test_unreadable_input_fails_retryably_then_resume_retries_it(tmp_path):
    config, layout, shards, path = make_job(tmp_path)
    hidden = path.with_suffix(".away")
    shutil.move(path, hidden)  # storage gone while the first shard runs
    state = JobState(layout, shards, [])
    first = state.pending(config.max_attempts)
    records = run_pieces(config, layout, first[:1])
    assert records[0]["n_ok"] == 0 and records[0]["n_retryable"] == 8  # 4 rows x 2
    shutil.move(hidden, path)
    run_pieces(config, layout, first[1:])

    state = JobState(layout, shards, read_commits(layout))
    retry = state.pending(config.max_attempts)
    assert [(i.shard.shard_id, i.round) for i in retry] == [(shards[0].shard_id, 1)]
    assert retry[0].keys == [(0, -1), (1, -1), (2, -1), (3, -1)]
    assert retry[0].num_rollouts == 8
    run_pieces(config, layout, retry)

    state = JobState(layout, shards, read_commits(layout))
    assert state.pending(config.max_attempts) == []
    counts = state.totals()["rows"]
    assert (counts["expected"], counts["ok"], counts["failed"], counts["retryable"]) == (
        12,
        12,
        0,
        0,
    )
    keys = sorted((r["task_id"], r["rollout_index"]) for r in read_output(layout.output))
    assert keys == sorted((f"rows:{row}", i) for row in range(6) for i in range(2))
    attempts = {r["task_id"]: r["attempt"] for r in read_output(layout.output)}
    assert attempts["rows:0"] == 2 and attempts["rows:5"] == 1


def test_no_retry_past_max_attempts(tmp_path):
    config, layout, shards, path = make_job(tmp_path, max_attempts=2)
    path.unlink()
    state = JobState(layout, shards, [])
    run_pieces(config, layout, state.pending(2))
    state = JobState(layout, shards, read_commits(layout))
    retry = state.pending(2)
    assert [i.round for i in retry] == [1, 1]  # second and last attempt
    run_pieces(config, layout, retry)
    state = JobState(layout, shards, read_commits(layout))
    assert state.pending(2) == []  # attempt 2 of 2 failed too: settled as failed
    failures = read_output(layout.output, "failures")
    assert {f["attempt"] for f in failures} == {1, 2}
    assert all(not f["terminal"] and f["stage"] == "read" for f in failures)
    assert state.totals()["rows"]["failed"] == 12


def test_a_piece_that_keeps_killing_its_actor_is_given_up(tmp_path):
    config, layout, shards, _ = make_job(tmp_path)
    from rollout_ray.worker import PieceRunner

    coordinator = LocalCoordinator(layout)
    item = JobState(layout, shards, []).pending(3)[0]
    coordinator.tries[item.piece_id] = 3  # three actors died on it already
    runner = PieceRunner(config, create_engine(config), coordinator, layout)
    record = asyncio.run(runner.run(item))
    assert record["n_ok"] == 0 and record["n_retryable"] == 8
    failures = read_output(layout.output, "failures")
    assert {f["error_class"] for f in failures} == {"EngineDead"}
    assert "died 3 times" in failures[0]["error"]
