"""The embedded model answers an easy question correctly, end to end.

In float32: at temperature 0 this 135M model's first tokens for "capital of France"
are a near tie, and CPUs with AMX bf16 kernels take the other branch ("L'Etoile, la
Marseillaise, ..."). The test is about the model and the pipeline, not a CPU's bf16
rounding; jobs keep the faster bf16 default.
"""

from __future__ import annotations

import pytest
from helpers import read_output, write_jsonl

from rollout_ray import load_config, run_job

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]


def test_embedded_model_knows_the_capital_of_france(ray_session, smollm2, tmp_path):
    path = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"prompt": "What is the capital of France?", "expected_answer": "Paris"},
            {
                "messages": [{"role": "user", "content": "What is the capital of Japan?"}],
                "expected_answer": "Tokyo",
            },
        ],
    )
    config = load_config(
        {
            "datasets": [{"path": str(path)}],
            "sampling": {"temperature": 0, "max_tokens": 24},
            "engine": {"kind": "vllm", "dtype": "float32"},
            "output": str(tmp_path / "out"),
        }
    )
    assert config.model == "smollm2-135m-instruct"  # the default
    run_job(config)
    records = read_output(tmp_path / "out")
    assert len(records) == 2
    for record in records:
        assert record["expected_answer"] in record["response_text"], record["response_text"]
