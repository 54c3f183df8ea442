"""Never lose or repeat a rollout: kill the driver again and again, kill an engine
actor, refuse unsafe resumes. Real Ray, real vLLM (the tiny model), real S3 server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import has_commits, job_config, kill_driver, read_output, wait_until, write_jsonl

from rollout_ray import run_job, storage
from rollout_ray.errors import ResumeRefused
from rollout_ray.output.lease import Lease
from rollout_ray.output.manifest import Layout, read_commits
from rollout_ray.views.status import job_status

pytestmark = pytest.mark.slow

# Driver kills per job: 2 in `make test` (one mid-generation, one at a random moment,
# start-up included), which keeps CI inside its time; `make soak` kills it 10 times.
KILLS = int(os.environ.get("KILLS", "2"))
# Rows of the kill jobs: 30 pieces for 2 kills (each kill is tied to committed pieces,
# so no run can finish before its kill), 60 for the soak's 10.
ROWS, REPEATS = (240 if KILLS <= 2 else 480), 4


#: The engine of the S3 kill test: what it checks is the manifest on object storage, and
#: without a model to load each of its eleven starts is about ten seconds shorter.
SIMULATED = {"kind": "simulated", "latency_s": 0.5, "output_tokens": 16, "shards_in_flight": 2}


def job_yaml(
    tmp_path: Path,
    tiny_model: str,
    data: str,
    output: str,
    engine: dict | None = None,
    executor: str = "auto",
) -> Path:
    config = {
        "executor": executor,
        "model": tiny_model if engine is None else "sim",
        "engine": engine or {"kind": "vllm", "max_model_len": 256, "shards_in_flight": 2},
        "datasets": [{"name": "kill", "path": data, "num_repeats": REPEATS}],
        "sampling": {"max_tokens": 96, "temperature": 1.0, "seed": 3},
        "shard_size": 8,
        "output": output,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "ROLLOUT_RAY_DASHBOARD": "0"}
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollout_ray.cli", "run", str(config), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    proc.started = time.time()
    return proc


def committed_pieces(output: str) -> int:
    """How many pieces of work the manifest commits (cheap: commit records only)."""
    try:
        return len(read_commits(Layout(output)))
    except (FileNotFoundError, OSError, ValueError):
        return 0


def run_until(proc: subprocess.Popen, output: str, pieces: int, seconds: float) -> bool:
    """Let a run go on until the manifest commits `pieces`, `seconds` pass, or it exits.

    Kill points are tied to committed progress, not only to wall time, so the job
    cannot finish before its tenth kill on a machine faster than this one.

    Returns:
        Whether `pieces` were committed.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if committed_pieces(output) >= pieces:
            return True
        time.sleep(0.2)
    return committed_pieces(output) >= pieces


def committed_records(output: str) -> dict[tuple, tuple]:
    """(task, rollout) -> (text, created_at) of every rollout the manifest commits."""
    found = {}
    for commit in read_commits(Layout(output)):
        if commit.data_file:
            for r in storage.read_parquet(commit.data_file).to_pylist():
                found[(r["task_id"], r["rollout_index"])] = (r["response_text"], r["created_at"])
    return found


def all_output_keys(output: str) -> Counter:
    keys: Counter = Counter()
    for uri in storage.list_files(storage.join(output, "data"), ".parquet"):
        table = storage.read_parquet(uri, ["task_id", "rollout_index"])
        keys.update(
            zip(
                table.column("task_id").to_pylist(),
                table.column("rollout_index").to_pylist(),
                strict=True,
            )
        )
    return keys


