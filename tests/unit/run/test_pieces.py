"""The piece runner and the resume rule without Ray: retryable failures come back as
retry pieces holding exactly their rollouts, up to max_attempts."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from helpers import read_output, write_jsonl

from rollout_ray import storage
from rollout_ray.config import load_config
from rollout_ray.engines import create_engine
from rollout_ray.errors import InputChanged
from rollout_ray.output.job_state import JobState
from rollout_ray.output.manifest import Layout, read_commits, write_commits
from rollout_ray.output.plan import build_plan, shards_table


class LocalCoordinator:
    """The coordinator's contract, in process: commits go straight to the manifest."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.tries: dict[str, int] = {}
        self.suspects: dict[str, set[int]] = {}
        self.ran_alone: list[int | None] = []

    async def begin(self, piece_id, node=""):
        self.tries[piece_id] = self.tries.get(piece_id, 0) + 1
        suspects = sorted(self.suspects.get(piece_id, ()))
        return {"committed": None, "tries": self.tries[piece_id], "suspects": suspects}

    async def running(self, piece_id, row_index):
        self.ran_alone.append(row_index)

    async def commit(self, record, engine_stats=None):
        write_commits(self.layout, [record])

    async def abandon(self, piece_id):
        pass

    async def report(self, partials, actor="", engine_stats=None):
        return False


def make_job(tmp_path, max_attempts=3, verifier=None):
    path = write_jsonl(tmp_path / "in" / "rows.jsonl", [{"prompt": f"p{i}"} for i in range(6)])
    dataset = {"name": "rows", "path": str(path), "num_repeats": 2}
    if verifier:
        dataset["verifier"] = {"kind": "python", "function": f"verifier_fixtures:{verifier}"}
    config = load_config(
        {
            "model": "sim",
            "engine": {"kind": "simulated", "output_tokens": 4},
            "datasets": [dataset],
            "output": str(tmp_path / "out"),
            "shard_size": 4,
            "max_attempts": max_attempts,
        }
    )
    _, shards = build_plan(config)
    layout = Layout(config.output)
    storage.write_parquet_atomic(layout.plan, shards_table(shards))
    return config, layout, shards, path


def run_pieces(config, layout, items, coordinator=None):
    from rollout_ray.run.worker import PieceRunner

    coordinator = coordinator or LocalCoordinator(layout)
    runner = PieceRunner(config, create_engine(config), coordinator, layout)

    async def go():
        return [await runner.run(item) for item in items]

    return asyncio.run(go())


def test_retryable_failures_come_back_as_retry_pieces(tmp_path):
    config, layout, shards, _ = make_job(tmp_path, verifier="flaky_first_attempt")
    state = JobState(layout, shards, [])
    first = run_pieces(config, layout, state.pending(config.max_attempts))
    assert [(r.n_ok, r.n_retryable) for r in first] == [(4, 4), (4, 0)]

    state = JobState(layout, shards, read_commits(layout))
    retry = state.pending(config.max_attempts)
    assert [(i.shard.shard_id, i.round) for i in retry] == [(shards[0].shard_id, 1)]
    # Exactly the rollouts that failed: a retry never regenerates a committed one.
    assert retry[0].keys == [(0, 0), (0, 1), (1, 0), (1, 1)]
    run_pieces(config, layout, retry)

    state = JobState(layout, shards, read_commits(layout))
    assert state.pending(config.max_attempts) == [] and state.settled()
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


def test_no_retry_past_max_attempts_and_the_job_is_settled(tmp_path):
    from rich.console import Console

    from rollout_ray.views.status import _verdict, job_status, render_status

    config, layout, shards, _ = make_job(tmp_path, max_attempts=2, verifier="always_busy")
    storage.write_json_atomic(layout.job, {"config": config.model_dump(mode="json")})
    state = JobState(layout, shards, [], max_attempts=2)
    run_pieces(config, layout, state.pending(2))
    state = JobState(layout, shards, read_commits(layout), max_attempts=2)
    assert not state.settled()
    retry = state.pending(2)
    assert [i.round for i in retry] == [1, 1]  # second and last attempt
    run_pieces(config, layout, retry)
    state = JobState(layout, shards, read_commits(layout), max_attempts=2)
    assert state.pending(2) == []  # attempt 2 of 2 failed too: settled as failed
    failures = read_output(layout.output, "failures")
    assert {f["attempt"] for f in failures} == {1, 2}
    assert all(not f["terminal"] and f["stage"] == "verify" for f in failures)
    counts = state.totals()["rows"]
    assert (counts["failed"], counts["retryable"], counts["exhausted"]) == (12, 0, 12)
    # Nothing a rerun could do: status says complete, and names the one lever there is.
    report = job_status(layout.output)
    assert report["complete"] and report["exhausted"] == 12
    assert "run the job again" not in _verdict(report)
    assert "max_attempts=3" in _verdict(report)
    # Retry rounds are pieces of the same shards: 2 of 2 shards, not "4/2" (seen before
    # the fix: retry pieces were counted against shards).
    assert report["pieces"] == {"planned": 2, "committed": 2, "retries": 2}
    console = Console(file=io.StringIO(), width=200)
    render_status(console, report)
    assert "shards committed 2/2 (2 retry pieces); complete" in console.file.getvalue()


