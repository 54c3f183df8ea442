"""Agent episodes on an MCP server (agent kind mcp): a real server written with the
official SDK (tests/mcp_server.py), over stdio and over streamable HTTP on loopback.
The tools come from the server with their schemas, the model's calls reach it, and its
results (or its errors) are the outputs in the record; a server that can't start, can't
be reached or dies mid-call gives failures with stage `tool`, never a crashed job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest
from helpers import job_config, read_output, wait_until, write_jsonl

from rollout_ray import run_job
from rollout_ray.config import load_config

pytestmark = pytest.mark.slow

SERVER = Path(__file__).resolve().parent.parent / "mcp_server.py"
#: The tools the tiny model is offered: its context (1,024 tokens) holds two schemas.
KEPT = "add,fail"


def stdio(log: Path, **agent) -> dict:
    return {"kind": "mcp", "command": [sys.executable, str(SERVER), "stdio", str(log)], **agent}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    """The test MCP server over streamable HTTP on loopback (tools add and fail):
    (url, its call log)."""
    port, log = free_port(), tmp_path / "http-calls.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port), str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MCP_TEST_TOOLS": KEPT},
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 60, "the MCP server to listen")
        yield f"http://127.0.0.1:{port}/mcp", log
    finally:
        proc.terminate()
        proc.wait(10)


def calls_logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_tiny_model_calls_mcp_tools_over_stdio_and_http(
    ray_session, tmp_path, tiny_model, http_server
):
    """The random model, forced to call (tool_choice required), calls the server's own
    tools with arguments its schemas allow; every call reaches the server and every
    result (or error) is the call's output in the record."""
    url, http_log = http_server
    stdio_log = tmp_path / "stdio-calls.jsonl"
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"use a tool ({i})"} for i in range(3)])
    common = {"tool_choice": "required", "parallel_tool_calls": False, "max_tool_calls": 2}
    kept = {"env": {"MCP_TEST_TOOLS": KEPT}}
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [
            {
                "name": "stdio",
                "path": str(rows),
                "num_repeats": 2,
                "agent": stdio(stdio_log, **common, **kept),
            },
            {
                "name": "http",
                "path": str(rows),
                "num_repeats": 2,
                "agent": {"kind": "mcp", "url": url, **common},
            },
        ],
        sampling={"max_tokens": 96, "temperature": 1.0},
        engine={"kind": "vllm", "max_model_len": 1024},
    )
    assert run_job(config).status == "finished"
    failures = read_output(tmp_path / "out", "failures")
    ok = read_output(tmp_path / "out")
    assert len(ok) == 12, [f["error"] for f in failures]
    for name, log in (("stdio", stdio_log), ("http", http_log)):
        records = [r for r in ok if r["dataset"] == name]
        made: Counter = Counter()
        for record in records:
            # The server's tools, with the schemas it declared, were offered.
            offered = {
                t["function"]["name"]: t["function"] for t in json.loads(record["episode_tools"])
            }
            assert set(offered) == set(KEPT.split(","))
            assert offered["add"]["parameters"]["properties"]["a"]["maximum"] == 9
            items = json.loads(record["episode"])
            calls = [i for i in items if i["type"] == "function_call"]
            outputs = {
                i["call_id"]: i["output"] for i in items if i["type"] == "function_call_output"
            }
            # Calls the model finished were run (one cut short by the context is not).
            ran = [c for c in calls if c["call_id"] in outputs]
            assert len(ran) == record["tool_calls"]
            errors = 0
            for call in ran:
                output = outputs[call["call_id"]]
                if "validation error" in output or "Invalid tool call arguments" in output:
                    # The server refused the arguments (a string too long), or they are
                    # not strict JSON (a raw control character): an error the model sees.
                    errors += 1
                    continue
                arguments = json.loads(call["arguments"])
                made[(call["name"], json.dumps(arguments, sort_keys=True))] += 1
                if call["name"] == "add":
                    assert output == str(arguments["a"] + arguments["b"])
                else:
                    assert output.endswith(f"failed on purpose: {arguments['reason']}")
                    errors += 1
            assert record["tool_errors"] == errors
        # Every call the records hold reached the server's tool, and no other.
        seen = Counter(
            (c["tool"], json.dumps(c["arguments"], sort_keys=True)) for c in calls_logged(log)
        )
        # (How many of the random model's calls the server took varies: at least one.)
        assert seen == made and sum(made.values()) >= 1
        # One stdio server for the engine actor, shared by every episode.
        assert len({c["pid"] for c in calls_logged(log)}) == 1


