"""`rollout-ray submit` never puts a secret on a Ray job's command line: Ray stores a
job's entrypoint with the job (its table, the dashboard, `ray job list`)."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


def test_submit_refuses_a_secret_override_and_prints_no_command(tmp_path):
    config = tmp_path / "job.yaml"
    job = {"model": "m", "engine": {"kind": "simulated"}, "datasets": [{"path": "in.jsonl"}]}
    config.write_text(yaml.safe_dump({**job, "output": "out"}))

    def submit(*overrides: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "rollout_ray.cli", "submit", str(config), *overrides]
        return subprocess.run(argv, capture_output=True, text=True, env={**os.environ})

    refused = submit("engine.env.MY_TOKEN=sk-submit-canary-77", "sampling.temperature=0.2")
    assert refused.returncode == 2
    assert "engine.env.MY_TOKEN: a secret on the command line" in refused.stderr
    assert "sk-submit-canary-77" not in refused.stdout + refused.stderr
    fine = submit("sampling.temperature=0.2")
    assert fine.returncode == 0 and "rollout-ray run" in fine.stdout
    assert fine.stdout.rstrip().endswith("sampling.temperature=0.2")
