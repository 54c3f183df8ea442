"""A holder that lost the output's lease writes nothing more there, however it learns of
the loss: no commit, progress, compaction, sweep or metrics. The stale holder is driven
through a whole `finish()` after another job took over and did work of its own, and
every file of the new holder is compared byte for byte. Local files and a real
S3-protocol server (moto); LEASE_RACE_ROUNDS rounds each (50 for the full run)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys

import pytest
from helpers import write_jsonl

from rollout_ray import storage
from rollout_ray.config import load_config
from rollout_ray.engines import create_engine
from rollout_ray.output.integrity import check_output
from rollout_ray.output.lease import Lease, LeaseLost, owner
from rollout_ray.output.manifest import Layout
from rollout_ray.output.plan import prepare_output
from rollout_ray.output.work import WorkItem
from rollout_ray.run.coordinator import Coordinator
from rollout_ray.run.coordinator_client import LocalCoordinatorClient
from rollout_ray.run.piece_files import write_piece
from rollout_ray.run.worker import PieceRunner

ROUNDS = int(os.environ.get("LEASE_RACE_ROUNDS", "6"))


def dead_owner() -> dict:
    """A holder on this host whose process has exited: taken over at once (no TTL to
    wait out), while its coordinator, in this test, goes on as a stalled process would."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return {**owner(), "pid": int(gone.stdout)}


def snapshot(output: str) -> dict[str, str]:
    """Every file under the output but the lease's, by content; progress.json by who
    wrote it (the new holder's own upkeep rewrites it every few seconds)."""
    found = {}
    for uri in storage.list_files(output):
        if uri.endswith("/_manifest/progress.json"):
            found[uri] = storage.read_json(uri)["job"]
        elif "/_manifest/lease/" not in uri:
            found[uri] = hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    return found


async def run_some(coordinator: Coordinator, runner: PieceRunner, n: int) -> None:
    for text in await coordinator.next_items(n) or []:
        await runner.run(WorkItem.from_json(text))


async def takeover_round(config, rng: random.Random) -> None:
    layout = Layout(config.output)
    engine = create_engine(config)
    stale_owner = dead_owner()
    Lease(layout.lease_dir, stale_owner).acquire()
    stale = Coordinator(config.model_dump_json(), stale_owner, "stale")
    stale_runner = PieceRunner(config, engine, LocalCoordinatorClient(stale), layout)
    await stale.start_run()
    await run_some(stale, stale_runner, rng.randint(0, 3))
    # A piece the stale holder finished but has not committed yet.
    [late_text] = await stale.next_items(1) or [None]
    late = WorkItem.from_json(late_text) if late_text else None
    late_record = None
    if late is not None:
        ok, failures = await stale_runner._attempt(late)
        late_record = write_piece(layout, late, ok, failures, 0.0)
    # Its process stalls (by its own clock, its last renewal is old); meanwhile another
    # job takes the output over and works: commits, and pieces in flight.
    stale._ticker.cancel()
    with stale.lease._renewing:  # a renewal already under way ends before the stall
        stale.lease.renewed_at -= 10 * stale.lease.ttl_s
    new_owner = owner()
    Lease(layout.lease_dir, new_owner).acquire(wait_s=0)
    new = Coordinator(config.model_dump_json(), new_owner, "new")
    new_runner = PieceRunner(config, engine, LocalCoordinatorClient(new), layout)
    await new.start_run()
    await run_some(new, new_runner, rng.randint(1, 20))
    for text in await new.next_items(rng.randint(0, 3)) or []:
        item = WorkItem.from_json(text)
        ok, failures = await new_runner._attempt(item)
        write_piece(layout, item, ok, failures, 0.0)  # written, its commit not yet sent
    await new.upkeep()  # its progress.json is there before the snapshot, whatever the timing
    before = snapshot(config.output)
    # The stale holder wakes up: it may try to commit first, then it finishes its run.
    if late_record is not None and rng.random() < 0.5:
        with pytest.raises(LeaseLost):
            await stale.commit(late_record)
    if rng.random() < 0.5:
        await stale.upkeep()  # its lease and progress upkeep comes first
    progress = await stale.finish(rng.choice(["finished", "interrupted", "failed"]))
    assert "another job" in progress["lease_lost"]
    with pytest.raises(LeaseLost):
        stale.write_metrics({"status": "finished"})
    assert snapshot(config.output) == before
    # The new holder finishes cleanly: everything it committed reads back.
    await new.finish("finished")
    new.write_metrics({"status": "finished"})
    found = check_output(config.output)
    assert found.ok and found.notes == [], found


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_holder_that_lost_the_lease_changes_nothing_of_the_new_holders(where, tmp_path, request):
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}"} for i in range(40)])
    if where == "s3":
        request.getfixturevalue("s3_server")
        base = f"s3://rollouts/fencing-{random.randrange(10**9)}"
    else:
        base = str(tmp_path / "outputs")
    for round_ in range(ROUNDS):
        config = load_config(
            {
                "model": "sim",
                "engine": {"kind": "simulated", "output_tokens": 2},
                "datasets": [{"name": "d", "path": str(rows), "num_repeats": 2}],
                "output": f"{base}/{round_}",
                "shard_size": 1,
                "metrics": False,
            }
        )
        prepare_output(config)
        asyncio.run(takeover_round(config, random.Random(round_)))
