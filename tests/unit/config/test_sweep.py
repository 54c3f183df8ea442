"""Sweeps: every setting is validated as the config's own values are, and names a safe
folder of the output (issue 23: sweep values once skipped validation)."""

from __future__ import annotations

import re

import pytest
from helpers import read_output, write_jsonl

from rollout_ray import run_job
from rollout_ray.config import load_config
from rollout_ray.errors import ConfigError


def sweep_job(tmp_path, sweep: dict) -> dict:
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q {i}"} for i in range(2)])
    return {
        "model": "sim",
        "engine": {"kind": "simulated"},
        "datasets": [{"name": "d", "path": str(data)}],
        "output": str(tmp_path / "work" / "out"),
        "metrics_port": 0,
        "sweep": sweep,
    }


def test_sweep_values_name_safe_folders_and_the_job_runs(tmp_path):
    """A sweep over `stop` with `a/../../../ESCAPED` wrote job.json and the plan, then
    crashed; a plain `stop: ["Question:"]` sweep could not run either."""
    stops = [["a/../../../ESCAPED"], ["Question:"], ["Question;"]]
    config = load_config(sweep_job(tmp_path, {"stop": stops}))
    names = [d.name for d in config.datasets]
    assert len(set(names)) == 3  # ':' and ';' read alike, the names differ
    assert all(re.fullmatch(r"d\.stop-[A-Za-z0-9_.\-]+", n) for n in names), names
    assert run_job(config).status == "finished"
    records = read_output(tmp_path / "work" / "out")
    assert sorted(r["sampling"]["stop"] for r in records) == sorted(stops * 2)
    outside = [p for p in tmp_path.rglob("*") if "out" not in p.relative_to(tmp_path).parts]
    assert sorted(p.name for p in outside) == ["in.jsonl", "work"]  # nothing escaped
    # Numbers keep their readable names (and existing outputs theirs).
    plain = load_config(sweep_job(tmp_path, {"temperature": [0.2, 1]}))
    assert [d.name for d in plain.datasets] == ["d.temperature-0.2", "d.temperature-1"]


@pytest.mark.parametrize(
    ("key", "value"), [("temperature", -1), ("max_tokens", "many"), ("top_p", 2)]
)
def test_sweep_values_are_refused_as_the_same_value_in_sampling_is(tmp_path, key, value):
    job = sweep_job(tmp_path, {})
    with pytest.raises(ConfigError, match=f"sampling.{key}"):
        load_config({**job, "sampling": {key: value}})
    with pytest.raises(ConfigError, match=rf"sweep\.{key}: {value!r} is not allowed"):
        load_config({**job, "sweep": {key: [0.5 if key != "max_tokens" else 8, value]}})
