"""Which executor `executor: auto` picks: in process for a job of at most
`local_max_rollouts` with one engine on this machine, Ray for anything else."""

from __future__ import annotations

import pytest
from helpers import write_jsonl

from rollout_ray import storage
from rollout_ray.config import load_config
from rollout_ray.output.manifest import Layout
from rollout_ray.output.plan import build_plan, shards_table
from rollout_ray.run import ray_facts
from rollout_ray.run.local import choose_executor


def config_for(tmp_path, rows=10, repeats=2, **fields):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"p{i}"} for i in range(rows)])
    dataset = {"name": "rows", "path": str(path), "num_repeats": repeats}
    dataset.update(fields.pop("dataset", {}))
    data = {"model": "sim", "datasets": [dataset], "output": str(tmp_path / "out"), **fields}
    return load_config(data)


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    """As a fresh process: no cluster address, no Ray connected (the suite's own Ray
    session may be up in this process)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_ID", raising=False)
    monkeypatch.setattr(ray_facts, "in_ray", lambda: False)


def planned(config):
    _, shards = build_plan(config)
    layout = Layout(config.output)
    storage.write_parquet_atomic(layout.plan, shards_table(shards))
    return layout


def test_a_limited_job_is_decided_before_planning(tmp_path):
    assert choose_executor(config_for(tmp_path, dataset={"limit": 5})) == "local"
    big = config_for(tmp_path, dataset={"limit": 1500}, repeats=2)  # 3,000 rollouts
    assert choose_executor(big) == "ray"


def test_an_unlimited_job_is_decided_by_its_plan(tmp_path):
    small = config_for(tmp_path, rows=10)
    assert choose_executor(small) == ""
    assert choose_executor(small, layout=planned(small)) == "local"
    large = config_for(tmp_path / "l", rows=600, repeats=4)  # 2,400 rollouts
    assert choose_executor(large, layout=planned(large)) == "ray"
    edge = config_for(tmp_path / "e", rows=600, repeats=4, local_max_rollouts=2400)
    assert choose_executor(edge, layout=planned(edge)) == "local"


@pytest.mark.parametrize(
    "fields",
    [
        {"engine": {"kind": "simulated", "concurrency": 2}},
        {"engine": {"kind": "simulated", "resources": {"spot": 1}}},
        {"dataset": {"verifier": {"kind": "python", "function": "m:f"}}},
    ],
)
def test_what_needs_ray_goes_to_ray(tmp_path, fields):
    fields = {**fields, "dataset": {"limit": 2, **fields.get("dataset", {})}}
    assert choose_executor(config_for(tmp_path, **fields)) == "ray"


def test_watch_a_cluster_a_connected_ray_and_the_users_choice(tmp_path, monkeypatch):
    config = config_for(tmp_path, dataset={"limit": 2})
    assert choose_executor(config, watch_s=5) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert choose_executor(config) == "ray"
    forced = config_for(tmp_path, dataset={"limit": 2}, executor="local")
    assert choose_executor(forced) == "local"  # the user's word, even on a cluster
    monkeypatch.delenv("RAY_ADDRESS")
    assert choose_executor(config_for(tmp_path, rows=3, executor="ray")) == "ray"
    monkeypatch.setattr(ray_facts, "in_ray", lambda: True)  # ray.init() was called
    assert choose_executor(config) == "ray"
