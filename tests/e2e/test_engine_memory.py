"""A CPU KV cache that can't fit: the message names the setting and a value that fits,
and that value runs (the real engine, the tiny model)."""

from __future__ import annotations

import re

import pytest
from helpers import job_config, write_jsonl

from rollout_ray import run_job
from rollout_ray.errors import EngineFailed

pytestmark = pytest.mark.slow


def test_a_kv_cache_larger_than_memory_names_the_setting_and_a_value_that_fits(
    tiny_model, tmp_path
):
    """Seen before: vLLM's own "Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE",
    flags a rollout-ray user never sets."""
    data = write_jsonl(tmp_path / "q.jsonl", [{"prompt": f"the sea {i}"} for i in range(2)])
    datasets = [{"name": "q", "path": str(data)}]
    config = job_config(
        tiny_model,
        tmp_path / "out",
        datasets,
        executor="local",
        overrides=["engine.cpu_kvcache_gib=100000"],
    )
    with pytest.raises(EngineFailed) as failed:
        run_job(config)
    message = str(failed.value)
    assert "--kv-cache-memory-bytes" not in message
    fits = re.search(r"set engine\.cpu_kvcache_gib=(\d+)", message)
    assert fits, message
    # The advice holds: the value it names starts the engine (at most 2 GiB here: the
    # machine the suite runs on is shared, and the advice may name most of its memory).
    advised = [f"engine.cpu_kvcache_gib={min(int(fits.group(1)), 2)}"]
    result = run_job(
        job_config(tiny_model, tmp_path / "out", datasets, executor="local", overrides=advised)
    )
    assert result.status == "finished" and result.datasets["q"]["ok"] == 2


def test_the_engine_starts_in_a_process_that_imported_flask(tiny_model, tmp_path):
    """Seen before: vLLM's CPU kernel scan asks every loaded module's values for their
    `__dict__`; Flask's context proxies raise there, so an engine in a web app's process
    (or beside moto) did not start: "Working outside of application context"."""
    import flask

    assert "current_app" in vars(flask)  # the proxy the scan trips on
    data = write_jsonl(tmp_path / "q.jsonl", [{"prompt": f"the sea {i}"} for i in range(2)])
    config = job_config(tiny_model, tmp_path / "out", [{"path": str(data)}], executor="local")
    assert run_job(config).status == "finished"