def kill_and_resume(
    tmp_path,
    tiny_model,
    data: str,
    output: str,
    kills: int,
    seed: int,
    engine=None,
    executor: str = "auto",
):
    config = job_yaml(tmp_path, tiny_model, data, output, engine, executor)
    log = tmp_path / "runs.log"
    rng = random.Random(seed)
    snapshots, progress = {}, []
    total = ROWS // 8  # pieces in the plan (shard_size 8, one piece per shard)
    for i in range(kills):
        proc = start(config, log)
        done = committed_pieces(output)
        if i % 2:
            # any moment, start-up included: a random time, but at most one more piece
            run_until(proc, output, done + 1, rng.uniform(1, 12))
        else:
            # mid-generation: after a random share of what is left for the kills to come
            step = max(1, int((total - done) / (kills - i + 1) * rng.uniform(0.3, 1.0)))
            reached = run_until(proc, output, done + step, 600)
            assert reached, f"kill {i + 1}: the run made no progress\n{log.read_text()[-3000:]}"
            time.sleep(rng.uniform(0, 0.5))  # and inside whatever is being written now
        assert proc.poll() is None, f"the job finished before kill {i + 1} came"
        kill_driver(proc)
        if storage.exists(Layout(output).job):  # what `rollout-ray status` says now
            assert job_status(output)["status"] != "running", "a killed run shown running"
        snapshot = committed_records(output) if storage.exists(Layout(output).job) else {}
        progress.append(len(snapshot))
        snapshots.update(snapshot)
    final = start(config, log)
    assert final.wait(timeout=600) == 0, log.read_text()[-4000:]

    keys = all_output_keys(output)
    expected = {(f"in:{row}", i) for row in range(ROWS) for i in range(REPEATS)}
    assert set(keys) == expected, "lost rollouts"
    assert max(keys.values()) == 1, "duplicated rollouts"
    # Committed work is never generated again: every rollout committed before a kill is
    # in the final output unchanged (same text, same creation time).
    final_records = committed_records(output)
    assert all(final_records[k] == v for k, v in snapshots.items())
    return progress


def test_kill_driver_repeatedly_local(ray_session, tmp_path, tiny_model):
    data = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": f"the quick brown fox {i}"} for i in range(ROWS)]
    )
    # In process (the local executor): the same manifest and resume as on Ray, which the
    # S3 variant below runs.
    output = str(tmp_path / "out")
    progress = kill_and_resume(tmp_path, tiny_model, str(data), output, KILLS, 7, executor="local")
    assert len(progress) == KILLS
    assert any(0 < p < ROWS * REPEATS for p in progress), progress  # killed mid-job


def test_kill_driver_repeatedly_s3(ray_session, tmp_path, tiny_model, s3_server):
    local = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": f"the sea and the sky {i}"} for i in range(ROWS)]
    )
    storage.write_bytes_atomic("s3://rollouts/inputs/in.jsonl", local.read_bytes())
    progress = kill_and_resume(
        tmp_path,
        tiny_model,
        "s3://rollouts/inputs/in.jsonl",
        "s3://rollouts/jobs/kill",
        KILLS,
        11,
        engine=SIMULATED,
        executor="ray",
    )
    assert len(progress) == KILLS
    assert any(0 < p < ROWS * REPEATS for p in progress), progress
    assert storage.exists("s3://rollouts/jobs/kill/_manifest/plan.parquet")


