"""CPU priority on the local Ray that `rollout-ray run executor=ray` starts, as `ps -o ni`
shows it while the job runs: the engine actor (and the raylet, whose nice every new
worker inherits) at normal priority, Ray's daemons and the job's bookkeeping below."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import read_output, write_jsonl

pytestmark = pytest.mark.slow


def niceness_while_running(command: list[str], log: Path, env: dict | None = None) -> dict:
    """Each process's nice (its lowest-priority thread's) by what it is, sampled until the
    job ends; the last sample of each wins."""
    with open(log, "wb") as stderr:  # a file, not a pipe nobody reads while it runs
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    seen: dict[str, int] = {}
    driver = psutil.Process(job.pid)
    while job.poll() is None:
        try:
            procs = [driver, *driver.children(recursive=True)]
        except psutil.Error:
            break
        for proc in procs:
            try:
                name = " ".join(proc.cmdline())
                nice = max(psutil.Process(t.id).nice() for t in proc.threads())
            except psutil.Error:
                continue
            for mark in (
                "EngineWorker",
                "raylet/raylet",
                "gcs_server",
                "ray::DashboardAgent",
                "ray::_StatsActor",
                "ray::Coordinator",
                "dashboard/dashboard.py",
            ):
                if mark in name:
                    seen[mark] = nice
            if proc is driver:
                seen["driver"] = nice
                seen["driver main thread"] = proc.nice()  # the thread whose id is the pid
        time.sleep(0.5)
    assert job.wait() == 0, log.read_text()[-3000:]
    return seen


def run_command(tmp_path, name: str, rows: int = 40) -> list[str]:
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"q {i}"} for i in range(rows)])
    return [
        sys.executable,
        "-m",
        "rollout_ray.cli",
        "run",
        "model=simulated",
        # 0.5 s a rollout, one at a time (40 rows: 20 s): long enough to see each process.
        "engine={kind: simulated, latency_s: 0.5, max_num_seqs: 1}",
        "executor=ray",
        f"datasets=[{{path: {data}}}]",
        f"output={tmp_path / name}",
    ]


def test_ray_yields_the_cores_to_the_engine(tmp_path):
    seen = niceness_while_running(run_command(tmp_path, "out"), tmp_path / "stderr.txt")
    assert seen.get("EngineWorker") == 0, seen
    assert seen.get("raylet/raylet") == 0, seen  # else new engine workers start lowered
    assert seen.get("gcs_server") == 10, seen
    assert seen.get("ray::Coordinator") == 10, seen
    assert seen.get("ray::DashboardAgent") == 19, seen
    assert seen.get("ray::_StatsActor") == 19, seen
    assert seen.get("dashboard/dashboard.py") == 19, seen
    # The driver's main thread stays as it was; its Ray and Ray Data threads are lowered.
    assert seen.get("driver") == 10, seen
    assert seen.get("driver main thread") == 0, seen
    assert psutil.Process().nice() == 0
    assert len(read_output(tmp_path / "out")) == 40


def test_lowering_can_be_turned_off(tmp_path):
    env = {**os.environ, "ROLLOUT_RAY_LOWER_RAY": "0"}
    command = run_command(tmp_path, "out", rows=16)
    seen = niceness_while_running(command, tmp_path / "stderr.txt", env)
    assert seen.get("EngineWorker") == 0, seen
    assert seen.get("gcs_server") == 0 and seen.get("ray::DashboardAgent") == 0, seen
