"""Config loading: YAML, dotted overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from rollout_ray.config import JOB_SAMPLING_DEFAULTS, load_config
from rollout_ray.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


BASE = """
model: some/model
output: out
sampling: {temperature: 0.5}
datasets:
  - path: data/train.jsonl
    num_repeats: 2
"""


def test_yaml_and_overrides(tmp_path):
    config = load_config(
        write(tmp_path, BASE),
        ["sampling.temperature=0.2", "datasets.0.limit=5", "engine.concurrency=2"],
    )
    assert config.sampling.temperature == 0.2
    assert config.datasets[0].limit == 5
    assert config.datasets[0].num_repeats == 2
    assert config.datasets[0].name == "train"  # from the file's stem
    assert config.engine.concurrency == 2
    assert config.pinned_sampling(0) == {"temperature"}


def test_quickstart_default_is_valid():
    config = load_config(None)
    assert config.model == "smollm2-135m-instruct"
    assert config.datasets[0].path == "sample:quickstart"


def test_unknown_key_names_the_key_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["datasets.0.limt=5"])
    message = str(err.value)
    assert "datasets.0.limt: unknown key" in message
    assert "limit" in message and "num_repeats" in message


def test_unknown_engine_key_lists_engine_fields(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["engine.gpus=1"])
    assert "engine.gpus: unknown key" in str(err.value)
    assert "num_gpus" in str(err.value)


def test_bad_value_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["sampling.temperature=-1"])
    assert "sampling.temperature" in str(err.value)
    assert "-1" in str(err.value)


def test_bad_engine_kind_lists_kinds(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["engine.kind=tgi"])
    assert "engine" in str(err.value) and "vllm" in str(err.value)


def test_missing_datasets_and_output(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "model: x\n"))
    assert "datasets: required but missing" in str(err.value)
    assert "output: required but missing" in str(err.value)


def test_override_index_out_of_range(tmp_path):
    with pytest.raises(ConfigError, match="has 1 entries"):
        load_config(write(tmp_path, BASE), ["datasets.3.limit=1"])


def test_duplicate_dataset_names_refused(tmp_path):
    text = BASE + "  - path: other/train.jsonl\n"
    with pytest.raises(ConfigError, match="appear twice"):
        load_config(write(tmp_path, text))


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "datasets: [unclosed"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_sampling_layers_merge_in_order():
    merged = JOB_SAMPLING_DEFAULTS.merged({"temperature": 0.3}, {"max_tokens": 7, "top_p": None})
    assert merged.temperature == 0.3
    assert merged.max_tokens == 7
    assert merged.top_p == 1.0