def test_engine_actor_killed_mid_job(ray_session, tmp_path, tiny_model):
    import psutil
    import ray
    from ray._private.state import actors

    # Rows 8-15 (the second piece) hold in their verifier until released: when the kill
    # comes, that piece has begun and surely not committed, so its retry is certain.
    hold = tmp_path / "hold"
    hold.mkdir()
    rows = [
        {"prompt": f"a poem {i}"} | ({"hold": str(hold)} if 8 <= i < 16 else {}) for i in range(96)
    ]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    verifier = {"kind": "python", "function": "verifier_fixtures:hold_until_released"}
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [{"name": "k", "path": str(data), "verifier": verifier}],
        shard_size=8,
        sampling={"max_tokens": 16, "temperature": 1.0},
        engine={"kind": "vllm", "max_model_len": 512, "shards_in_flight": 1},
    )
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=run_job(config)))
    thread.start()
    wait_until(lambda: (hold / "waiting").exists(), 180, "the second piece to be mid-flight")
    # This job's engine actor: the live one (an earlier job's may linger as a process),
    # from the GCS's actor table (the state API would need the dashboard).
    victims = [
        a["Pid"]
        for a in actors().values()
        if a["State"] == "ALIVE" and "EngineWorker" in a["ActorClassName"]
    ]
    assert len(victims) == 1, victims
    psutil.Process(victims[0]).kill()
    (hold / "release").touch()
    thread.join(timeout=600)
    result = done["result"]
    keys = Counter((r["task_id"], r["rollout_index"]) for r in read_output(tmp_path / "out"))
    assert set(keys) == {(f"in:{i}", 0) for i in range(96)} and max(keys.values()) == 1
    assert result.status == "finished" and result.datasets["k"]["failed"] == 0
    # The actor was restarted and the piece it held was tried again.
    run = result.progress["run"]
    assert run["engine_restarts"] >= 1 and run["retries"]["piece"] >= 1, run
    assert ray.is_initialized()


def test_coordinator_killed_mid_job(ray_session, tmp_path, tiny_model):
    """Ray restarts the coordinator; the restarted one takes the run up again from the
    manifest and the job finishes with the exact key set, nothing written twice."""
    import ray

    from rollout_ray.run.placement import NAMESPACE, coordinator_name

    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"a song {i}"} for i in range(96)])
    output = tmp_path / "out"
    config = job_config(
        tiny_model,
        output,
        [{"name": "c", "path": str(data)}],
        shard_size=8,
        sampling={"max_tokens": 64, "temperature": 1.0},
        overrides=["engine.shards_in_flight=1"],
    )
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=run_job(config)))
    thread.start()
    wait_until(lambda: has_commits(output), 180, "the first commit")
    name = coordinator_name(Layout(str(output)))
    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)
    thread.join(timeout=600)
    keys = Counter((r["task_id"], r["rollout_index"]) for r in read_output(output))
    assert set(keys) == {(f"in:{i}", 0) for i in range(96)} and max(keys.values()) == 1
    assert done["result"].status == "finished"
    assert done["result"].datasets["c"]["ok"] == 96
    assert done["result"].progress["run"]["coordinator_restarted"]


def test_resume_refuses_changed_config_and_input(ray_session, tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"hi {i}"} for i in range(6)])
    config = job_config(tiny_model, tmp_path / "out", [{"name": "r", "path": str(data)}])
    run_job(config)
    first = read_output(tmp_path / "out")
    # Resuming a finished job with the same config does nothing and is not refused.
    assert run_job(config).progress["run"]["todo"] == 0

    changed = job_config(
        tiny_model,
        tmp_path / "out",
        [{"name": "r", "path": str(data)}],
        overrides=["sampling.temperature=0.2"],
    )
    with pytest.raises(ResumeRefused) as err:
        run_job(changed)
    assert "sampling.temperature: 0.8 -> 0.2" in str(err.value)
    assert "--force-new-config" in str(err.value)
    # Resource settings may change on resume.
    faster = job_config(
        tiny_model,
        tmp_path / "out",
        [{"name": "r", "path": str(data)}],
        overrides=["engine.shards_in_flight=2"],
    )
    run_job(faster)

    with open(data, "a") as f:
        f.write(json.dumps({"prompt": "a new row"}) + "\n")
    with pytest.raises(ResumeRefused, match=r"input .*in\.jsonl grew since the job was planned"):
        run_job(config)
    result = run_job(config, force_new_config=True)
    records = read_output(tmp_path / "out")
    assert len(records) == 7 and result.progress["run"]["todo"] == 1
    # The six committed rollouts were kept, not generated again.
    assert {r["created_at"] for r in first} <= {r["created_at"] for r in records}


