"""On a real multi-process Ray cluster on loopback: a job sent with `ray job submit`
(token authentication on, as Ray 2.60 starts clusters), and a worker node lost mid-job
and replaced, as a spot node would be."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import read_output, wait_until, write_jsonl
from ray_cluster import RAY, LocalCluster

from rollout_ray.config import load_config
from rollout_ray.run.submit import submit_command

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    cluster = LocalCluster(head_cpus=2)
    yield cluster
    cluster.shutdown()


def job_file(folder: Path, tiny_model: str, data: Path, output: Path, **engine) -> Path:
    path = folder / "job.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": tiny_model,
                "engine": {"kind": "vllm", "max_model_len": 256, **engine},
                "datasets": [{"name": "remote", "path": str(data), "num_repeats": 2}],
                "sampling": {"max_tokens": 16, "seed": 1},
                "output": str(output),
                "metrics_port": 0,
            }
        )
    )
    return path


def ray_series(cluster) -> set[str]:
    """Metric names on Ray's own Prometheus endpoint (what the Ray dashboard charts)."""
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return set()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def ray_state(cluster, kind: str) -> list[dict]:
    """`ray list KIND` through the head's dashboard (token authentication on)."""
    done = subprocess.run(
        [RAY, "list", kind, "--address", cluster.dashboard, "--format", "json", "--limit", "1000"],
        env={**cluster.env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []


def test_ray_job_submit_runs_a_job_to_the_end(cluster, tiny_model, tmp_path):
    work = tmp_path / "work"
    data = write_jsonl(work / "rows.jsonl", [{"prompt": f"a poem {i}"} for i in range(20)])
    output = tmp_path / "out"
    job_file(work, tiny_model, data, output)
    # The command `rollout-ray submit` prints, run as the user would (token auth on).
    job = load_config(work / "job.yaml")
    argv = submit_command(
        "job.yaml", [], cluster.dashboard, working_dir=str(work), no_wait=True, job=job
    )
    env = {**cluster.env, "RAY_AUTH_MODE": "token"}
    cluster.wait_for_agent()
    for _ in range(30):  # the job agent starts a little after the head
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            break
        assert "No available agent" in done.stderr + done.stdout, done.stderr[-2000:]
        time.sleep(2)
    job_id = re.search(r"rollout-ray-out-[\w-]+", done.stdout + done.stderr).group(0)
    deadline, state, series = time.monotonic() + 600, "", set()
    while time.monotonic() < deadline:
        series |= ray_series(cluster)
        status = subprocess.run(
            [RAY, "job", "status", "--address", cluster.dashboard, job_id],
            env=env,
            capture_output=True,
            text=True,
        )
        state = (status.stdout + status.stderr).upper()
        if any(s in state for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(3)
    logs = subprocess.run(
        [RAY, "job", "logs", "--address", cluster.dashboard, job_id],
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert "SUCCEEDED" in state, logs[-3000:]
    # Ray's Jobs page names it (its Name column is the metadata's job_name).
    detail = subprocess.run(
        [RAY, "list", "jobs", "--detail", "--address", cluster.dashboard, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    listed = [j for j in json.loads(detail.stdout) if j.get("submission_id") == job_id]
    assert listed and (listed[0].get("metadata") or {}).get("job_name") == "out", listed
    assert json.loads((output / "_manifest" / "progress.json").read_text())["job"] == "out"
    keys = Counter((r["task_id"], r["rollout_index"]) for r in read_output(output))
    assert set(keys) == {(f"rows:{i}", k) for i in range(20) for k in range(2)}
    assert max(keys.values()) == 1
    assert "[rollout-ray] 40/40 rollouts (100%, 40 committed)" in logs  # readable in logs
    # Our counters and the engine actors' own vLLM metrics reach Ray's metrics (and so
    # the Ray dashboard); Ray may push the last ones a moment after the job ends.
    for _ in range(20):
        wanted = ("ray_rollout_ray_rollouts", "ray_vllm_generation_tokens")
        if all(any(n.startswith(w) for n in series) for w in wanted):
            break
        time.sleep(1)
        series |= ray_series(cluster)
    assert any(n.startswith("ray_rollout_ray_rollouts") for n in series), sorted(series)
    assert any(n.startswith("ray_vllm_generation_tokens") for n in series), sorted(series)


def test_node_lost_mid_job_is_preemption_not_failure(cluster, tiny_model, tmp_path):
    spot = cluster.add_node(cpus=2, resources='{"spot": 4}')
    # Enough that most of the job is still to do when the node goes; pieces (32 rollouts
    # of 192 tokens, all ending together) long against the time a kill takes.
    rows = 160
    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"the sea {i}"} for i in range(rows)])
    output = tmp_path / "out"
    config = job_file(tmp_path, tiny_model, data, output, resources={"spot": 1}, shards_in_flight=2)
    yaml_config = yaml.safe_load(config.read_text())
    yaml_config.update(shard_size=16, sampling={"max_tokens": 192, "min_tokens": 192, "seed": 1})
    config.write_text(yaml.safe_dump(yaml_config))
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "rollout_ray.cli", "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**cluster.env, "RAY_ADDRESS": cluster.address},
        )
    progress = output / "_manifest" / "progress.json"

    seen = {"mtime": 0.0}

    def spot_engine_running() -> bool:
        assert driver.poll() is None, log.read_text()[-3000:]
        if not progress.exists() or progress.stat().st_mtime == seen["mtime"]:
            return False
        seen["mtime"] = progress.stat().st_mtime
        run = json.loads(progress.read_text())["run"]
        # Killed with half of the job still to do, while its engine runs pieces: on a
        # progress file just written (an older one may count pieces that have since
        # committed, and a kill between two pieces has nothing to redo or count), with
        # no rollout of a running piece finished yet (once, both pieces had all theirs
        # done, off the engine and being committed: nothing was left to redo).
        return (
            64 <= run["committed"] <= run["todo"] // 2
            and run["pieces_running"] >= 1
            and run["in_flight"] == 0
        )

    wait_until(spot_engine_running, 300, "half of the job left, pieces running", every=0.05)
    in_flight_before = json.loads(progress.read_text())["run"]
    assert cluster.kill_node(spot) > 0  # the node is gone: raylet, its actors, everything

    def waiting_for_capacity() -> bool:
        """Ray saw the engine actor go and can't place it again (no node has `spot`);
        the driver is alive all the while."""
        assert driver.poll() is None, log.read_text()[-3000:]
        return any(
            "EngineWorker" in actor.get("class_name", "")
            and actor.get("state") in ("RESTARTING", "PENDING_CREATION")
            for actor in ray_state(cluster, "actors")
        )

    # Once, a 20 s sleep stood here; now the test waits for the state it means.
    wait_until(waiting_for_capacity, 300, "the engine actor to wait for a node")
    assert driver.poll() is None  # no node can hold the engine now: the job waits
    cluster.add_node(cpus=2, resources='{"spot": 4}')  # the replacement node
    assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    keys = Counter((r["task_id"], r["rollout_index"]) for r in read_output(output))
    assert set(keys) == {(f"rows:{i}", k) for i in range(rows) for k in range(2)}
    assert max(keys.values()) == 1
    assert read_output(output, "failures") == []  # lost work is not a row failure
    run = json.loads((output / "metrics.json").read_text())["run"]
    facts = {k: run[k] for k in ("retries", "pieces_redone_after_preemption", "engine_starts")}
    assert run["retries"]["preemption"] >= 1 and run["retries"]["piece"] == 0, (
        facts,
        in_flight_before,
    )
    # Only the lost node's in-flight pieces were redone: one actor, 2 pieces in flight.
    assert 1 <= run["pieces_redone_after_preemption"] <= 2, (run, in_flight_before)
