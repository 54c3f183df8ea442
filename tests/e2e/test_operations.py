"""Operating it like Ray users do: Prometheus metrics while a job runs, `ray job submit`
against a real head node, and losing a worker node mid-job."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest
from helpers import job_config, read_output, write_jsonl
from prometheus_client.parser import text_string_to_metric_families

from rollout_ray import run_job

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == x for k, x in labels.items())
    )


def test_metrics_endpoint_moves_and_matches_output(ray_session, tiny_model, tmp_path):
    port = free_port()
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"a story {i}"} for i in range(64)])
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [
            {
                "name": "m",
                "path": str(data),
                "num_repeats": 4,
                "verifier": {"kind": "regex", "pattern": "a"},
            }
        ],
        sampling={"max_tokens": 48, "temperature": 1.0},
        shard_size=4,
        metrics_port=port,
        # one shard at a time, so that the counters move in many steps, not one
        overrides=["engine.shards_in_flight=1"],
    )
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=run_job(config)))
    thread.start()
    seen = []
    while thread.is_alive():
        with contextlib.suppress(httpx.HTTPError):
            seen.append(value(scrape(port), "rollout_ray_rollouts_total", dataset="m"))
        time.sleep(0.3)
    thread.join()
    final = scrape(port)
    # Closed by default: it listens on loopback only (metrics_host to open it).
    import psutil

    listening = {
        c.laddr.ip for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
    }
    assert listening == {"127.0.0.1"}, listening
    records = read_output(tmp_path / "out")
    assert len(records) == 256
    # Counters only go up, were seen moving during the run, and match the output.
    assert seen == sorted(seen) and len({v for v in seen if 0 < v < 256}) >= 1, seen
    assert value(final, "rollout_ray_rollouts_total", dataset="m", status="ok") == 256
    assert value(final, "rollout_ray_output_tokens_total", dataset="m") == sum(
        r["output_tokens"] for r in records
    )
    assert (
        value(final, "rollout_ray_shards_done", dataset="m")
        == value(final, "rollout_ray_shards_planned", dataset="m")
        == 16
    )
    rewards = [r["reward"] for r in records]
    assert value(final, "rollout_ray_reward_count", dataset="m") == len(rewards)
    assert value(final, "rollout_ray_reward_bucket", dataset="m", le="0.0") == rewards.count(0.0)
    assert value(final, "rollout_ray_engine_restarts_total") == 0
    assert done["result"].status == "finished"


def test_metrics_false_serves_no_endpoint(ray_session, tiny_model, tmp_path):
    port = free_port()
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"a story {i}"} for i in range(8)])
    config = job_config(
        tiny_model, tmp_path / "out", [{"name": "m", "path": str(data)}], metrics_port=port
    )
    config = config.model_copy(update={"metrics": False})
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=run_job(config)))
    thread.start()
    answered = 0
    while thread.is_alive():
        with contextlib.suppress(httpx.HTTPError):
            scrape(port)
            answered += 1
        time.sleep(0.3)
    thread.join()
    assert done["result"].status == "finished" and len(read_output(tmp_path / "out")) == 8
    assert answered == 0