def test_second_job_on_same_output_refused_and_ctrl_c_resumes(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"long {i}"} for i in range(200)])
    config = job_yaml(tmp_path, tiny_model, str(data), str(tmp_path / "out"))
    first = start(config, tmp_path / "a.log")
    lease = Lease(Layout(str(tmp_path / "out")).lease_dir, {"token": "observer"})
    wait_until(lambda: lease.latest() is not None, 120, "the first job's lease")
    second = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2
    assert "another job is writing" in second.stderr
    # Ctrl-C once it has committed work (not after a fixed time: a fast engine could
    # finish first): the first job stops cleanly, frees the output, says how to resume.
    wait_until(lambda: committed_pieces(str(tmp_path / "out")), 300, "a committed piece")
    os.killpg(first.pid, signal.SIGINT)
    assert first.wait(timeout=120) == 130
    log = (tmp_path / "a.log").read_text()
    assert "run the same command again to resume" in log
    assert lease.latest()[1].get("released")  # handed back: a resume needn't wait
    progress = json.loads(Path(tmp_path, "out", "_manifest", "progress.json").read_text())
    assert progress["status"] == "interrupted"
    resumed = start(config, tmp_path / "b.log")
    assert resumed.wait(timeout=600) == 0
    assert len(all_output_keys(str(tmp_path / "out"))) == 200 * REPEATS


def test_s3_output_schema_and_status(ray_session, tmp_path, tiny_model, s3_server):
    table = pa.table({"prompt": [f"row {i}" for i in range(10)]})
    local = tmp_path / "rows.parquet"
    pq.write_table(table, local, row_group_size=4)
    storage.write_bytes_atomic("s3://rollouts/inputs/rows.parquet", local.read_bytes())
    config = job_config(
        tiny_model,
        "s3://rollouts/jobs/parquet",
        [{"name": "p", "path": "s3://rollouts/inputs/*.parquet"}],
    )
    run_job(config)

    report = job_status("s3://rollouts/jobs/parquet")
    assert report["complete"] and report["datasets"]["p"]["ok"] == 10
    assert len(all_output_keys("s3://rollouts/jobs/parquet")) == 10


