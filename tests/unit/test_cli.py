"""The `rollout-ray` command as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


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
