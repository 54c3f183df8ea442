"""An episode's record is what happened: the tokens, items, tool outputs and the /verify
body agree call for call (tests/episode_check.py), and turns sample with their own
seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_server import AgentServer
from episode_check import check_output, split_turns
from helpers import job_config, read_output, write_jsonl

from rollout_ray import run_job

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
