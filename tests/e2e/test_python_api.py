"""The Python API as a notebook or a training loop uses it: run, read, export, again."""

from __future__ import annotations

import json

import pytest
from helpers import write_jsonl

import rollout_ray
from rollout_ray.errors import ConfigError

pytestmark = pytest.mark.slow


def test_collect_read_export_collect_again(ray_session, tmp_path):
    data = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": f"q {i}", "answer": i} for i in range(20)]
    )
    base = {
        "model": "sim",
        "engine": {"kind": "simulated", "output_tokens": 5},
        "datasets": [{"path": str(data), "num_repeats": 2}],
        "metrics_port": 0,
    }
    for round_ in (1, 2):  # collect -> (train) -> collect, each round its own output
        output = tmp_path / f"round-{round_}"
        result = rollout_ray.run(base, "sampling.temperature=0.5", output=str(output), limit=8)
        assert result.status == "finished" and result.output == str(output)
        table = rollout_ray.read_rollouts(output)
        assert table.num_rows == 16  # 8 rows x 2
        assert set(table.column("dataset").to_pylist()) == {"in"}
        assert all(s["temperature"] == 0.5 for s in table.column("sampling").to_pylist())
        ds = rollout_ray.read_rollouts(output, columns=["task_id"], ray_dataset=True)
        assert ds.count() == 16
        report = rollout_ray.export("sft", str(output), str(tmp_path / f"sft-{round_}.jsonl"))
        assert report.rows_written == 16
        lines = (tmp_path / f"sft-{round_}.jsonl").read_text().splitlines()
        assert json.loads(lines[0])["messages"][-1]["role"] == "assistant"
        assert rollout_ray.read_failures(output).num_rows == 0
    # Keywords with __ for dots, and the same refusals as the CLI.
    with pytest.raises(ConfigError, match="temprature"):
        rollout_ray.run(base, output=str(tmp_path / "x"), sampling__temprature=0.2)
