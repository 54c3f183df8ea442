"""Continuous collection: `run --watch` plans input files as they appear, survives a
kill -9, and picks up a new model checkpoint between shards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import kill_driver, read_output, write_jsonl
from tiny_model import build_tiny_model

from rollout_ray import storage
from rollout_ray.output.manifest import Layout, read_commits

pytestmark = pytest.mark.slow


def start_watch(config: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rollout_ray.cli",
                "run",
                str(config),
                "--watch",
                "--watch-interval",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "ROLLOUT_RAY_DASHBOARD": "0"},
        )


def committed_ok(output: Path) -> int:
    return sum(c.n_ok for c in read_commits(Layout(str(output))))


def wait_for(output: Path, count: int, proc: subprocess.Popen, log: Path, timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if storage.exists(Layout(str(output)).job) and committed_ok(output) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{count} rollouts not committed in time:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=120)


def write_config(tmp_path: Path, model: str, inbox: Path, **engine) -> Path:
    config = {
        "model": model,
        "engine": {"kind": "vllm", "max_model_len": 256, **engine},
        "datasets": [{"name": "inbox", "path": str(inbox / "*.jsonl")}],
        "sampling": {"max_tokens": 8, "temperature": 0, "logprobs": True},
        "output": str(tmp_path / "out"),
        "metrics_port": 0,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def rows(prefix: str, n: int) -> list[dict]:
    return [{"prompt": f"{prefix} {i}"} for i in range(n)]


def test_watch_picks_up_new_files_and_survives_kill(tmp_path, tiny_model):
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "a.jsonl", rows("a", 10))
    config, log, output = (
        write_config(tmp_path, tiny_model, inbox),
        tmp_path / "run.log",
        tmp_path / "out",
    )
    proc = start_watch(config, log)
    wait_for(output, 10, proc, log)
    write_jsonl(inbox / "b.jsonl", rows("b", 5))  # a file added while it runs
    wait_for(output, 15, proc, log)
    kill_driver(proc)  # kill -9 the driver (then clear what it leaves behind)
    with open(inbox / "a.jsonl", "a") as f:  # a file that grows, and a new one
        f.write("".join(f'{{"prompt": "a more {i}"}}\n' for i in range(3)))
    write_jsonl(inbox / "c.jsonl", rows("c", 4))
    proc = start_watch(config, log)
    wait_for(output, 22, proc, log)
    assert stop(proc) == 130
    keys = Counter((r["task_id"], r["rollout_index"]) for r in read_output(output))
    expected = {(f"a:{i}", 0) for i in range(13)} | {(f"b:{i}", 0) for i in range(5)}
    expected |= {(f"c:{i}", 0) for i in range(4)}
    assert set(keys) == expected and max(keys.values()) == 1
    texts = {r["task_id"]: r["prompt_messages"][-1]["content"] for r in read_output(output)}
    assert texts["a:12"] == "a more 2" and texts["c:3"] == "c 3"


def test_watch_model_reloads_a_new_checkpoint(tmp_path):
    checkpoint = build_tiny_model(tmp_path / "ckpt")
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "first.jsonl", rows("same", 6))
    config = write_config(tmp_path, str(checkpoint), inbox, watch_model=True)
    log, output = tmp_path / "run.log", tmp_path / "out"
    proc = start_watch(config, log)
    wait_for(output, 6, proc, log)
    # The trainer writes a new checkpoint (other weights) into the same folder, then the
    # same prompts come again.
    staging = build_tiny_model(tmp_path / "next", seed=1)
    for name in os.listdir(staging):
        shutil.copy(staging / name, checkpoint / name)
    write_jsonl(inbox / "second.jsonl", rows("same", 6))
    wait_for(output, 12, proc, log)
    assert stop(proc) == 130
    versions, logprobs = {}, {}
    for record in read_output(output):
        file, row = record["task_id"].split(":")
        versions.setdefault(file, set()).add(record["model_version"])
        logprobs[(file, int(row))] = record["output_logprobs"][0]
    assert len(versions["first"]) == 1 and len(versions["second"]) == 1
    assert versions["first"] != versions["second"]
    assert all(v.startswith("ckpt@") for s in versions.values() for v in s)
    # The same prompts, greedy, got other log-probabilities for their first token: the
    # new weights were loaded. (A random tiny model may pick the same token with both
    # weights, so the text alone can't tell; its probability does.)
    changed = sum(logprobs[("first", i)] != logprobs[("second", i)] for i in range(6))
    assert changed == 6, logprobs
