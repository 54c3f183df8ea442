"""The development and scale patterns on the real engine, at small size: sweeps,
multi-dataset mixes, and every example in configs/ in its smallest form."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import job_config, read_output, write_jsonl

from rollout_ray import load_config, run_job

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


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
    for row in rows:
        assert row["dataset"] == "q" and row["rollouts"] == 12
        assert set(row["pass_at"]) == {"1", "2"} and row["mean_reward"] is not None
        assert row["tokens_per_rollout"] > 0 and row["latency_s"] > 0


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


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_example_runs_in_its_smallest_form(name, ray_session, tiny_model, tmp_path):
    """Each configs/ example, loaded as a user would, shrunk to 2 rows on the tiny model
    (the embedded model is exercised by test_smollm2)."""
    from rollout_ray.errors import RolloutRayError

    config = load_config(CONFIGS / name, [f"output={tmp_path / 'out'}", "metrics_port=0"], limit=2)
    if config.engine.kind == "vllm" and config.model == "smollm2-135m-instruct":
        config = load_config(
            CONFIGS / name,
            [
                f"output={tmp_path / 'out'}",
                "metrics_port=0",
                f"model={tiny_model}",
                "engine.max_model_len=512",
            ],
            limit=2,
        )
    if config.engine.kind == "openai" or config.serve is not None:
        pytest.skip("needs an endpoint: covered by test_openai_engine")
    try:
        result = run_job(config)
    except RolloutRayError as exc:  # pragma: no cover - shown if a config breaks
        raise AssertionError(f"{name}: {exc}") from exc
    assert result.status == "finished"
    assert sum(d["ok"] + d["failed"] for d in result.datasets.values()) > 0
