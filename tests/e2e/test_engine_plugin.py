"""Adding an engine kind is one module plus one registry line: a toy engine that lives
outside the package, declared as a `rollout_ray.engines` entry point, runs a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import read_output, write_jsonl

TOY_MODULE = '''
from typing import Literal

from pydantic import Field

from rollout_ray.config import EngineBlock
from rollout_ray.engines import Engine, Generation, register_engine


class ToyEngineConfig(EngineBlock):
    """Answers every prompt with its own words reversed."""

    kind: Literal["toy"] = "toy"
    suffix: str = Field("!", description="Appended to every answer.")
    vocabulary: str = Field("", description="A .gz word list the engine checks first.")


class ToyEngine(Engine):
    name = "toy"

    def __init__(self, model, suffix):
        self._model, self.suffix = model, suffix

    @property
    def model_label(self):
        return self._model

    async def generate(self, request):
        words = request.messages[-1]["content"].split()
        text = " ".join(reversed(words)) + self.suffix
        return Generation(text, "stop", len(words), len(words) + 1)


def check(job, block, secret_env):
    if block.vocabulary:
        import gzip

        gzip.open(block.vocabulary).read()


def build(job, block, device):
    return ToyEngine(job.model, block.suffix)


register_engine(ToyEngineConfig, build=build, check=check)
'''


def install_toy(folder: Path) -> dict[str, str]:
    """The toy engine as an installed distribution would be: a module and its
    entry point, on PYTHONPATH (so Ray's actors see it too)."""
    (folder / "toy_engine.py").write_text(TOY_MODULE)
    info = folder / "toy_engine-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-engine\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[rollout_ray.engines]\ntoy = toy_engine:ToyEngineConfig\n"
    )
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "ROLLOUT_RAY_DASHBOARD": "0"}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_a_toy_engine_from_another_package_validates_and_is_documented(tmp_path):
    env = install_toy(tmp_path)
    config = {
        "model": "toy-model",
        "engine": {"kind": "toy", "suffix": "?", "concurrency": 1},
        "datasets": [{"path": "x.jsonl"}],
        "output": "out",
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    done = cli("config-reference", env=env)
    assert done.returncode == 0, done.stderr
    assert "## engine (kind: toy)" in done.stdout and "`engine.suffix`" in done.stdout
    # A field it doesn't have is refused by name, as for the built-in kinds.
    config["engine"]["sufix"] = "?"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    done = cli("run", str(tmp_path / "bad.yaml"), env=env)
    assert done.returncode != 0 and "engine.sufix" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_toy_engine_from_another_package_runs_a_job(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    env = install_toy(site)
    rows = [{"prompt": f"one two {i}", "expected_answer": f"{i} two one?"} for i in range(5)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    config = {
        "model": "toy-model",
        "engine": {"kind": "toy", "suffix": "?"},
        "datasets": [{"path": str(data), "verifier": {"kind": "exact_match"}}],
        "output": str(tmp_path / "out"),
        "metrics_port": 0,
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    done = cli("run", str(tmp_path / "job.yaml"), env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = read_output(tmp_path / "out")
    assert sorted(r["response_text"] for r in records) == sorted(r["expected_answer"] for r in rows)
    assert {r["engine"] for r in records} == {"toy"} and {r["reward"] for r in records} == {1.0}
    job = json.loads((tmp_path / "out" / "_manifest" / "job.json").read_text())
    assert job["config"]["engine"]["kind"] == "toy"


def test_any_exception_reaches_the_user_as_a_message(tmp_path):
    """An EOFError from a plugin's own code (its .gz word list cut short) is a message
    naming it, exit 1; with --debug also its traceback. Seen failing before the one
    handler: the CLI framework took the EOFError for the end of input ("Aborted!")."""
    import gzip

    env = install_toy(tmp_path)
    words = gzip.compress(b"alpha beta gamma\n" * 1000)
    (tmp_path / "words.gz").write_bytes(words[: len(words) // 2])
    config = {
        "model": "toy-model",
        "engine": {"kind": "toy", "vocabulary": str(tmp_path / "words.gz")},
        "datasets": [{"path": str(write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}]))}],
        "output": str(tmp_path / "out"),
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    for debug in ([], ["--debug"]):
        done = cli(*debug, "run", str(tmp_path / "job.yaml"), env=env)
        assert done.returncode == 1, done.stderr
        assert "Aborted" not in done.stderr
        assert "EOFError: Compressed file ended before the end-of-stream marker" in done.stderr
        assert ("Traceback" in done.stderr) == bool(debug)