def simulated(tmp_path: Path, datasets: list[dict]):
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"question {i}"} for i in range(2)])
    for dataset in datasets:
        dataset.setdefault("path", str(rows))
        dataset.setdefault("num_repeats", 2)
    return load_config(
        {
            "model": "simulated",
            "engine": {"kind": "simulated", "tool_turns": 1, "output_tokens": 6},
            "output": str(tmp_path / "out"),
            "metrics_port": 0,
            "max_attempts": 1,
            "datasets": datasets,
        }
    )


def test_mcp_faults_are_tool_failures_and_errors_are_outputs(ray_session, tmp_path):
    logs = {name: tmp_path / f"{name}.jsonl" for name in ("errors", "crash", "episode")}
    fast = {"tool_retries": 1, "tool_timeout_s": 20}
    config = simulated(
        tmp_path,
        [
            # A command that can't start, and a port nobody listens on.
            {
                "name": "missing",
                "agent": {"kind": "mcp", "command": ["/nonexistent/mcp-server"], **fast},
            },
            {
                "name": "refused",
                "agent": {"kind": "mcp", "url": f"http://127.0.0.1:{free_port()}/mcp", **fast},
            },
            # A tool that fails: its error is the output the model sees.
            {"name": "errors", "agent": stdio(logs["errors"], tool_choice="fail", **fast)},
            # A tool that kills the server mid-call: reconnected, retried, then a failure.
            {"name": "crash", "agent": stdio(logs["crash"], tool_choice="crash", **fast)},
            # A session (here a process) per episode.
            {
                "name": "episode",
                "agent": stdio(logs["episode"], tool_choice="add", session="episode", **fast),
            },
        ],
    )
    assert run_job(config).status == "finished"
    ok = read_output(tmp_path / "out")
    failures = read_output(tmp_path / "out", "failures")
    by_dataset: dict[str, list] = {}
    for record in ok + failures:
        by_dataset.setdefault(record["dataset"], []).append(record)
    assert {name: len(records) for name, records in by_dataset.items()} == dict.fromkeys(
        ("missing", "refused", "errors", "crash", "episode"), 4
    )
    for name in ("missing", "refused", "crash"):
        stages = {(f.get("stage"), f.get("terminal")) for f in by_dataset[name]}
        assert stages == {("tool", False)}, name  # retryable: a later run may pass
    assert all("can't be reached" in f["error"] for f in by_dataset["refused"])
    assert all("mcp-server" in f["error"] for f in by_dataset["missing"])
    assert all("Connection closed" in f["error"] for f in by_dataset["crash"])
    # After a crash the server was started again and the call retried there.
    assert len({c["pid"] for c in calls_logged(logs["crash"])}) >= 2
    for record in by_dataset["errors"]:
        items = json.loads(record["episode"])
        assert "failed on purpose" in items[1]["output"]
        assert (record["tool_calls"], record["tool_errors"]) == (1, 1)
    # session: episode: every episode's calls came from a server process of its own.
    episode_calls = calls_logged(logs["episode"])
    assert len(episode_calls) == 4 and len({c["pid"] for c in episode_calls}) == 4
    assert all(json.loads(r["episode"])[1]["output"] == "2" for r in by_dataset["episode"])
    # No server process outlives the job.
    pids = {c["pid"] for log in logs.values() for c in calls_logged(log)}
    wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), 60, "the servers to exit")
