"""Untrusted rows, model outputs and endpoints reach no further than the config says.

Each test is one attack from issue 23, run through a real job (the openai engine
against a loopback endpoint that answers as told, or the simulated engine) with a
loopback server standing where the attack would lead: its request log must stay
empty, and the rollout at fault fails alone with a reason.
"""

from __future__ import annotations

import json

from fault_server import FaultServer
from helpers import read_output, write_jsonl
from request_log import RequestLog

from rollout_ray import run_job
from rollout_ray.config import load_config

KEY = "sk-untrusted-test-4c1f"


def openai_job(endpoint: FaultServer, data, output, **dataset) -> dict:
    return {
        "model": "m",
        "engine": {"kind": "openai", "base_url": endpoint.url, "api_key_env": "FAULT_KEY"},
        "datasets": [{"name": "d", "path": str(data), **dataset}],
        "output": str(output),
        "metrics_port": 0,
    }


def test_a_rows_schema_reference_fetches_nothing(tmp_path, monkeypatch):
    """A row's JSON schema pointing `$ref` at a URL (a cloud metadata endpoint on a real
    cluster) is never fetched: that rollout fails at verify, saying why; references
    inside the schema still resolve."""
    monkeypatch.setenv("FAULT_KEY", KEY)
    trap = RequestLog()
    endpoint = FaultServer(api_key=KEY).start()
    local = {"$defs": {"obj": {"type": "object"}}, "$ref": "#/$defs/obj"}
    rows = [
        {"prompt": 'ok {"a": 1}', "schema": {"$ref": f"{trap.url}/latest/meta-data/iam"}},
        {"prompt": 'ok {"b": 2}', "schema": {"$id": f"{trap.url}/", "$ref": "iam"}},
        {"prompt": 'ok {"c": 3}', "schema": local},
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    verifier = {"kind": "json_schema", "schema_field": "schema"}
    config = openai_job(endpoint, data, tmp_path / "out", verifier=verifier)
    try:
        assert run_job(load_config(config)).status == "finished"
    finally:
        trap.stop()
    assert trap.requests == []
    records = read_output(tmp_path / "out")
    assert [(r["task_id"], r["reward"]) for r in records] == [("rows:2", 1.0)]
    failures = read_output(tmp_path / "out", "failures")
    assert sorted(f["task_id"] for f in failures) == ["rows:0", "rows:1"]
    for failure in failures:
        assert failure["stage"] == "verify" and failure["terminal"]
        assert "only references inside the schema resolve" in failure["error"]
    assert json.loads(records[0]["verifier_details"]) == {}


def test_only_offered_tools_under_safe_names_reach_the_tool_server(tmp_path, monkeypatch):
    """Tool names come from rows and from the model's calls; the agent once POSTed to
    `url + "/" + name` whatever the name: the server behind `.../envs/mine` saw
    `/admin/reset`, `/envs/mine/verify` (its verifier called as a tool) and
    `/envs/mine/x?token=1`. Now a call runs only if the episode offered its tool and its
    name is safe; any other is an error output the model sees, as for bad arguments."""
    from agent_server import AgentServer

    monkeypatch.setenv("FAULT_KEY", KEY)
    endpoint = FaultServer(api_key=KEY).start()
    tools = AgentServer(prefix="/envs/mine").start()
    add = {"type": "function", "name": "add", "parameters": {"type": "object"}}

    def row(prompt: str, *names: str) -> dict:
        offered = [add] + [{"type": "function", "name": n} for n in names]
        params = {"input": prompt, "tools": offered}
        return {"responses_create_params": params, "expected_total": 1}

    rows = [
        row("ok call=verify call=add"),  # the verifier, not offered: refused; add runs
        row("ok call=../../admin/reset call=x?token=1", "../../admin/reset"),
        row("ok call=verify call=seed_session call=add", "verify"),  # offered by the row
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = openai_job(endpoint, data, tmp_path / "out", agent={"kind": "gym", "url": tools.url})
    try:
        assert run_job(load_config(config)).status == "finished"
    finally:
        tools.stop()
    allowed = {f"/envs/mine/{p}" for p in ("seed_session", "add", "verify")}
    assert set(tools.paths) <= allowed, sorted(set(tools.paths) - allowed)
    assert tools.paths.count("/envs/mine/verify") == 3  # the agent's own, once an episode
    records = sorted(read_output(tmp_path / "out"), key=lambda r: r["task_id"])
    assert [(r["tool_calls"], r["tool_errors"]) for r in records] == [(2, 1), (2, 2), (3, 2)]
    assert [r["reward"] for r in records] == [1.0, 0.0, 1.0]  # add ran where it was called
    outputs = [
        json.loads(item["output"]).get("error", "")
        for r in records
        for item in json.loads(r["episode"])
        if item["type"] == "function_call_output"
    ]
    assert sum("is not one of this episode's tools" in o for o in outputs) == 2
    assert sum("Invalid tool name" in o for o in outputs) == 2
    assert sum("the server's own endpoint" in o for o in outputs) == 1


def network_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: it picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_http_verifier_sends_no_token_in_clear_to_another_host(tmp_path, monkeypatch):
    """The http verifier sent its Bearer token over plain http to any host; now, as the
    openai engine does, it refuses a non-loopback http:// URL with a token unless
    `allow_insecure_http` says the network is trusted. The server listens on this
    machine's network address, so the request would really cross an interface."""
    import pytest

    from rollout_ray.errors import ConfigError

    address = network_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    monkeypatch.setenv("VERIFY_TOKEN", "vt-untrusted-9a7c")
    server = RequestLog(reply=b'{"reward": 1.0}', host=address)
    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q {i}"} for i in range(3)])
    verifier = {"kind": "http", "url": f"{server.url}/verify", "api_key_env": "VERIFY_TOKEN"}
    job = {
        "model": "sim",
        "engine": {"kind": "simulated"},
        "datasets": [{"name": "d", "path": str(data), "verifier": verifier}],
        "output": str(tmp_path / "out"),
        "metrics_port": 0,
    }
    try:
        with pytest.raises(ConfigError, match=f"plain http:// to {address}"):
            run_job(load_config(job))
        assert server.requests == []
        assert not (tmp_path / "out").exists()  # refused before anything ran
        # Allowed explicitly, the same URL is used (so the refusal above was the rule's).
        trusted = load_config(job, ["datasets.0.verifier.allow_insecure_http=true"])
        assert run_job(trusted).status == "finished"
    finally:
        server.stop()
    assert len(server.requests) == 3
    assert {h.get("Authorization") for _, _, h in server.requests} == {"Bearer vt-untrusted-9a7c"}


def test_replies_over_the_cap_fail_their_rollout_alone(tmp_path):
    """No size limit was put on a tool's, /verify's or an http verifier's reply: a server
    could fill the actor's memory and every record. Over `max_reply_bytes` (counted as
    decoded: a gzip bomb too) the rollout fails with a reason; the others go on."""
    from agent_server import AgentServer

    tools = AgentServer().start()
    big = RequestLog(reply=b'{"reward": 1.0, "pad": "' + b"x" * 200_000 + b'"}')
    small = RequestLog(reply=b'{"reward": 1.0}')
    add = {"type": "function", "name": "add", "parameters": {"type": "object"}}
    faults = ["ok", "huge", "bomb", "verify_huge"]
    gym_rows = [
        {"responses_create_params": {"input": f"add {f}", "tools": [add]}, "fault": f}
        for f in faults
    ]
    plain = [{"prompt": f"q {i}"} for i in range(2)]
    cap = {"max_reply_bytes": 65536}
    job = {
        "model": "sim",
        "engine": {"kind": "simulated", "tool_turns": 1},
        "datasets": [
            {
                "name": "gym",
                "path": str(write_jsonl(tmp_path / "gym.jsonl", gym_rows)),
                "agent": {"kind": "gym", "url": tools.url, **cap},
            },
            {
                "name": "big",
                "path": str(write_jsonl(tmp_path / "big.jsonl", plain)),
                "verifier": {"kind": "http", "url": f"{big.url}/verify", **cap},
            },
            {
                "name": "small",
                "path": str(write_jsonl(tmp_path / "small.jsonl", plain)),
                "verifier": {"kind": "http", "url": f"{small.url}/verify", **cap},
            },
        ],
        "output": str(tmp_path / "out"),
        "metrics_port": 0,
        "max_attempts": 1,
    }
    try:
        assert run_job(load_config(job)).status == "finished"
    finally:
        tools.stop()
        big.stop()
        small.stop()
    records = read_output(tmp_path / "out")
    assert sorted((r["dataset"], r["task_id"]) for r in records) == [
        ("gym", "gym:0"),
        ("small", "small:0"),
        ("small", "small:1"),
    ]
    failures = {(f["dataset"], f["task_id"]): f for f in read_output(tmp_path / "out", "failures")}
    assert sorted(failures) == [("big", "big:0"), ("big", "big:1")] + [
        ("gym", f"gym:{i}") for i in (1, 2, 3)
    ]
    stages = {key: (f["stage"], f["terminal"]) for key, f in failures.items()}
    assert stages[("gym", "gym:1")] == stages[("gym", "gym:2")] == ("tool", True)
    assert stages[("gym", "gym:3")] == stages[("big", "big:0")] == ("verify", True)
    for failure in failures.values():
        assert "more than the 65,536 allowed (max_reply_bytes)" in failure["error"]


#: Terminal control sequences a row or a model could carry: OSC 52 (write the
#: clipboard), clear the screen, colours, an 8-bit CSI (C1), a carriage return that
#: overwrites the line, a backspace, a NUL.
HOSTILE = "\x1b]52;c;cHduZWQ=\x07 \x1b[2J\x1b[31mred\x1b[0m \x9b31m \r\x08\x00 end"


def terminal_controls(output: bytes) -> list[str]:
    """Control characters a terminal would obey, in a command's output: bytes 0x00-0x08,
    0x0b-0x1f and 0x7f, and C1 controls (U+0080-U+009F, or a lone 0x80-0x9f byte,
    which is not UTF-8)."""
    text = output.decode("utf-8")  # strict: a lone 8-bit control byte fails here
    return sorted(
        {repr(c) for c in text if (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F}
    )


def test_no_control_character_from_inputs_reaches_the_terminal(tmp_path):
    """inspect printed OSC 52 and ESC[2J taken from model output, and raw colours from
    rows. Every console view (run's messages, --show and summary, status, inspect, an
    error) now shows such characters instead: run with its output to a pipe (so rich
    adds no styling of its own), not one control byte comes out."""
    import os
    import subprocess
    import sys

    import yaml

    endpoint = FaultServer(api_key=KEY).start()
    rows = [
        {"prompt": f"ok {HOSTILE}", "expected_answer": HOSTILE},
        {"prompt": "ok <script>alert(1)</script>", "expected_answer": "plain"},
        '{"prompt": "a broken line ' + HOSTILE.replace("\x00", "") + '"',
    ]
    data = write_jsonl(tmp_path / f"rows{HOSTILE[:5]}.jsonl", rows)
    verifier = {"kind": "exact_match", "extract": "last_line"}
    out = tmp_path / "out\x1b]52;c;cHduZWQ=\x07\x1b[2J\x9b31m"  # a folder may be named so too
    job = openai_job(endpoint, data, out, verifier=verifier)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(job))
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({**job, "datasets": [{"path": f"nowhere{HOSTILE}.jsonl"}]}))
    cli = [sys.executable, "-m", "rollout_ray.cli"]
    env = {"FAULT_KEY": KEY, "ROLLOUT_RAY_DASHBOARD": "0", "COLUMNS": "200"}
    commands = {
        "run --show": [*cli, "run", str(config), "--show"],
        "status": [*cli, "status", str(out)],
        "inspect": [*cli, "inspect", str(out), "--html", str(tmp_path / "report.html")],
        "an error": [*cli, "run", str(missing)],
    }
    seen = {}
    for name, argv in commands.items():
        done = subprocess.run(argv, capture_output=True, env={**os.environ, **env})
        seen[name] = done.stdout + done.stderr
        assert done.returncode == (2 if name == "an error" else 0), seen[name][-3000:]
    found = {name: terminal_controls(out) for name, out in seen.items()}
    assert found == {name: [] for name in seen}
    # Shown, not dropped: the sequences are there to read.
    assert "␛]52;c;cHduZWQ=␇" in seen["inspect"].decode()
    assert "␛]52;c;cHduZWQ=␇" in seen["run --show"].decode()
    # Its output's name, shown (a long title may wrap: compare across lines).
    assert "out␛]52;" in seen["status"].decode().replace("\n", "")
    # The HTML report escapes every value (it always did) and shows controls the same way.
    page = (tmp_path / "report.html").read_bytes()
    assert terminal_controls(page) == []
    assert "␛]52;c;cHduZWQ=␇" in page.decode() and "&lt;script&gt;alert(1)" in page.decode()
    assert b"<script>alert" not in page
