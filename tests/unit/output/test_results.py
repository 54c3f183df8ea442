"""Reading an output from Python: an empty result still has its columns."""

from __future__ import annotations

from helpers import write_jsonl

from rollout_ray import read_failures, read_rollouts, run_job
from rollout_ray.config import load_config
from rollout_ray.output.schema import FAILURE_SCHEMA, ROLLOUT_CORE


def test_an_output_without_failures_reads_as_the_failure_schema_with_no_row(tmp_path):
    """Seen before: a 0-column table, so `failures["error"]` raised KeyError."""
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}"} for i in range(3)])
    config = {
        "model": "sim",
        "engine": {"kind": "simulated", "output_tokens": 3},
        "datasets": [{"name": "d", "path": str(rows)}],
        "output": str(tmp_path / "out"),
        "metrics": False,
    }
    run_job(load_config(config))
    failures = read_failures(tmp_path / "out")
    assert failures.num_rows == 0 and failures.schema == FAILURE_SCHEMA
    assert failures["error"].to_pylist() == []
    none = read_rollouts(tmp_path / "out", datasets=["other"])
    assert none.num_rows == 0 and none.schema.names == ROLLOUT_CORE.names
    picked = read_rollouts(tmp_path / "out", datasets=["other"], columns=["task_id", "reward"])
    assert picked.column_names == ["task_id", "reward"]
    assert read_rollouts(tmp_path / "out").num_rows == 3
