"""Tracking: a run's config, progress, figures, histograms and samples reach MLflow (a
file store) and W&B (offline), and a broken tracker never stops the job."""

from __future__ import annotations

import json

import pytest
from helpers import write_jsonl

import rollout_ray

pytestmark = pytest.mark.slow

#: Given as a command-line override (`engine.env.MY_API_KEY=...`): trackers receive the
#: config, overrides included, and must receive it masked.
CANARY = "sk-canary-TRACKER-3e8d21"
SECRET_OVERRIDE = f"engine.env.MY_API_KEY={CANARY}"


def canary_files(folder) -> list[str]:
    """Every file under a tracker's folder that holds the canary (binary files too)."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]


def job(tmp_path, tracking: dict) -> dict:
    data = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": f"q {i}", "expected_answer": "x"} for i in range(10)]
    )
    return {
        "model": "sim",
        "engine": {"kind": "simulated", "output_tokens": 3},
        "datasets": [{"path": str(data), "num_repeats": 2, "verifier": {"kind": "exact_match"}}],
        "metrics_port": 0,
        "tracking": {"sample_rows": 5, "every_s": 0.01, **tracking},
    }


def test_mlflow_file_store(ray_session, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 prefers a database
    store = f"file:{tmp_path / 'mlruns'}"
    result = rollout_ray.run(
        job(tmp_path, {"kind": "mlflow", "uri": store, "project": "rr-test"}),
        SECRET_OVERRIDE,
        output=str(tmp_path / "out"),
    )
    assert result.status == "finished"
    client = mlflow.tracking.MlflowClient(store)
    experiment = client.get_experiment_by_name("rr-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [(r.info.run_name, r.data.tags, r.data.metrics) for r in runs]
    (run,) = runs
    assert run.info.run_name == "out" and run.data.tags["status"] == "finished"
    assert run.data.params["engine.kind"] == "simulated"
    assert run.data.metrics["in/ok"] == 20.0
    assert run.data.metrics["in/reward_mean"] == 0.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "samples.json" in artifacts and "reward_histogram" in artifacts
    samples = json.loads(
        (
            tmp_path
            / "mlruns"
            / experiment.experiment_id
            / run.info.run_id
            / "artifacts"
            / "samples.json"
        ).read_text()
    )
    assert len(samples["data"]) == 5
    assert "engine.env.MY_API_KEY=[redacted]" in run.data.params["cli_overrides"]
    assert canary_files(tmp_path / "mlruns") == []


def test_wandb_offline_and_a_tracker_that_breaks(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = rollout_ray.run(
        job(tmp_path, {"kind": "wandb", "mode": "offline", "uri": str(tmp_path / "wb")}),
        SECRET_OVERRIDE,
        output=str(tmp_path / "out"),
    )
    assert result.status == "finished"
    # Offline, W&B keeps the run in one .wandb file (what `wandb sync` uploads): the
    # config, the logged figures and the summary are in it.
    (run_file,) = (tmp_path / "wb").rglob("run-*.wandb")
    data = run_file.read_bytes()
    assert b"in/ok" in data and b"in/reward_mean" in data and b"samples" in data
    assert b'"finished"' in data and b"simulated" in data
    assert b"engine.env.MY_API_KEY=[redacted]" in data
    assert canary_files(tmp_path / "wb") == []
    # A tracker that can't be reached stops tracking, not the job.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    broken = job(tmp_path, {"kind": "mlflow", "uri": "http://127.0.0.1:9"})
    again = rollout_ray.run(broken, output=str(tmp_path / "out2"))
    assert again.status == "finished"
