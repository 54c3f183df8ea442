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


def test_submit_reads_the_config_in_the_working_dir_and_names_the_job(tmp_path):
    """Seen before: `submit configs/x.yaml --working-dir DIR` looked for the config in the
    current directory, and the Jobs page showed Name "-" and metadata={}."""
    import json
    import shlex

    work = tmp_path / "project"
    (work / "configs").mkdir(parents=True)
    job = {"model": "m", "engine": {"kind": "simulated"}, "datasets": [{"path": "in.jsonl"}]}
    (work / "configs" / "nightly.yaml").write_text(yaml.safe_dump({**job, "output": "out/n1"}))
    argv = [sys.executable, "-m", "rollout_ray.cli", "submit", "configs/nightly.yaml"]
    done = subprocess.run(
        [*argv, "--working-dir", str(work), "--address", "http://head:8265"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the working dir
    )
    assert done.returncode == 0, done.stderr
    words = shlex.split(done.stdout.strip().removeprefix("RAY_AUTH_MODE=token "))
    submission = words[words.index("--submission-id") + 1]
    metadata = json.loads(words[words.index("--metadata-json") + 1])
    assert submission.startswith("rollout-ray-n1-")
    assert metadata["job_name"] == "n1" and metadata["rollout_ray_config"] == "configs/nightly.yaml"
    assert words[-3:] == ["rollout-ray", "run", "configs/nightly.yaml"]  # relative, as shipped


def test_a_submitted_job_is_named_in_its_metrics_and_progress(tmp_path, monkeypatch):
    """The name `ray job submit` gave the job (Ray hands the driver its metadata) labels
    the metrics (`rollout_job`) and progress.json; seen before: `coordinator-<hash>`."""
    import json
    import socket

    import httpx
    from helpers import write_jsonl
    from prometheus_client.parser import text_string_to_metric_families

    from rollout_ray import run_job
    from rollout_ray.config import load_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metadata = {"job_name": "nightly-sft", "job_submission_id": "rollout-ray-nightly-1"}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": metadata}))
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "hi"}])
    config = {
        "model": "m",
        "engine": {"kind": "simulated"},
        "datasets": [{"name": "d", "path": str(rows)}],
        "output": str(tmp_path / "out"),
        "metrics_port": port,
    }
    run_job(load_config(config))
    progress = json.loads((tmp_path / "out" / "_manifest" / "progress.json").read_text())
    assert progress["job"] == "nightly-sft"
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    jobs = {
        sample.labels.get("rollout_job")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name.startswith("rollout_ray")
    }
    assert jobs == {"nightly-sft"}
