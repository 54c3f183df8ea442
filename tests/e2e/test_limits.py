"""The same limits at every stage: a row the run accepts can be verified again and
exported by every export kind; a row the run refuses is refused alike by every
executor, as a failure naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_output

from rollout_ray import load_config, run_job
from rollout_ray.inputs.nesting import MAX_DEPTH

pytestmark = pytest.mark.slow

#: Levels of `metadata` in rows at the limit (the row itself is one more), past it by
#: one, and as deep as the reported rows (1,500 differed by executor; 5,000 stopped
#: `export gym` and `verify` after an exit-0 run).
DEPTHS = [MAX_DEPTH - 1, MAX_DEPTH, 1_500, 5_000]


def deep_rows(path: Path) -> Path:
    """Six plain rows, then one row per depth, written as text (no recursion here)."""
    lines = [json.dumps({"prompt": f"plain {i}", "expected_answer": "alpha"}) for i in range(6)]
    for depth in DEPTHS:
        nest = '{"a": ' * depth + "1" + "}" * depth
        lines.append(f'{{"prompt": "depth {depth}", "expected_answer": "x", "metadata": {nest}}}')
    path.write_text("\n".join(lines) + "\n")
    return path


def job(path: Path, output: Path, executor: str):
    return load_config(
        {
            "model": "sim",
            "engine": {"kind": "simulated", "output_tokens": 2},
            "executor": executor,
            "datasets": [
                {
                    "path": str(path),
                    "num_repeats": 4,
                    # Rewards of 0 and 1 among each row's rollouts: every export has rows.
                    "verifier": {"kind": "regex", "pattern": "^(alpha|charlie|echo)"},
                }
            ],
            "sampling": {"seed": 3, "logprobs": True, "return_token_ids": True},
            "output": str(output),
            "metrics_port": 0,
        }
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: a fresh process, Python's own recursion limit."""
    return subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_rows_nested_past_the_limit_fail_alike_on_every_executor(request, tmp_path, executor):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    output = tmp_path / "out"
    result = run_job(job(deep_rows(tmp_path / "in.jsonl"), output, executor))
    assert result.status == "finished" and result.metrics["executor"] == executor
    ok = {r["row_index"] for r in read_output(output)}
    failed = {f["row_index"]: f for f in read_output(output, "failures")}
    assert ok == set(range(7))  # the six plain rows and the row at the limit
    assert sorted(failed) == [7, 8, 9]
    for row, failure in failed.items():
        assert failure["stage"] == "parse" and failure["terminal"]
        assert failure["error"].startswith(f"in.jsonl line {row + 1}: field 'metadata' nests")
        assert f"more than {MAX_DEPTH} levels deep" in failure["error"]


def test_what_the_run_accepts_is_verified_again_and_exported_by_every_kind(ray_session, tmp_path):
    """On Ray, as reported: the old engine actor accepted the 5,000-deep row, then
    `export gym` and `verify` stopped on a RecursionError."""
    output = tmp_path / "out"
    result = run_job(job(deep_rows(tmp_path / "in.jsonl"), output, "ray"))
    assert result.status == "finished"
    dests = {
        "sft": "sft.jsonl",
        "dpo": "dpo.jsonl",
        "rl": "rl.parquet",
        "eval": "eval.json",
        "gym": "gym.jsonl",
        "mix": "mix.jsonl",
    }
    for kind, dest in dests.items():
        done = cli("export", kind, str(output), str(tmp_path / dest))
        assert done.returncode == 0, f"{kind}: {done.stderr[-2000:]}"
    for kind in ("sft", "dpo", "gym", "mix"):
        assert f"depth {MAX_DEPTH - 1}" in (tmp_path / dests[kind]).read_text(), kind
    again = tmp_path / "verified"
    done = cli("verify", str(output), str(again), "--verifier", "{kind: exact_match}")
    assert done.returncode == 0, done.stderr[-2000:]
    deep = [r for r in read_output(again) if r["row_index"] == 6]
    assert len(deep) == 4 and {r["reward"] for r in deep} == {0.0}
