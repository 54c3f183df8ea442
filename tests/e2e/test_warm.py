"""Warm engines: `rollout-ray up` keeps an engine loaded, `run` with the same model and
engine settings runs on it (and writes what it writes anywhere), `down` stops it all.
A Ray of its own on loopback, started and stopped by the commands themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_jsonl

pytestmark = pytest.mark.slow


def test_up_run_on_the_warm_engine_then_down(ray_session, tmp_path, tiny_model):
    env = {
        **os.environ,
        "ROLLOUT_RAY_CACHE": str(tmp_path / "cache"),  # this test's warm.json, not the user's
        "ROLLOUT_RAY_DASHBOARD": "0",
    }
    env.pop("RAY_ADDRESS", None)

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rollout_ray.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"say {i}"} for i in range(12)])
    config = {
        "model": tiny_model,
        "engine": {"kind": "vllm", "max_model_len": 256},
        "datasets": [{"name": "w", "path": "in.jsonl", "num_repeats": 2}],
        "sampling": {"max_tokens": 8, "seed": 1},
        "output": "outputs/warm",
        "metrics_port": 0,
    }
    Path(tmp_path, "job.yaml").write_text(yaml.safe_dump(config))
    try:
        started = cli("up", "job.yaml")
        assert started.returncode == 0, started.stderr[-3000:]
        assert "warm:" in started.stderr
        started_state = (tmp_path / "cache" / "warm.json").read_text()
        state = json.loads(started_state)
        assert state["started_ray"] and len(state["engines"]) == 1
        for output in ("outputs/warm", "outputs/warm-2"):
            ran = cli("run", "job.yaml", f"output={output}")
            assert ran.returncode == 0, ran.stderr[-3000:]
            assert "running on the warm engine" in ran.stderr
            metrics = json.loads((tmp_path / output / "metrics.json").read_text())
            assert metrics["executor"] == "warm"
            assert metrics["datasets"]["w"]["ok"] == 24
        # The same job, cold (no warm engine), writes the same rollouts (seeded).
        cold = cli("run", "--no-warm", "job.yaml", "output=outputs/cold")
        assert cold.returncode == 0, cold.stderr[-3000:]
        assert "running on the warm engine" not in cold.stderr

        from rollout_ray import read_rollouts

        def texts(output: str) -> dict:
            table = read_rollouts(tmp_path / output).to_pylist()
            return {(r["task_id"], r["rollout_index"]): r["response_text"] for r in table}

        assert texts("outputs/warm") == texts("outputs/cold")
        # Other engine settings: not this engine's job; it says so and runs cold.
        other = cli("run", "job.yaml", "output=outputs/other", "engine.max_model_len=384")
        assert other.returncode == 0, other.stderr[-3000:]
        assert "warm engines are up for other" in other.stderr
    finally:
        stopped = cli("down")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "stopped 1 warm engine" in stopped.stderr
    assert not (tmp_path / "cache" / "warm.json").exists()
    # Only the warm engines' Ray is gone: the suite's own (another Ray of this user on
    # this machine, which `ray stop` would have stopped too) still runs tasks.
    assert ray_session.get(ray_session.remote(lambda: 1).remote(), timeout=120) == 1
    session = json.loads(started_state)["session_dir"]
    assert not any(session in " ".join(p.cmdline()) for p in _processes())


def _processes() -> list:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            proc.cmdline()
            found.append(proc)
        except psutil.Error:
            continue
    return found
