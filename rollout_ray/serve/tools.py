"""Tool calling in the Serve app: chat requests with `tools` and `tool_choice`.

A served request with tools is one agent turn, run by the same code as a job's
episodes (`VLLMEngine.turn`): the chat template gets the tools (or the Hermes system
text, for templates that ignore them), `tool_choice: required` or a named function is
enforced with structured outputs, and `auto` calls are read back by vLLM's tool parser
(`serve.tool_parser`, as `engine.tool_parser` for jobs). So an agent that drives the
served model (NeMo Gym's simple_agent through its vllm_model server) sees calls exactly
as a job's own episodes would. The conversation so far (assistant `tool_calls`, `tool`
results) is rendered whole each request: the server keeps no state between requests.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from rollout_ray.chat.tools import chat_tools, normalise_choice
from rollout_ray.engines.base import Conversation, Generation, GenerationRequest
from rollout_ray.inputs.prompts import content_text

ROLES = {"system", "developer", "user", "assistant", "tool"}


class ToolRequestError(ValueError):
    """The request's tools or messages are malformed (a 400 naming the field)."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def wants_tools(body: dict[str, Any]) -> bool:
    """Whether a chat request is a tool turn: it offers tools, or its history has calls."""
    if body.get("tools"):
        return True
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages
    )


def conversation(body: dict[str, Any], messages: list[dict[str, Any]]) -> Conversation:
    """The request as an episode's conversation (tools, choice, parallel calls).

    Raises:
        ToolRequestError: malformed tools, or a tool_choice naming no tool.
        RowError: see chat_tools / normalise_choice (the app answers 400).
    """
    tools = chat_tools(body.get("tools"), "tools")
    choice = normalise_choice(body.get("tool_choice"), tools, "tool_choice") if tools else "none"
    parallel = body.get("parallel_tool_calls")
    return Conversation(
        messages=messages,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel if isinstance(parallel, bool) else True,
        template_kwargs=dict(body.get("chat_template_kwargs") or {}),
    )


def history(items: list[Any], where: str = "messages") -> list[dict[str, Any]]:
    """Chat messages with their tool history kept: assistant `tool_calls` (arguments as
    objects where they parse, as chat templates take them) and `tool` results.

    Raises:
        ToolRequestError: a message or a call without what it needs; names it.
    """
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        role = item.get("role") if isinstance(item, dict) else None
        if role not in ROLES:
            raise ToolRequestError(f"{at} must be a message with a role", at)
        content = item.get("content")
        text = "" if content is None else content_text(content, at)
        message: dict[str, Any] = {"role": "system" if role == "developer" else role}
        message["content"] = text
        if role == "assistant" and item.get("tool_calls"):
            message["tool_calls"] = [
                _call(c, f"{at}.tool_calls[{j}]") for j, c in enumerate(item["tool_calls"])
            ]
        if role == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ToolRequestError(f"{at} (a tool result) has no tool_call_id", at)
            message["tool_call_id"] = call_id
            if isinstance(item.get("name"), str):
                message["name"] = item["name"]
        out.append(message)
    return out


def _call(call: Any, at: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ToolRequestError(f"{at} must be a function call with a name", at)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
            arguments = parsed if isinstance(parsed, dict) else arguments
        except (ValueError, RecursionError):
            pass  # as the model wrote it
    return {
        "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
        "type": "function",
        "function": {"name": function["name"], "arguments": arguments or {}},
    }


def reply_message(gen: Generation) -> tuple[dict[str, Any], str]:
    """A turn as a chat-completions message and its finish_reason (`tool_calls` when
    it called)."""
    calls = gen.tool_calls or []
    message: dict[str, Any] = {"role": "assistant", "content": gen.text or None}
    if not calls:
        message["content"] = gen.text
        return message, gen.finish_reason
    message["tool_calls"] = [
        {
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls
    ]
    return message, "tool_calls" if gen.finish_reason == "stop" else gen.finish_reason


def turn_request(messages: list[dict[str, Any]], sampling: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest(request_id=uuid.uuid4().hex, messages=messages, sampling=sampling)
