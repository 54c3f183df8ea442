"""A config's mistakes that this machine can see are refused before anything runs, all
at once, each naming the config key that fixes it."""

from __future__ import annotations

import sys

import pytest

from rollout_ray.config import load_config
from rollout_ray.errors import ConfigError
from rollout_ray.run.preflight import check_job
from rollout_ray.verifiers.remote import check_verifiers


def test_every_dataset_whose_inputs_cant_be_read_is_named_at_once(tmp_path):
    (tmp_path / "ok.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "rows.csv").write_text("prompt\nhi\n")
    config = load_config(
        {
            "model": str(tmp_path / "no-model"),
            "datasets": [
                {"name": "ok", "path": str(tmp_path / "ok.jsonl")},
                {"name": "gone", "path": str(tmp_path / "gone.jsonl")},
                {"name": "csv", "path": str(tmp_path / "rows.csv")},
                {"name": "sample", "path": "sample:nope"},
            ],
            "output": str(tmp_path / "out"),
        }
    )
    with pytest.raises(ConfigError) as refused:
        check_job(config, environ={})
    lines = str(refused.value).splitlines()
    assert lines[0] == "4 problems in the config:"
    assert lines[1].startswith(f"  - model: '{tmp_path / 'no-model'}' is a local path")
    assert lines[2].startswith("  - datasets.1.path: dataset 'gone': no input files match")
    assert lines[3].startswith("  - datasets.2.path: dataset 'csv': can't tell the format")
    assert lines[4].startswith("  - datasets.3.path: no bundled sample named 'nope'")


def test_model_names_that_are_left_to_the_engine(tmp_path, monkeypatch):
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "org" / "local-model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for model in ("smollm2-135m-instruct", "s3://bucket/model", "org/local-model", "gpt2"):
        config = load_config({"model": model, "datasets": [{"path": "in.jsonl"}], "output": "o"})
        check_job(config, environ={})  # online: a hub name is the hub's to find
    name = "no-such-org/no-such-model"
    offline = load_config({"model": name, "datasets": [{"path": "in.jsonl"}], "output": "o"})
    with pytest.raises(ConfigError, match="not in the Hugging Face cache, and HF_HUB_OFFLINE=1"):
        check_job(offline, environ={"HF_HUB_OFFLINE": "1"})


def test_every_verifier_that_cant_be_built_is_named_at_once(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    bad = {"kind": "regex", "pattern": "(unclosed"}
    config = load_config(
        {
            "model": "m",
            "engine": {"kind": "simulated"},
            "datasets": [
                {"name": "a", "path": str(tmp_path / "in.jsonl"), "verifier": bad},
                {"name": "b", "path": str(tmp_path / "in.jsonl")},
                {"name": "c", "path": str(tmp_path / "in.jsonl"), "verifier": bad},
            ],
            "output": str(tmp_path / "out"),
        }
    )
    with pytest.raises(ConfigError) as refused:
        check_verifiers(config)
    lines = str(refused.value).splitlines()
    assert lines[0] == "2 problems in the config:"
    assert lines[1].startswith("  - datasets.0.verifier (dataset 'a'): regex: ")
    assert lines[2].startswith("  - datasets.2.verifier (dataset 'c'): regex: ")


def test_a_python_verifier_that_cant_be_imported_stops_the_job_before_it_runs(
    tmp_path, monkeypatch
):
    """A function name without a module, a module that isn't there, a missing
    attribute: refused at once (before, every rollout was generated, then failed at
    verify, and the fixed config was another job's). A module in the folder the job
    starts from imports without PYTHONPATH."""
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "myscore.py").write_text("def reward(record):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in sys.path if p not in ("", str(tmp_path))])
    functions = ["notamodule", "no_such_module_here:fn", "json:nope", "myscore:reward"]
    config = load_config(
        {
            "model": "m",
            "engine": {"kind": "simulated"},
            "datasets": [
                {"name": f"d{i}", "path": "in.jsonl", "verifier": {"kind": "python", "function": f}}
                for i, f in enumerate(functions)
            ],
            "output": "out",
        }
    )
    with pytest.raises(ConfigError) as refused:
        check_verifiers(config)
    lines = str(refused.value).splitlines()
    assert lines[0] == "3 problems in the config:"
    assert "datasets.0.verifier" in lines[1] and "expected 'package.module:function'" in lines[1]
    assert "datasets.1.verifier" in lines[2] and "cannot import 'no_such_module_here'" in lines[2]
    assert "datasets.2.verifier" in lines[3] and "has no attribute 'nope'" in lines[3]
