"""What a config field means for resume is declared on the field (`RESUME_FREE`); the
resume fingerprint reads it from there."""

from __future__ import annotations

import pytest

from rollout_ray.config import ENGINE_CONFIGS, JobConfig, free_on_resume, load_config
from rollout_ray.output.plan import fingerprint, semantic_config


def job(**changes) -> JobConfig:
    data = {
        "model": "m",
        "engine": {"kind": "vllm"},
        "datasets": [{"name": "d", "path": "in.jsonl"}],
        "output": "out",
    }
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return load_config(data)


@pytest.mark.parametrize(
    "change",
    [
        {"engine__concurrency": 4},
        {"engine__cpu_threads": 2},
        {"engine__env": {"X": "1"}},
        {"max_attempts": 7},
        {"metrics_port": 0},
        {"output": "elsewhere"},
    ],
)
def test_how_a_job_runs_may_change_on_resume(change):
    assert fingerprint(semantic_config(job(**change))) == fingerprint(semantic_config(job()))


@pytest.mark.parametrize(
    "change",
    [
        {"sampling__temperature": 0.3},
        {"engine__max_model_len": 512},
        {"engine__dtype": "float32"},
        {"model": "other"},
        {"shard_size": 10},
    ],
)
def test_what_a_job_writes_refuses_a_changed_resume(change):
    assert fingerprint(semantic_config(job(**change))) != fingerprint(semantic_config(job()))


@pytest.mark.parametrize("kind", list(ENGINE_CONFIGS))
def test_the_fingerprint_keeps_exactly_the_fields_not_marked_free(kind):
    config = load_config(
        {"model": "m", "engine": {"kind": kind}, "datasets": [{"path": "x.jsonl"}], "output": "o"}
    )
    kept = semantic_config(config)
    for name, info in type(config.engine).model_fields.items():
        assert (name in kept["engine"]) != free_on_resume(info), name
    for name, info in JobConfig.model_fields.items():
        assert (name in kept) != free_on_resume(info), name


def test_a_field_added_later_keeps_older_outputs_resumable():
    """Outputs written before a field existed resume when it is at what the code did
    without it (`added_later`), and are refused, naming it, when it is not."""
    gym = {"kind": "gym", "url": "http://127.0.0.1:8000"}
    math = {"kind": "math"}
    agent_job = job(datasets=[{"name": "d", "path": "in.jsonl", "agent": gym}])
    agent = semantic_config(agent_job)["datasets"][0]["agent"]
    assert not {"command", "env", "session"} & set(agent)  # as written before MCP came
    per_episode = job(
        datasets=[{"name": "d", "path": "in.jsonl", "agent": {**gym, "session": "episode"}}]
    )
    assert semantic_config(per_episode)["datasets"][0]["agent"]["session"] == "episode"

    def verifier(**fields):
        config = job(datasets=[{"name": "d", "path": "in.jsonl", "verifier": {**math, **fields}}])
        return semantic_config(config)["datasets"][0]["verifier"]

    # Restated answers scored before the field: an old output resumes with it on, and
    # the new default (off) is a change its resume names.
    assert "reward_restated" not in verifier(reward_restated=True)
    assert verifier()["reward_restated"] is False
