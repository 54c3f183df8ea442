"""Responses-API output items and response objects: the one place that builds them.

NeMo Gym's `/verify`, its rollout files (`export gym`), the http verifier and our Serve
app's `/v1/responses` all speak this shape, and Gym's pydantic models validate it: a
message item needs `id` and `content[].annotations`, a function call's `arguments` is
JSON text, a response needs `id`, `created_at`, `model`, `object`, `output`,
`parallel_tool_calls`, `tool_choice` and `tools`. Building them here keeps every
writer in step with what Gym accepts.
"""

from __future__ import annotations

import os
import time
from typing import Any


def new_id(prefix: str) -> str:
    """An item or response id as OpenAI spells them (`msg_...`, `fc_...`, `resp_...`)."""
    return f"{prefix}_{os.urandom(12).hex()}"


def message_item(text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant message; `status` "incomplete" when its turn was cut short."""
    return {
        "type": "message",
        "id": new_id("msg"),
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A call the model made; `arguments` exactly as it wrote them (JSON text)."""
    return {
        "type": "function_call",
        "id": new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def function_call_output_item(call_id: str, output: str) -> dict[str, Any]:
    """What a call gave back, as the model was shown it."""
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def reasoning_item(text: str) -> dict[str, Any]:
    """Thinking a reasoning parser split from a turn's answer."""
    return {
        "type": "reasoning",
        "id": new_id("rs"),
        "summary": [{"type": "summary_text", "text": text}],
    }


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Token usage; for an episode, summed over its turns (as Gym's simple_agent sums
    every model call's usage)."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    *,
    model: str | None,
    items: list[dict[str, Any]],
    incomplete: bool,
    input_tokens: int,
    output_tokens: int,
    sampling: dict[str, Any],
    tools: list[dict[str, Any]],
    tool_choice: Any,
    parallel_tool_calls: bool,
    created_at: float | None = None,
) -> dict[str, Any]:
    """A Responses-API `response`: `incomplete` (a length limit ended it) gives Gym's
    status "incomplete" with `incomplete_details.reason` "max_output_tokens"."""
    return {
        "id": new_id("resp"),
        "created_at": float(int(time.time())) if created_at is None else created_at,
        "model": model,
        "object": "response",
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": None,
        "metadata": {},
        "output": items,
        "parallel_tool_calls": parallel_tool_calls,
        "temperature": sampling.get("temperature"),
        "top_p": sampling.get("top_p"),
        "tool_choice": api_tool_choice(tool_choice),
        "tools": tools,
        "usage": usage(input_tokens, output_tokens),
    }


def api_tool_choice(choice: Any) -> Any:
    """Our tool choice ("auto" | "required" | "none" | a function's name) in the API's
    shape: a name becomes `{"type": "function", "name": ...}`."""
    if choice in ("auto", "required", "none") or isinstance(choice, dict):
        return choice
    return {"type": "function", "name": choice}
