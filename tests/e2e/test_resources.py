"""Every resource a job opens is closed on every path: after a job run in process, with
agent episodes (Gym tools over HTTP, Python tools in threads) and an engine that dies
and is started again, this process holds no thread and no connection it did not hold
before."""

from __future__ import annotations

import threading

import psutil
import pytest
from agent_server import AgentServer
from helpers import write_jsonl

from rollout_ray import load_config, run_job

pytestmark = pytest.mark.slow

ADD = {
    "type": "function",
    "name": "add",
    "description": "Add a number to the session's running total.",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
}


def connections_to(port: int) -> list:
    return [
        c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port
    ]


def test_a_local_job_with_agents_and_an_engine_restart_leaves_nothing_open(tiny_model, tmp_path):
    server = AgentServer(slow_s=0.1).start()
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    gym_rows = [
        {
            "responses_create_params": {
                "input": [{"role": "user", "content": f"add one ({i})"}],
                "tools": [ADD],
            },
            "fault": "ok",
            "expected_total": 1,
        }
        for i in range(6)
    ]
    # Long prompts whose prefill vLLM splits into chunks, with seeds: the CPU engine
    # dies on them ("CPU Generator does not use offset"), a real crash, every time.
    crash_rows = [{"prompt": ("word " * 150) if i in (1, 5) else f"short {i}"} for i in range(8)]
    tiny = {"model": tiny_model, "executor": "local", "metrics_port": 0}
    sampling = {"max_tokens": 8, "seed": 3}
    agents = load_config(
        {
            **tiny,
            "engine": {"kind": "vllm", "max_model_len": 1024},
            "sampling": sampling,
            "datasets": [
                {
                    "name": "gym",
                    "path": str(write_jsonl(tmp_path / "g.jsonl", gym_rows)),
                    "agent": {"kind": "gym", "url": server.url, "tool_choice": "required"},
                },
                {
                    "name": "python",
                    "path": str(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "add 2 and 3"}])),
                    "agent": {
                        "kind": "python",
                        "tools": "agent_tools:TOOLS",
                        "tool_choice": "required",
                    },
                },
            ],
            "output": str(tmp_path / "agents"),
        }
    )
    crashes = load_config(
        {
            **tiny,
            "engine": {
                "kind": "vllm",
                "max_model_len": 1024,
                "engine_kwargs": {"enable_chunked_prefill": True, "max_num_batched_tokens": 512},
            },
            "sampling": sampling,
            "datasets": [
                {"name": "crash", "path": str(write_jsonl(tmp_path / "c.jsonl", crash_rows))}
            ],
            "output": str(tmp_path / "crashes"),
        }
    )
    threads_before = {t.ident for t in threading.enumerate()}
    try:
        episodes = run_job(agents)
        restarted = run_job(crashes)
    finally:
        server.stop()
    assert episodes.datasets["gym"]["ok"] == 6 and episodes.datasets["python"]["ok"] == 1
    run = restarted.progress["run"]
    assert run["engine_starts"] >= 2, run  # it died, and was started again
    failed = restarted.datasets["crash"]["failed"]
    assert (restarted.datasets["crash"]["ok"], failed) == (6, 2)  # the two rows set aside
    left = [t.name for t in threading.enumerate() if t.ident not in threads_before]
    assert left == []
    assert connections_to(port) == []
