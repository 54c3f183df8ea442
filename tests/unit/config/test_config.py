"""Config loading: YAML, dotted overrides, and errors that name the key."""

from __future__ import annotations

import math

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


def test_an_override_value_starting_with_hash_is_text_not_a_comment(tmp_path):
    """`sampling.stop=###` was read by YAML as a comment: stop null, silently."""
    config = load_config(write(tmp_path, BASE), ["sampling.stop=###"])
    assert config.sampling.stop == ["###"]  # one string: a list of one, as OpenAI's API
    with pytest.raises(ConfigError, match=r"sampling\.seed"):
        load_config(write(tmp_path, BASE), ["sampling.seed=#1"])


@pytest.mark.parametrize(
    "template", ['Reply as JSON like {"answer": 1}. {question}', "Q: {question", "Q: {}"]
)
def test_a_prompt_template_that_fits_no_row_is_refused_when_the_config_loads(template):
    """Braces meant literally: every row failed, the job exited 0, and the fixed
    template was another job's (found by a probe)."""
    with pytest.raises(ConfigError, match="literal braces are written"):
        load_config({"datasets": [{"path": "x.jsonl", "prompt_template": template}], "output": "o"})
    fine = "Q: {question} {{x}} {a.b} {c[0]} {n:>3}"
    load_config({"datasets": [{"path": "x.jsonl", "prompt_template": fine}], "output": "o"})


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


def test_a_typo_gets_did_you_mean_and_no_internal_key_is_offered(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["datasets.0.num_repeat=3", "sampling.temprature=1"])
    message = str(err.value)
    assert "datasets.0.num_repeat" in message and "did you mean num_repeats?" in message
    assert "did you mean temperature?" in message
    # Keys rollout-ray sets itself are not settings: never offered as allowed.
    for internal in ("sweep_origin", "sweep_setting", "cli_overrides"):
        assert internal not in message


def test_an_error_says_whether_the_file_or_the_command_line_holds_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE), ["sampling.temprature=0.2"])
    message = str(err.value)
    assert message.startswith("invalid command-line override")
    assert "temprature: unknown key (command-line override sampling.temprature=0.2)" in message
    assert "invalid config in" not in message
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE.replace("num_repeats", "num_repeat")), ["limit=1"])
    message = str(err.value)
    assert message.startswith(f"invalid config in {tmp_path / 'job.yaml'}")
    assert "datasets.0.num_repeat: unknown key" in message  # the file's own line
    assert "limit: unknown key (command-line override limit=1)" in message


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


def test_sampling_no_engine_takes_is_refused_when_the_config_loads():
    """A dataset's min_tokens over the job's max_tokens (256 by default), an infinite
    temperature: the run used to start, then fail every rollout on every try."""
    data = {"datasets": [{"path": "x.jsonl", "name": "d", "sampling": {"min_tokens": 300}}]}
    with pytest.raises(ConfigError, match=r"datasets.0 \(d\) samples with min_tokens \(300\)"):
        load_config({**data, "output": "o"})
    with pytest.raises(ConfigError, match="finite number"):
        load_config({**data, "output": "o", "sampling": {"temperature": math.inf}})
    load_config({**data, "output": "o", "sampling": {"max_tokens": 300}})  # consistent


def test_sampling_layers_merge_in_order():
    merged = JOB_SAMPLING_DEFAULTS.merged({"temperature": 0.3}, {"max_tokens": 7, "top_p": None})
    assert merged.temperature == 0.3
    assert merged.max_tokens == 7
    assert merged.top_p == 1.0
