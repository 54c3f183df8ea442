"""Recorded agent episodes as chat conversations for the SFT and DPO exports: multi-turn
messages with tool calls.

TRL's tool-calling format: assistant messages carry `tool_calls`
(`{"type": "function", "function": {"name", "arguments"}}`), tool replies are
`{"role": "tool", "name", "content"}` messages, and a `tools` column lists the function
schemas (here as JSON text, one per row). Arguments are JSON text in Parquet (a struct
can't hold any object); chat templates that want an object get one from
`json.loads`. Exports of jobs without agents keep the plain two-field messages.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from rollout_ray import storage
from rollout_ray.chat.responses import chat_messages
from rollout_ray.output.manifest import Layout

TOOL_CALL = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
TOOL_MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("tool_calls", pa.list_(TOOL_CALL)),
        ("tool_call_id", pa.string()),
        ("name", pa.string()),
    ]
)
TOOL_MESSAGES = pa.list_(TOOL_MESSAGE)
#: What the SFT and DPO exports read of each rollout of an agent job.
EPISODE_COLUMNS = ["episode", "episode_tools"]


def is_agent_job(output: str | list[str]) -> bool:
    """Whether any dataset of the job(s) at `output` ran with an agent."""
    for one in [output] if isinstance(output, str) else output:
        layout = Layout(one)
        if not storage.exists(layout.job):
            continue
        config = storage.read_json(layout.job).get("config") or {}
        if any(d.get("agent") for d in config.get("datasets") or []):
            return True
    return False


def _message(m: dict[str, Any]) -> dict[str, Any]:
    calls = m.get("tool_calls")
    return {
        "role": m.get("role"),
        "content": m.get("content") if isinstance(m.get("content"), str) else "",
        "tool_calls": [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {
                    "name": c["function"]["name"],
                    "arguments": c["function"]["arguments"]
                    if isinstance(c["function"]["arguments"], str)
                    else json.dumps(c["function"]["arguments"], ensure_ascii=False),
                },
            }
            for c in calls
        ]
        if calls
        else None,
        "tool_call_id": m.get("tool_call_id"),
        "name": m.get("name"),
    }


def completion_lists(rows: pa.Table) -> pa.Array:
    """Each rollout's turns: its episode's messages, or its one assistant reply."""
    out = []
    for episode, text in zip(
        rows["episode"].to_pylist(), rows["response_text"].to_pylist(), strict=True
    ):
        if episode:
            messages = chat_messages(json.loads(episode))
        else:
            messages = [{"role": "assistant", "content": text or ""}]
        out.append([_message(m) for m in messages])
    return pa.array(out, TOOL_MESSAGES)


def prompt_lists(rows: pa.Table) -> pa.Array:
    return pa.array(
        [[_message(m) for m in p or []] for p in rows["prompt_messages"].to_pylist()],
        TOOL_MESSAGES,
    )


def conversation_lists(prompts: pa.Array, completions: pa.Array) -> pa.Array:
    return pa.array(
        [p + c for p, c in zip(prompts.to_pylist(), completions.to_pylist(), strict=True)],
        TOOL_MESSAGES,
    )
