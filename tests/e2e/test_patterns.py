"""The development and scale patterns on the real engine, at small size: sweeps,
multi-dataset mixes, and every example in configs/ in its smallest form."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import job_config, read_output, write_jsonl

from rollout_ray import load_config, run_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def test_sweep_shares_the_engine_and_compares_settings(ray_session, tiny_model, tmp_path):
    data = write_jsonl(
        tmp_path / "q.jsonl", [{"prompt": f"the sea {i}", "expected_answer": "a"} for i in range(6)]
    )
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [
            {
                "name": "q",
                "path": str(data),
                "num_repeats": 2,
                "verifier": {"kind": "regex", "pattern": "a"},
            }
        ],
        sweep={"temperature": [0.5, 1.0], "top_p": [0.9, 1.0]},
    )
    result = run_job(config)
    # One engine per actor for all four settings, not one per setting.
    assert result.progress["run"]["engine_starts"] == 1
    records = read_output(tmp_path / "out")
    assert len(records) == 4 * 6 * 2
    by_setting = Counter((r["sampling"]["temperature"], r["sampling"]["top_p"]) for r in records)
    assert by_setting == {(t, p): 12 for t in (0.5, 1.0) for p in (0.9, 1.0)}
    prefixes = sorted(p.name for p in Path(tmp_path, "out", "data").iterdir())
    assert prefixes == [
        "dataset=q.temperature-0.5.top_p-0.9",
        "dataset=q.temperature-0.5.top_p-1.0",
        "dataset=q.temperature-1.0.top_p-0.9",
        "dataset=q.temperature-1.0.top_p-1.0",
    ]
    rows = result.metrics["sweep"]
    assert [(r["setting"]["temperature"], r["setting"]["top_p"]) for r in rows] == [
        (0.5, 0.9),
        (0.5, 1.0),
        (1.0, 0.9),
        (1.0, 1.0),
    ]
    # Each row's figures, worked out again from that setting's records.
    for row in rows:
        mine = [
            r
            for r in records
            if (r["sampling"]["temperature"], r["sampling"]["top_p"])
            == (row["setting"]["temperature"], row["setting"]["top_p"])
        ]
        rewards = [r["reward"] for r in mine]
        by_task: dict[str, list[float]] = {}
        for r in mine:
            by_task.setdefault(r["task_id"], []).append(r["reward"])
        pass1 = sum(sum(v) / len(v) for v in by_task.values()) / len(by_task)
        pass2 = sum(max(v) for v in by_task.values()) / len(by_task)
        tokens = sum(r["output_tokens"] for r in mine)
        assert row["dataset"] == "q" and row["rollouts"] == 12
        assert row["mean_reward"] == pytest.approx(sum(rewards) / 12)
        assert row["pass_at"] == {"1": pytest.approx(pass1), "2": pytest.approx(pass2)}
        assert row["output_tokens"] == tokens and row["tokens_per_rollout"] == tokens / 12
        latency = sum(r["latency_s"] for r in mine) / 12
        assert row["latency_s"] == pytest.approx(latency, rel=1e-5)  # stored as float32


def test_mix_by_weights_then_export_the_mix(ray_session, tiny_model, tmp_path):
    from rollout_ray.exports import export

    sets = []
    for name in ("math", "code", "chat"):
        path = write_jsonl(
            tmp_path / f"{name}.jsonl", [{"prompt": f"{name} question {i}"} for i in range(40)]
        )
        sets.append(
            {"name": name, "path": str(path), "weight": {"math": 6, "code": 3, "chat": 1}[name]}
        )
    sets[1]["num_repeats"] = 3  # each dataset keeps its own repeats and sampling
    sets[2]["sampling"] = {"temperature": 0.2}
    config = job_config(tiny_model, tmp_path / "out", sets, total_rollouts=50)
    result = run_job(config)
    counts = {name: d["ok"] for name, d in result.datasets.items()}
    assert counts == {"math": 30, "code": 15, "chat": 5}
    records = read_output(tmp_path / "out")
    assert {r["sampling"]["temperature"] for r in records if r["dataset"] == "chat"} == {0.2}
    report = export(
        "mix",
        str(tmp_path / "out"),
        str(tmp_path / "mix.jsonl"),
        weights={"math": 0.5, "code": 0.25, "chat": 0.25},
        total=20,
        seed=1,
    )
    mixed = [json.loads(line) for line in (tmp_path / "mix.jsonl").read_text().splitlines()]
    assert report.rows_written == len(mixed) == 20
    assert Counter(m["dataset"] for m in mixed) == {"math": 10, "code": 5, "chat": 5}
    assert [m["dataset"] for m in mixed] != sorted(m["dataset"] for m in mixed)  # shuffled
    assert all(m["messages"][-1]["role"] == "assistant" for m in mixed)


def smallest(name: str, tiny_model: str, extra: list[str] | None = None, limit: int | None = 2):
    """A configs/ example as a user loads it from the repository root (its own relative
    output), shrunk: 2 rows, the tiny model."""
    path = Path("configs") / name
    overrides = ["metrics_port=0", *(extra or [])]
    config = load_config(path, overrides, limit=limit)
    if config.engine.kind == "vllm":
        # Agent episodes carry their tools' descriptions: the tiny model's whole context.
        context = 1024 if any(d.agent for d in config.datasets) else 512
        overrides += [f"model={tiny_model}", f"engine.max_model_len={context}"]
        if config.engine.device != "cpu":
            overrides += ["engine.device=cpu", "engine.num_gpus=0", "engine.concurrency=1"]
    return load_config(path, overrides, limit=limit)


def readme_commands(output: str) -> list[str]:
    """The README's commands that read the output `output` (export, inspect, verify),
    from its tables, as written."""
    found = []
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("|"):
            for command in re.findall(r"`(rollout-ray [^`]+)`", line):
                reads = command.split()[1] in ("export", "inspect", "verify")
                if reads and output in shlex.split(command)[2:]:
                    found.append(command)
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_example_runs_in_its_smallest_form(
    name, ray_session, tiny_model, tmp_path, monkeypatch, gym_server
):
    """Each configs/ example runs as a user runs it from the repository root (relative
    paths, its own relative output), at 2 rows per dataset: on the tiny model where it
    uses the embedded one (the embedded model itself is exercised by test_smollm2),
    against a real local HTTP endpoint where it calls an API, on a Serve app where it
    serves, against NeMo Gym's own resources server where it runs Gym agents. Then the
    README's commands that read that output run as written, and the output reads back
    whole (tests/e2e/conftest.py checks every output against its commits)."""
    from fault_server import FaultServer

    from rollout_ray import read_rollouts
    from rollout_ray.run.pipeline import run_pilot
    from rollout_ray.serve import deploy as serving

    shutil.copytree(CONFIGS, tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    extra: list[str] = []
    if name == "continuous.yaml":
        write_jsonl(Path("inbox") / "a.jsonl", [{"prompt": f"hello {i}"} for i in range(3)])
    raw = load_config(Path("configs") / name)
    for i, dataset in enumerate(raw.datasets):
        if dataset.agent is not None and dataset.agent.kind == "gym":
            extra.append(f"datasets.{i}.agent.url={gym_server('example_session_state_mgmt').url}")
    if raw.engine.kind == "openai" and raw.serve is None:
        server = FaultServer(api_key="sk-config-test").start()
        monkeypatch.setenv(raw.engine.api_key_env or "UNUSED_KEY", "sk-config-test")
        extra.append(f"engine.base_url={server.url}")
    if raw.output.startswith("s3://"):
        extra.append("output=outputs/cluster")  # a bucket of the user's (marked CHANGE)
    if raw.serve is not None:
        from ray import serve

        serve.shutdown()  # another test's Serve proxy listens on another port
        port = free_port()
        extra += [
            f"model={tiny_model}",
            f"serve.port={port}",
            "serve.max_model_len=512",
            f"engine.base_url=http://127.0.0.1:{port}/v1",
        ]
    # The pilot runs 2 rows of the full job: that is its smallest form.
    limit = None if name == "cost-pilot.yaml" else 2
    config = smallest(name, tiny_model, extra, limit)
    assert config.output == str(tmp_path / "outputs" / config.output.rsplit("/", 1)[-1])
    if config.serve is not None:
        serving.deploy(config)
    try:
        if name == "cost-pilot.yaml":
            result, projection = run_pilot(config, 2)
            # 2 rows x 4 repeats ran; the sample's 64 rows x 4 are projected, priced at
            # $0.35 per GPU-hour for 1 GPU (no token prices in this example).
            assert (projection.pilot_rollouts, projection.full_rollouts) == (8, 256)
            hours = projection.seconds / 3600
            assert projection.cost["total"] == pytest.approx(0.35 * hours, rel=1e-3)
        else:
            result = run_job(config)
    finally:
        if config.serve is not None:
            serving.stop(config)
    assert result.status == "finished"
    done = sum(d["ok"] for d in result.datasets.values())
    assert done > 0 and sum(d["failed"] for d in result.datasets.values()) == 0
    relative = os.path.relpath(result.output, tmp_path)
    assert read_rollouts(relative).num_rows == done
    shows_its_feature(config, relative)
    for command in readme_commands(relative):
        argv = shlex.split(command)[1:]
        ran = subprocess.run(
            [sys.executable, "-m", "rollout_ray.cli", *argv], capture_output=True, text=True
        )
        # An export of the tiny model's rollouts may hold no rows (no reward reaches its
        # threshold): then it says why and exits 2, never writing an empty file.
        said = ran.stdout + ran.stderr
        empty = ran.returncode == 2 and "nothing to export" in said
        assert ran.returncode == 0 or empty, f"{command}: {said[-2000:]}"


def shows_its_feature(config, output: str) -> None:
    """An example's smallest run shows what the example is for: its eval gives pass@k.
    (On the tiny model's gibberish, an agent's forced calls never close and DPO has no
    reward to tell answers apart: e2e/test_smollm2.py runs those two on the embedded
    model.)"""
    from rollout_ray.exports.evaluation import eval_metrics

    if config.output.endswith("/eval"):
        for found in eval_metrics(output)["datasets"].values():
            ks = [k for k in found["metrics"] if k.startswith("pass@")]
            assert len(ks) >= 2, found["metrics"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
