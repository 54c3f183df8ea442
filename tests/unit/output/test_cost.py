"""Cost figures and the pilot's projection, against numbers worked out by hand."""

from __future__ import annotations

import pytest

from rollout_ray.config import load_config
from rollout_ray.output.cost import cost_of, job_gpus, project


def config(**cost):
    return load_config(
        {
            "model": "m",
            "engine": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"},
            "datasets": [{"name": "a", "path": "sample:arithmetic"}],
            "output": "/tmp/unused",
            "cost": cost,
        }
    )


def test_token_and_gpu_hour_prices():
    job = config(input_per_million=0.5, output_per_million=2.0, gpu_hour=1.2, gpus=2)
    counts = {
        "a": {"prompt_tokens": 3_000_000, "output_tokens": 1_000_000},
        "b": {"prompt_tokens": 200_000, "output_tokens": 50_000},
    }
    cost = cost_of(job, counts, wall_s=1800)
    # a: 3 x 0.5 + 1 x 2.0 = 3.5; b: 0.2 x 0.5 + 0.05 x 2.0 = 0.2; 2 GPUs x 0.5 h x 1.2 = 1.2
    assert cost["tokens_by_dataset"] == {"a": 3.5, "b": 0.2}
    assert cost["tokens"] == pytest.approx(3.7)
    assert (cost["gpu_hours"], cost["hardware"]) == (1.0, pytest.approx(1.2))
    assert cost["total"] == pytest.approx(4.9)


def test_gpus_default_to_what_the_engine_actors_hold():
    vllm = load_config(
        {
            "engine": {"kind": "vllm", "device": "cuda", "concurrency": 3, "num_gpus": 2},
            "datasets": [{"path": "sample:arithmetic"}],
            "output": "/tmp/unused",
        }
    )
    assert job_gpus(vllm) == 6.0
    assert job_gpus(config()) == 0.0  # an API job holds none


def test_projection_scales_the_pilots_per_rollout_tokens_and_steady_rate():
    job = config(output_per_million=10.0, gpu_hour=3.6, gpus=1)
    pilot = {
        "wall_s": 30.0,
        "run": {"done": 40, "first_piece_at": 110.0},
        "datasets": {"a": {"ok": 40, "prompt_tokens": 4_000, "output_tokens": 8_000}},
    }
    projection = project(job, pilot, {"a": 1_000}, launched_at=100.0)
    # Start-up 10 s, then 40 rollouts in 20 s: 2/s; 1,000 rollouts take 500 s more.
    assert projection.startup_s == 10.0 and projection.seconds == 510.0
    # 200 output tokens a rollout: 200,000 tokens at $10/M = $2; 510 s of 1 GPU at $3.6/h.
    assert projection.output_tokens == 200_000 and projection.prompt_tokens == 100_000
    assert projection.cost["tokens"] == pytest.approx(2.0)
    assert projection.cost["hardware"] == pytest.approx(0.51)
