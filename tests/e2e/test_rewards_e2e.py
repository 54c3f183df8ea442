"""Rewards end to end on the embedded model: NeMo Gym MCQA rows and math rows, scored
by their verifiers, then turned into training files and eval metrics, and re-scored
with another verifier without generating again."""

from __future__ import annotations

import json

import pytest
from helpers import read_output

from rollout_ray import load_config, run_job
from rollout_ray.exports import export

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]


@pytest.fixture(scope="module")
def scored(ray_session, smollm2, tmp_path_factory):
    output = tmp_path_factory.mktemp("rewards") / "out"
    config = load_config(
        {
            "datasets": [
                {
                    "name": "mcqa",
                    "path": "sample:mcqa",
                    "num_repeats": 2,
                    "verifier": {"kind": "mcqa"},
                },
                {
                    "name": "arithmetic",
                    "path": "sample:arithmetic",
                    "num_repeats": 2,
                    "prompt_template": "{question} Reply with just the number.",
                    "verifier": {"kind": "math"},
                },
            ],
            "sampling": {
                "temperature": 0.7,
                "max_tokens": 32,
                "seed": 7,
                "logprobs": True,
                "return_token_ids": True,
            },
            "output": str(output),
            "metrics_port": 0,
        },
        limit=24,
    )
    result = run_job(config)
    return output, result


def test_rewards_are_sensible_and_summarised(scored):
    output, result = scored
    records = read_output(output)
    for name in ("mcqa", "arithmetic"):
        rewards = [r["reward"] for r in records if r["dataset"] == name]
        assert len(rewards) == 48 and set(rewards) <= {0.0, 1.0}
        assert 0 < sum(rewards) < len(rewards), f"{name}: all {rewards[0]}"  # not all 0 or 1
        reward = result.datasets[name]["stats"]["reward"]
        assert reward["count"] == 48 and reward["mean"] == pytest.approx(sum(rewards) / 48)
        assert sum(reward["histogram"].values()) == 48
    mcqa = [r for r in records if r["dataset"] == "mcqa"]
    details = [json.loads(r["verifier_details"]) for r in mcqa]
    assert all(d["expected_answer"] in "ABCD" for d in details)
    assert any(d["extracted_answer"] for d in details)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["datasets"]["mcqa"]["stats"]["reward"]["count"] == 48


def test_training_files_from_real_rollouts(scored, tmp_path):
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    output, _ = scored
    sft = export("sft", str(output), str(tmp_path / "sft.jsonl"), threshold=1.0)
    rows = load_dataset("json", data_files=str(tmp_path / "sft.jsonl"), split="train")
    assert len(rows) == sft.rows_written > 0 and is_conversational(rows[0])
    assert rows[0]["messages"][-1]["role"] == "assistant"
    dpo = export("dpo", str(output), str(tmp_path / "dpo.parquet"), min_gap=0.5)
    pairs = load_dataset("parquet", data_files=str(tmp_path / "dpo.parquet"), split="train")
    assert len(pairs) == dpo.rows_written and 0 < dpo.extra["pair_share"] < 1
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert all(p["reward_chosen"] - p["reward_rejected"] >= 0.5 for p in pairs)
    rl = export("rl", str(output), str(tmp_path / "rl.parquet"))
    assert rl.rows_written == 96
    buffer = load_dataset("parquet", data_files=str(tmp_path / "rl.parquet"), split="train")
    first = buffer[0]
    assert len(first["response_token_ids"]) == len(first["response_logprobs"]) > 0
    metrics = export("eval", str(output), str(tmp_path / "eval.json")).extra["datasets"]
    for name in ("mcqa", "arithmetic"):
        m = metrics[name]["metrics"]
        assert 0 <= m["pass@1"]["value"] <= m["pass@2"]["value"] <= 1
        assert "majority@1" in m and m["no_answer_rate"] is not None


def test_reverify_changes_rewards_without_generating(scored, tmp_path):
    from rollout_ray.config import ExactMatchVerifier
    from rollout_ray.run.reverify import reverify

    output, _ = scored
    result = reverify(
        str(output), str(tmp_path / "strict"), {"arithmetic": ExactMatchVerifier(extract="full")}
    )
    before = {(r["task_id"], r["rollout_index"]): r for r in read_output(output)}
    after = {(r["task_id"], r["rollout_index"]): r for r in read_output(tmp_path / "strict")}
    assert set(before) == set(after)
    for key, record in after.items():
        assert record["response_text"] == before[key]["response_text"]  # not regenerated
        if record["dataset"] == "arithmetic":
            assert record["verifier"] == "exact_match"
        else:
            assert record["reward"] == before[key]["reward"]  # other datasets copied
    # "7 + 5 = 12." is right for math-verify but not an exact match of "12".
    math_mean = result["datasets"]["arithmetic"]["stats"]["reward"]["mean"]
    strict = [r["reward"] for r in after.values() if r["dataset"] == "arithmetic"]
    assert math_mean == pytest.approx(sum(strict) / len(strict))
    assert sum(strict) < sum(r["reward"] for r in before.values() if r["dataset"] == "arithmetic")
