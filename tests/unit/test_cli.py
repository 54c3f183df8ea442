"""The `rollout-ray` command as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def rollout_ray(*args: str, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_config_error_is_a_message_not_a_traceback(tmp_path):
    result = rollout_ray("run", "sampling.temprature=0.2", f"output={tmp_path}")
    assert result.returncode == 2
    assert "sampling.temprature: unknown key" in result.stderr
    assert "temperature" in result.stderr
    assert "Traceback" not in result.stderr
    # A typo on the command line is reported as the command line's, with the fix.
    sft = rollout_ray("run", "configs/sft.yaml", "sampling.temprature=0.2", cwd=REPO)
    assert sft.returncode == 2
    assert "invalid config in configs/sft.yaml" not in sft.stderr
    assert "command-line override sampling.temprature=0.2" in sft.stderr
    assert "did you mean temperature?" in sft.stderr


def test_version_help_and_exit_codes(tmp_path):
    from rollout_ray import __version__

    version = rollout_ray("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"rollout-ray {__version__}"
    for args in (["-h"], ["run", "-h"], ["export", "-h"]):
        shown = rollout_ray(*args)
        assert shown.returncode == 0 and "Usage" in shown.stdout, args
    assert rollout_ray("run", "--no-such-flag").returncode == 2  # usage error
    assert "130 interrupted" in " ".join(rollout_ray("-h").stdout.split())


def test_status_of_nothing(tmp_path):
    result = rollout_ray("status", str(tmp_path))
    assert result.returncode == 2
    assert "no rollout-ray job" in result.stderr


@pytest.mark.slow
def test_run_prints_summary_then_status_reports_it(tmp_path, tiny_model):
    output = tmp_path / "out"
    result = rollout_ray(
        "run",
        "--limit",
        "5",
        f"model={tiny_model}",
        f"output={output}",
        "sampling.max_tokens=4",
        "engine.max_model_len=256",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "quickstart" in result.stdout and "5/5" in result.stdout
    assert f"output: {output}" in result.stdout
    # Not a terminal: progress comes as plain lines that ray job logs keep readable.
    assert "[rollout-ray] 5/5 rollouts (100%, 5 committed)" in result.stderr
    status = rollout_ray("status", str(output), "--json")
    report = json.loads(status.stdout)
    assert report["complete"] is True and report["status"] == "finished"
    assert report["datasets"]["quickstart"]["ok"] == 5


def test_a_model_path_with_nothing_there_is_refused_before_anything_runs(tmp_path):
    """Seen before the check: a hub error after ~110 s, exit 1, a planned output left."""
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "hi"}\n')
    output = tmp_path / "out"
    for model in (str(tmp_path / "no-such-model"), "./no-such-model", "ckpt/run-1/step-9"):
        result = rollout_ray(
            "run", f"model={model}", f"datasets.0.path={data}", f"output={output}", cwd=tmp_path
        )
        assert result.returncode == 2, result.stderr
        assert f"model: '{model}' is a local path and nothing is there" in result.stderr
        assert not output.exists()
    # A hub name that isn't downloaded, with downloads forbidden (the suite sets
    # HF_HUB_OFFLINE=1): said so, at once.
    result = rollout_ray("run", "model=no-such-org/no-such-model", f"output={output}")
    assert result.returncode == 2
    assert "not in the Hugging Face cache, and HF_HUB_OFFLINE=1" in result.stderr
    assert not output.exists()


def test_unset_key_variables_are_refused_all_at_once_naming_their_keys(tmp_path):
    """Seen before the check: `Bearer EMPTY` sent, minutes of retries, exit 0."""
    output = tmp_path / "out"
    verifier = "{kind: http, url: 'http://127.0.0.1:9/verify', api_key_env: RR_TEST_VERIFY_KEY}"
    result = rollout_ray(
        "run",
        "model=m",
        "engine.kind=openai",
        "engine.base_url=http://127.0.0.1:9/v1",
        "engine.api_key_env=RR_TEST_ENGINE_KEY",
        f"datasets.0.verifier={verifier}",
        f"output={output}",
    )
    assert result.returncode == 2, result.stderr
    text = " ".join(result.stderr.split())
    assert "2 problems in the config" in text
    assert "engine.api_key_env: the environment variable RR_TEST_ENGINE_KEY is not set" in text
    assert "datasets.0.verifier.api_key_env: the environment variable RR_TEST_VERIFY_KEY" in text
    assert not output.exists()


def test_verify_refuses_a_verifier_key_variable_that_is_not_set(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "hi"}\n')
    output, dest = tmp_path / "out", tmp_path / "rescored"
    verifier = "{kind: http, url: 'http://127.0.0.1:9/verify', api_key_env: RR_TEST_VERIFY_KEY}"
    result = rollout_ray("verify", str(output), str(dest), "--verifier", verifier)
    assert result.returncode == 2 and f"no rollout-ray job at {output}" in result.stderr
    ran = rollout_ray(
        "run", "model=m", "engine.kind=simulated", f"datasets.0.path={data}", f"output={output}"
    )
    assert ran.returncode == 0, ran.stderr
    result = rollout_ray("verify", str(output), str(dest), "--verifier", verifier)
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert "verifier.api_key_env: the environment variable RR_TEST_VERIFY_KEY is not set" in text
    assert not dest.exists()