def test_ctrl_c_stops_a_driver_that_inherited_an_ignored_sigint(tmp_path):
    """Background jobs and some supervisors start programs with SIGINT ignored (and Ray
    starts its processes with it blocked); Ctrl-C must stop the run all the same. A
    second Ctrl-C exits at once."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"row {i}"} for i in range(2000)])
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # On Ray, whose processes start with SIGINT blocked, and whose orderly stop
                # takes long enough for a second Ctrl-C to arrive during it (in process a
                # run may stop before the second comes).
                "executor": "ray",
                "model": "sim",
                "engine": {"kind": "simulated", "latency_s": 0.2, "shards_in_flight": 2},
                "datasets": [{"name": "c", "path": str(data)}],
                "shard_size": 20,
                "output": str(tmp_path / "out"),
                "metrics_port": 0,
            }
        )
    )

    def deaf_to_ctrl_c() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def start_deaf(log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "rollout_ray.cli", "run", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=deaf_to_ctrl_c,
                env={**os.environ, "ROLLOUT_RAY_DASHBOARD": "0"},
            )

    first = start_deaf(tmp_path / "a.log")
    out = str(tmp_path / "out")
    wait_until(lambda: committed_pieces(out) >= 1, 300, "a committed piece")
    os.killpg(first.pid, signal.SIGINT)
    assert first.wait(timeout=60) == 130, (tmp_path / "a.log").read_text()[-3000:]
    progress = json.loads(Path(tmp_path, "out", "_manifest", "progress.json").read_text())
    assert progress["status"] == "interrupted"
    released = Lease(Layout(str(tmp_path / "out")).lease_dir, {"token": "observer"}).latest()
    assert released[1].get("released")

    second = start_deaf(tmp_path / "b.log")
    before = committed_pieces(out)
    wait_until(lambda: committed_pieces(out) > before, 300, "a piece committed on resume")
    os.killpg(second.pid, signal.SIGINT)
    # The second Ctrl-C once followed after 0.3 s; now it follows once the first is seen
    # to have started the orderly stop (its handler says so), which takes seconds on Ray.
    log_b = tmp_path / "b.log"
    wait_until(lambda: b"stopping: committing" in log_b.read_bytes(), 60, "the first Ctrl-C", 0.05)
    os.killpg(second.pid, signal.SIGINT)
    assert second.wait(timeout=60) == 130
    assert "exiting now" in (tmp_path / "b.log").read_text()


#: Ctrl-C rounds per executor (`make soak`: 10).
INTERRUPTS = int(os.environ.get("INTERRUPTS", "1"))
#: The Ctrl-C job's rows (x 4 repeats, one piece): 50 in `make test`, 100 in the soak.
CTRL_C_ROWS = int(os.environ.get("CTRL_C_ROWS", "50"))


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_ctrl_c_keeps_every_rollout_finished_before_it(executor, tmp_path, tiny_model):
    """A 200-rollout job in one piece (400 in the soak), Ctrl-C at a random moment: the
    rollouts that piece had finished are committed (the old way kept none of them while
    the progress line counted them), the summary says how many the output holds, and the
    resume does exactly the rest."""
    rows = [{"prompt": f"tell me {i}"} for i in range(CTRL_C_ROWS)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    total = CTRL_C_ROWS * 4
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "executor": executor,
                "model": tiny_model,
                # A small batch, so that the piece takes seconds, not a blink.
                "engine": {"kind": "vllm", "max_model_len": 256, "max_num_seqs": 4},
                "datasets": [{"name": "stop", "path": str(data), "num_repeats": 4}],
                "sampling": {"max_tokens": 64, "temperature": 1.0, "seed": 5},
                "shard_size": CTRL_C_ROWS,
                "output": str(tmp_path / "out"),
                "metrics_port": 0,
            }
        )
    )
    out = str(tmp_path / "out")
    progress_file = Path(out, "_manifest", "progress.json")

    def done_so_far() -> int:
        try:
            return json.loads(progress_file.read_text())["run"]["done"]
        except (OSError, ValueError, KeyError):
            return 0

    rng = random.Random(executor)
    for round_ in range(INTERRUPTS):
        log = tmp_path / f"run-{round_}.log"
        proc = start(config, log)
        before = len(all_output_keys(out)) if storage.exists(Layout(out).job) else 0
        # Somewhere in the first half of what is left: a signal that lands after the
        # last rollout has nothing to keep, and says so in its own words.
        target = before + rng.randint(1, max(1, (total - before) // 2))
        wait_until(lambda t=target, p=proc: done_so_far() >= t or p.poll() is not None, 300, "work")
        if proc.poll() is not None:
            break  # it finished first: nothing to interrupt
        at_signal = done_so_far()
        os.killpg(proc.pid, signal.SIGINT)
        if proc.wait(timeout=120) == 0:
            break  # it finished just before the signal landed
        assert proc.returncode == 130, log.read_text()[-3000:]
        kept = rollout_ray_read(out)
        print(f"{executor} interrupt {round_}: {at_signal} done at the signal, {kept} kept")
        assert kept >= at_signal, (kept, at_signal)
        text = " ".join(log.read_text().split())  # as printed, wrapped or not
        assert f"the output holds {kept:,} of {total:,}" in text, text[-2000:]
        assert "run the same command again to resume" in text
    final = start(config, tmp_path / "final.log")
    assert final.wait(timeout=600) == 0, (tmp_path / "final.log").read_text()[-3000:]
    assert rollout_ray_read(out) == total
    assert set(all_output_keys(out).values()) == {1}


def rollout_ray_read(output: str) -> int:
    from rollout_ray import read_rollouts

    return read_rollouts(output).num_rows
