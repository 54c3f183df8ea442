"""Gym rows whose input carries earlier turns (function_call, function_call_output and
reasoning items) run, and the model sees them as the conversation they are: through its
chat template, with the calls written as it was told to write calls when the template
drops `tool_calls` (the tiny model's ChatML template does)."""

from __future__ import annotations

import json

import pytest
from gym_servers import gym_data
from helpers import job_config, read_output, write_jsonl

from rollout_ray import run_job

pytestmark = pytest.mark.slow

FIND = {"type": "function", "name": "find", "parameters": {"type": "object"}}
EARLIER = [
    {"role": "user", "content": "Book it."},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Look."}]},
    {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
    },
    {"type": "function_call", "call_id": "c1", "name": "find", "arguments": '{"x": 1.50}'},
    {"type": "function_call_output", "call_id": "c1", "output": '{"found": "seat 12"}'},
    {"role": "user", "content": "And now?"},
]


def shortened(item: dict) -> dict:
    """An input item with its texts cut to 60 characters."""
    item = dict(item)
    if isinstance(item.get("content"), str):
        item["content"] = item["content"][:60]
    elif isinstance(item.get("content"), list):
        item["content"] = [{**p, "text": p["text"][:60]} for p in item["content"]]
    if item.get("summary"):
        item["summary"] = [{**s, "text": s["text"][:60]} for s in item["summary"]]
    if item.get("type") == "function_call_output":
        item["output"] = item["output"][:60]
    return item


def test_rows_with_earlier_turns_run_as_that_conversation(tiny_model, tmp_path):
    """Seen before: such rows were refused per row ("must be an object with 'role' and
    'content'"), with an agent or without."""
    public = gym_data("single_step_tool_use_with_argument_comparison")
    gym_rows = [json.loads(line) for line in public.read_text().splitlines()[:2]]
    for row in gym_rows:  # the tiny model's context is 1024 tokens: shorter texts
        params = row["responses_create_params"]
        params["input"] = [shortened(i) for i in params["input"] if i.get("role") != "system"]
        params["tools"] = [{"type": "function", "name": params["tools"][0]["name"]}]
    agent_rows = [{"responses_create_params": {"input": EARLIER, "tools": [FIND]}}, *gym_rows]
    plain = [{"responses_create_params": {"input": EARLIER}}]  # no tools: no agent needed
    with_agent = write_jsonl(tmp_path / "agent.jsonl", agent_rows)
    without = write_jsonl(tmp_path / "plain.jsonl", plain)
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [
            {"name": "agent", "path": str(with_agent), "agent": {"kind": "none"}},
            {"name": "plain", "path": str(without)},
        ],
        sampling={"max_tokens": 8, "return_token_ids": True},
        engine={"kind": "vllm", "max_model_len": 1024},
        executor="local",
    )
    assert run_job(config).status == "finished"
    assert read_output(tmp_path / "out", "failures") == []
    records = read_output(tmp_path / "out")
    assert len(records) == 4
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for record in records:
        prompt = tokenizer.decode(record["prompt_token_ids"])
        params = json.loads(record["responses_create_params"])
        at = 0
        for item in params["input"]:
            if item.get("type") == "function_call":
                arguments = json.loads(item["arguments"])
                seen = f'{{"name": "{item["name"]}", "arguments": {json.dumps(arguments)}}}'
            elif item.get("type") == "function_call_output":
                seen = item["output"]
            elif item.get("type") == "reasoning":
                seen = "<think>" + item["summary"][0]["text"] + "</think>"
            else:
                content = item["content"]
                seen = content if isinstance(content, str) else content[0]["text"]
            found = prompt.find(seen, at)
            assert found >= 0, f"{seen!r} is not in the prompt, in order"
            at = found + len(seen)