def test_a_piece_that_keeps_killing_its_actor_runs_row_by_row(tmp_path):
    config, layout, shards, _ = make_job(tmp_path)
    coordinator = LocalCoordinator(layout)
    item = JobState(layout, shards, []).pending(3)[0]
    coordinator.tries[item.piece_id] = 3  # three actors died on it already
    coordinator.suspects[item.piece_id] = {1}  # row 1 was alone on the engine at a death
    (record,) = run_pieces(config, layout, [item], coordinator)
    assert (record.n_ok, record.n_failed, record.n_retryable) == (6, 2, 0)
    failures = read_output(layout.output, "failures")
    assert [(f["task_id"], f["error_class"], f["terminal"]) for f in failures] == [
        ("rows:1", "EngineCrashed", True),
        ("rows:1", "EngineCrashed", True),
    ]
    # The other rows ran one at a time, each announced first, then the piece was done.
    assert coordinator.ran_alone == [0, 2, 3, None]
    keys = sorted((r["task_id"], r["rollout_index"]) for r in read_output(layout.output))
    assert keys == [(f"rows:{row}", i) for row in (0, 2, 3) for i in range(2)]


def test_an_input_changed_under_the_job_stops_it(tmp_path):
    config, layout, shards, path = make_job(tmp_path)
    items = JobState(layout, shards, []).pending(3)
    with open(path, "r+") as f:  # truncated: the second shard's rows are gone
        f.truncate(40)
    with pytest.raises(InputChanged, match=r"rows\.jsonl changed after the job was planned"):
        run_pieces(config, layout, items[1:])
    path.unlink()
    with pytest.raises(InputChanged, match=r"rows\.jsonl is gone"):
        run_pieces(config, layout, items[:1])
    assert read_commits(layout) == []  # nothing committed from rows that no longer match


def test_a_late_attempt_never_changes_a_committed_piece(tmp_path):
    """An attempt still running when another attempt at the same piece commits (a slow
    actor, a restarted coordinator) writes files of its own; its commit is refused; the
    committed files keep their bytes, and the run's end sweeps the late files."""
    from rollout_ray.output.lease import Lease, owner
    from rollout_ray.run.coordinator import Coordinator
    from rollout_ray.run.piece_files import write_piece
    from rollout_ray.run.worker import PieceRunner

    config, layout, _, _ = make_job(tmp_path)
    holder = owner()
    Lease(layout.lease_dir, holder).acquire()
    actor = Coordinator(config.model_dump_json(), holder, "late")

    class Client:  # the coordinator's methods as a worker calls them (through Ray)
        async def begin(self, piece_id, node=""):
            return actor.begin(piece_id, node)

        async def running(self, piece_id, row_index):
            actor.running(piece_id, row_index)

        async def commit(self, record, engine_stats=None):
            await actor.commit(record, engine_stats)

        async def abandon(self, piece_id):
            actor.abandon(piece_id)

        async def report(self, *args):
            return actor.report(*args)

    coordinator = Client()

    async def go():
        await actor.start_run()
        item = actor.queue[0]
        late = PieceRunner(config, create_engine(config), coordinator, layout)
        ok, failures = await late._attempt(item)  # it started first, and is slow
        first = await PieceRunner(config, create_engine(config), coordinator, layout).run(item)
        committed = Path(first.data_file).read_bytes()
        record = write_piece(layout, item, ok, failures, 0.0)
        await coordinator.commit(record)  # refused: the piece is committed
        assert record.data_file != first.data_file
        assert Path(first.data_file).read_bytes() == committed
        assert [c.data_file for c in read_commits(layout)] == [first.data_file]
        await actor.finish("finished")
        return record.data_file, first.data_file

    late_file, first_file = asyncio.run(go())
    assert not Path(late_file).exists() and Path(first_file).exists()
