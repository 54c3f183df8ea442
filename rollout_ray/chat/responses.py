"""Responses-API output items and response objects: the one place that builds them.

NeMo Gym's `/verify`, its rollout files (`export gym`), the http verifier and our Serve
app's `/v1/responses` all speak this shape, and Gym's pydantic models validate it: a
message item needs `id` and `content[].annotations`, a function call's `arguments` is
JSON text, a response needs `id`, `created_at`, `model`, `object`, `output`,
`parallel_tool_calls`, `tool_choice` and `tools`. Building them here keeps every
writer in step with what Gym accepts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from rollout_ray.errors import RowError


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


def recorded_response(
    record: dict[str, Any],
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
) -> dict[str, Any]:
    """A committed rollout's `response`: an episode's as its /verify got it (the
    `episode_response` column with the `episode` items as output), or a one-message
    response for a single turn (and for episodes recorded before that column, with the
    usage of every turn worked out from the token record), offering `tools`."""
    if record.get("episode") and record.get("episode_response"):
        return {**json.loads(record["episode_response"]), "output": json.loads(record["episode"])}
    items = (
        json.loads(record["episode"])
        if record.get("episode")
        else [message_item(record.get("response_text") or "")]
    )
    created = record.get("created_at")
    if created is not None and not isinstance(created, int | float):
        created = float(created.timestamp())
    return response_object(
        model=record.get("model"),
        items=items,
        incomplete=record.get("finish_reason") == "length",
        input_tokens=_input_tokens(record),
        output_tokens=record.get("output_tokens") or 0,
        sampling=record.get("sampling") or {},
        tools=tools or [],
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        created_at=created,
    )


def _input_tokens(record: dict[str, Any]) -> int:
    """Input tokens over every model turn: each turn's prompt is the first prompt plus
    every output token before the turn (its start in the mask)."""
    first = record.get("prompt_tokens") or 0
    mask = record.get("output_mask")
    if not mask:
        return first
    starts = [i for i, m in enumerate(mask) if m == 1 and (i == 0 or mask[i - 1] == 0)]
    return sum(first + start for start in starts) or first


def api_tool_choice(choice: Any) -> Any:
    """Our tool choice ("auto" | "required" | "none" | a function's name) in the API's
    shape: a name becomes `{"type": "function", "name": ...}`."""
    if choice in ("auto", "required", "none") or isinstance(choice, dict):
        return choice
    return {"type": "function", "name": choice}


# ---------------------------------------------------------------------- items to messages


def chat_messages(
    items: list[dict[str, Any]],
    *,
    message: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
    think: bool = False,
    where: str = "items",
) -> list[dict[str, Any]]:
    """Responses-API items as the chat-completions conversation they are, by the rules
    of Gym's own converter (what its vllm_model sends a chat template): an assistant
    message's text, its reasoning (as `<think>` text, when `think`) and the calls after
    it make one assistant message with `tool_calls`; each `function_call_output` is a
    `tool` message, with the call's name (TRL's tool-calling format).

    Args:
        items: messages (`{"role", "content"}`, `type` "message" or none),
            `function_call`, `function_call_output` and `reasoning` items.
        message: turns a message item into `{"role", "content"}` (a row's input
            checks roles and content parts); default: its text parts joined.
        think: keep reasoning as `<think>...</think>` before the assistant's text (as
            Gym does for a prompt); otherwise it is dropped.
        where: names the list in errors.

    Raises:
        RowError: an item is not one of these, or lacks what its type needs.
    """
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    pending: dict[str, Any] = {"content": "", "tool_calls": []}

    def flush() -> None:
        if pending["content"] or pending["tool_calls"]:
            assistant: dict[str, Any] = {"role": "assistant", "content": pending["content"]}
            if pending["tool_calls"]:
                assistant["tool_calls"] = pending["tool_calls"]
            out.append(assistant)
        pending.update(content="", tool_calls=[])

    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise RowError(f"{at} must be an object (a message or a Responses-API item)")
        kind = item.get("type")
        if kind == "function_call":
            call_id, name = _field(item, "call_id", at), _field(item, "name", at)
            names[call_id] = name
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                raise RowError(f"{at}.arguments must be JSON text, got {type(arguments).__name__}")
            pending["tool_calls"].append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": template_arguments(arguments)},
                }
            )
        elif kind == "function_call_output":
            call_id = _field(item, "call_id", at)
            flush()
            output = item.get("output")
            if isinstance(output, list):  # output parts: their text
                output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
            if not isinstance(output, str):
                raise RowError(f"{at}.output must be text")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "name": names.get(call_id, ""),
                    "content": output,
                }
            )
        elif kind == "reasoning":
            texts = [s.get("text") or "" for s in item.get("summary") or [] if isinstance(s, dict)]
            if think and any(texts):
                pending["content"] += "".join(f"<think>{t}</think>" for t in texts if t)
        elif kind in (None, "message"):
            if message is None:
                role = item.get("role") or "assistant"
                parts = item.get("content")
                text = (
                    parts
                    if isinstance(parts, str)
                    else "".join(p.get("text", "") for p in parts or [] if isinstance(p, dict))
                )
                converted = {"role": role, "content": text}
            else:
                converted = message(item, at)
            if converted["role"] == "assistant":
                pending["content"] += converted["content"]
                for call in converted.get("tool_calls") or []:
                    names[call["id"]] = call["function"]["name"]
                    pending["tool_calls"].append(call)
            else:
                flush()
                if converted["role"] == "tool" and not converted.get("name"):
                    converted["name"] = names.get(converted.get("tool_call_id") or "", "")
                out.append(converted)
        else:
            raise RowError(
                f"{at} is a {str(kind)[:40]!r} item; a conversation holds messages, "
                "function_call, function_call_output and reasoning items"
            )
    flush()
    return out


def responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages back as a Responses-API `input`: an assistant's `tool_calls` as
    function_call items (arguments as JSON text), tool replies as function_call_output
    items; other messages as `{"role", "content"}`."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") == "tool":
            output = m.get("content") or ""
            out.append(function_call_output_item(str(m.get("tool_call_id") or ""), output))
            continue
        if m.get("role") != "assistant" or not m.get("tool_calls"):
            out.append({"role": m["role"], "content": m.get("content") or ""})
            continue
        if m.get("content"):
            out.append({"role": "assistant", "content": m["content"]})
        for call in m["tool_calls"]:
            arguments = call["function"]["arguments"]
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            out.append(function_call_item(str(call.get("id")), call["function"]["name"], arguments))
    return out


def template_arguments(text: str) -> Any:
    """A call's arguments as chat templates (and TRL) take them: the object they hold,
    when they are a JSON object; else the text as it is."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if isinstance(value, dict) else text


def _field(item: dict[str, Any], key: str, at: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise RowError(f"{at} ({item.get('type')}) needs {key!r} as a non-empty string")
    return value
