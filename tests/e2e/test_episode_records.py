"""An episode's record is what happened: the tokens, items, tool outputs and the /verify
body agree call for call (tests/episode_check.py), turns sample with their own seeds,
and an agent whose configuration is wrong fails once with a message."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from agent_server import AgentServer
from episode_check import check_output, split_turns
from gym_servers import check_with_gym
from helpers import job_config, read_output, write_jsonl

from rollout_ray import run_job
from rollout_ray.config import load_config
from rollout_ray.errors import JobFault
from rollout_ray.exports import export

pytestmark = pytest.mark.slow

ADD = {
    "type": "function",
    "name": "add",
    "description": "Add n to the running total.",
    "parameters": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["n"],
    },
    "strict": True,
}
#: A number without bounds: a random model writes digits until max_tokens cuts it.
NOTE = {
    "type": "function",
    "name": "note",
    "description": "Note a measurement.",
    "parameters": {
        "type": "object",
        "properties": {"x": {"type": "number"}},
        "required": ["x"],
    },
    "strict": True,
}


def rows(n: int, tools: list[dict], *more: list[dict], **extra) -> list[dict]:
    """n rows; with `more`, rows take their tools from `tools` and each of `more` in turn."""
    choices = [tools, *more]
    return [
        {
            "responses_create_params": {
                "input": [{"role": "user", "content": f"use the tools ({i})"}],
                "tools": choices[i % len(choices)],
            },
            "fault": "ok",
            "expected_total": 1,
            **extra,
        }
        for i in range(n)
    ]


def forced_job(tiny_model: str, output: Path, data: Path, url: str, max_tokens=40, **agent):
    agent = {"kind": "gym", "url": url, "tool_choice": "required", **agent}
    sampling = {"max_tokens": max_tokens, "temperature": 1.0, "seed": 11, "logprobs": True}
    return job_config(
        tiny_model,
        output,
        [{"path": str(data), "num_repeats": 4, "agent": agent}],
        sampling=sampling,
        engine={"kind": "vllm", "max_model_len": 1024},
        executor="local",
    )


def test_forced_episodes_record_every_call_as_written_and_run(tiny_model, tmp_path):
    """256 forced-call episodes with parallel calls, a budget of 4 calls and turns that
    max_tokens cuts inside a call array. Seen before: a cut array became an empty
    answer (steps 1, tool_calls 0, reward 0); calls over the budget stayed in the tokens
    unrun; arguments were re-serialised."""
    server = AgentServer().start()
    try:
        data = write_jsonl(tmp_path / "rows.jsonl", rows(64, [ADD, NOTE], [ADD]))
        config = forced_job(
            tiny_model, tmp_path / "out", data, server.url, max_tokens=96, max_tool_calls=4
        )
        assert run_job(config).status == "finished"
    finally:
        server.stop()
    records = read_output(tmp_path / "out")
    assert len(records) == 256, read_output(tmp_path / "out", "failures")[:3]
    checked, problems = check_output(tmp_path / "out", server.verify_bodies)
    assert checked == 256 and problems == [], problems[:10]
    # Turns cut inside a call array kept their complete calls, ran them, and ended the
    # episode incomplete: never an empty answer.
    cut = [r for r in records if r["finish_reason"] == "length"]
    assert cut, "no turn was cut by max_tokens: the test lost its point"
    assert any(split_turns(json.loads(r["episode"]))[-1]["outputs"] for r in cut)
    for record in records:
        items = json.loads(record["episode"])
        assert not any(i["type"] == "message" for i in items[:-1])
        assert record["tool_calls"] <= 4


def test_each_turn_samples_with_its_own_seed(tiny_model, tmp_path):
    """Seen before: every turn of an episode sampled with the rollout's seed, so a forced
    episode repeated one call. Seeds now come from the rollout's seed and the turn:
    other calls each turn, the same episode on a rerun."""
    server = AgentServer().start()
    try:
        data = write_jsonl(tmp_path / "rows.jsonl", rows(4, [ADD]))
        episodes = []
        for name in ("a", "b"):
            config = forced_job(
                tiny_model,
                tmp_path / name,
                data,
                server.url,
                max_tool_calls=4,
                parallel_tool_calls=False,
            )
            assert run_job(config).status == "finished"
            episodes.append(
                {
                    (r["row_index"], r["rollout_index"]): [
                        i["arguments"] for i in json.loads(r["episode"]) if i.get("arguments")
                    ]
                    for r in read_output(tmp_path / name)
                }
            )
    finally:
        server.stop()
    first, second = episodes
    assert len(first) == 16 and first == second  # reproducible
    assert all(len(calls) == 4 for calls in first.values())
    repeating = [calls for calls in first.values() if len(set(calls)) == 1]
    assert len(repeating) <= 4, repeating


# ------------------------------------------------------------------ configuration faults


def simulated_job(output: Path, data: Path, url: str):
    return load_config(
        {
            "model": "simulated",
            "engine": {"kind": "simulated", "tool_turns": 1, "output_tokens": 6},
            "executor": "local",
            "output": str(output),
            "metrics_port": 0,
            "datasets": [
                {"path": str(data), "num_repeats": 2, "agent": {"kind": "gym", "url": url}}
            ],
        }
    )


def test_a_verify_that_refuses_the_request_fails_each_rollout_once(tmp_path):
    """Seen before: a /verify answering 422 (a server that is not this dataset's) was
    a retryable failure: every episode ran again on each of max_attempts' tries."""
    server = AgentServer().start()
    try:
        data = write_jsonl(tmp_path / "rows.jsonl", rows(4, [ADD], fault="verify_422"))
        with pytest.raises(JobFault, match=r"all 8 rollouts .* failed for the same cause"):
            run_job(simulated_job(tmp_path / "out", data, server.url))
    finally:
        server.stop()
    failures = read_output(tmp_path / "out", "failures")
    assert len(failures) == 8 and all(f["terminal"] for f in failures)
    assert all(f["stage"] == "verify" and "HTTP 422" in f["error"] for f in failures)
    assert "Field required" in failures[0]["error"]  # the server's own reason
    assert server.hits["seed"] == 8 and server.hits["verify:verify_422"] == 8  # once each


def test_a_server_that_is_not_a_gym_server_stops_the_job_at_once(tmp_path):
    """/seed_session answering 404 means the url is not a resources server: the job
    stops with that message. Seen before: the 404 went unnoticed, every episode ran
    unseeded and failed at /verify, three times."""
    server = AgentServer(prefix="/envs/mine").start()
    try:
        data = write_jsonl(tmp_path / "rows.jsonl", rows(4, [ADD]))
        wrong = f"http://127.0.0.1:{server.port}"  # without the prefix: no such endpoint
        with pytest.raises(JobFault, match=r"agent.url .* is not a NeMo Gym resources server"):
            run_job(simulated_job(tmp_path / "out", data, wrong))
    finally:
        server.stop()
    seeds = [p for p in server.paths if p.endswith("/seed_session")]
    assert 1 <= len(seeds) <= 8  # at most once per rollout, never retried
    assert not [p for p in server.paths if p.endswith(("/add", "/verify"))]


def test_a_server_that_cannot_be_reached_stops_the_job_at_once(tmp_path):
    """An agent.url nothing answers at (a wrong port or host) is the configuration's
    fault: one message, not a `tool` failure per rollout retried on every run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    data = write_jsonl(tmp_path / "rows.jsonl", rows(4, [ADD]))
    with pytest.raises(JobFault, match=rf"agent.url http://127.0.0.1:{port} can't be reached"):
        run_job(simulated_job(tmp_path / "out", data, f"http://127.0.0.1:{port}"))
    assert read_output(tmp_path / "out", "failures") == []


def test_a_template_that_rejects_the_episode_is_a_recorded_fact(tiny_model, tmp_path):
    """A chat template without a `tool` role raised; the episode was then rendered as
    plain text with nothing in the record. Now the record's row_warnings say so."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    settings = json.loads((model / "tokenizer_config.json").read_text())
    settings["chat_template"] = (
        "{% for message in messages %}{% if message['role'] == 'tool' %}"
        "{{ raise_exception('this template has no tool role') }}{% endif %}"
        "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (model / "tokenizer_config.json").write_text(json.dumps(settings))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    server = AgentServer().start()
    try:
        data = write_jsonl(tmp_path / "rows.jsonl", rows(2, [ADD]))
        config = forced_job(str(model), tmp_path / "out", data, server.url, max_tool_calls=1)
        assert run_job(config).status == "finished"
    finally:
        server.stop()
    records = read_output(tmp_path / "out")
    assert len(records) == 8 and all(r["tool_calls"] == 1 for r in records)
    for record in records:
        (warning,) = record["row_warnings"]
        assert "this template has no tool role" in warning
        assert "rendered as plain text" in warning


def test_gym_export_lines_hold_what_verify_got(tiny_model, tmp_path):
    """Seen before: export lines lacked `agent_ref` (Gym's ng_collect_rollouts always
    writes it), counted the first prompt only as usage.input_tokens (Gym sums every
    turn's) and said tool_choice "auto" where /verify was sent "none"."""
    server = AgentServer().start()
    try:
        data = write_jsonl(tmp_path / "rows.jsonl", rows(4, [ADD]))
        config = forced_job(
            tiny_model,
            tmp_path / "out",
            data,
            server.url,
            max_tool_calls=2,
            parallel_tool_calls=False,
        )
        assert run_job(config).status == "finished"
    finally:
        server.stop()
    export("gym", str(tmp_path / "out"), str(tmp_path / "gym.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "gym.jsonl").read_text().splitlines()]
    check_with_gym(tmp_path / "gym.jsonl", 16)
    records = {(r["row_index"], r["rollout_index"]): r for r in read_output(tmp_path / "out")}
    sent = {b["response"]["id"]: b["response"] for b in server.verify_bodies}
    assert len(lines) == len(sent) == 16
    for line in lines:
        record = records[(line["_ng_task_index"], line["_ng_rollout_index"])]
        assert line["agent_ref"] == {"name": "rows"}
        assert line["response"] == sent[line["response"]["id"]]  # the very response
        assert line["response"]["tool_choice"] == "none"  # the calls were spent
        # Input tokens of every turn: the first prompt plus the output before each turn.
        mask = record["output_mask"]
        starts = [i for i, m in enumerate(mask) if m and (i == 0 or not mask[i - 1])]
        assert len(starts) == record["steps"] == 3
        usage = line["response"]["usage"]
        assert usage["input_tokens"] == sum(record["prompt_tokens"] + s for s in starts)
        assert usage["output_tokens"] == record["output_tokens"] == sum(mask)
