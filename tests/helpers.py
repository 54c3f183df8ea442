"""Helpers shared by the tests: write inputs, build small job configs, read outputs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (written as JSON) or raw strings (written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def job_config(tiny_model: str, output: Path, datasets: list[dict], **extra):
    """A small job on the tiny model: short outputs, CPU, one actor."""
    from rollout_ray.config import load_config

    data = {
        "model": tiny_model,
        "datasets": datasets,
        "sampling": {"max_tokens": 8, "temperature": 0.8},
        "output": str(output),
        "engine": {"kind": "vllm", "max_model_len": 512},
        "metrics_port": 0,
        **extra,
    }
    overrides = data.pop("overrides", [])
    return load_config(data, overrides)


def read_output(output: Path | str, kind: str = "data"):
    """Every committed record of a job's output (data or failures) as a list of dicts:
    the files its commit records name, as every reader of an output does (a file no
    commit names is a lost attempt's, never part of the output)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rollout_ray.output.manifest import Layout, read_commits

    commits = read_commits(Layout(str(output)))
    files = sorted({c.file(kind) for c in commits if c.file(kind)})
    if not files:
        return []
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive").to_pylist()


def wait_until(condition, timeout: float, what: str, every: float = 0.2) -> None:
    """Poll until `condition()` holds; fail, saying what, if it never does. The timeout
    is a liveness bound (generous), never a measure of speed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(every)


def has_commits(output: Path | str) -> bool:
    """Whether a local job output has committed at least one piece."""
    commits = Path(output, "_manifest", "commits")
    return commits.exists() and any(commits.iterdir())


def kill_driver(proc: subprocess.Popen) -> None:
    """kill -9 the driver only; then clear what it leaves (as when its machine goes)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
