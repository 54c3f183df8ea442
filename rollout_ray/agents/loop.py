"""The turn loop of one agent episode: model turn, tool calls, tool outputs, again,
until the model answers. (run/agent_rollouts.py makes records of it; exports/conversations.py
turns the records into chat messages.)

Runs as a coroutine in the engine actor, one per rollout, so while an episode waits
on its tools the engine's batch is filled by the others. The episode is kept as
Responses-API output items (what Gym's `/verify` and its rollout files hold) and, on
engines that tokenize, as the conversation's token ids with a mask of the model's own.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from rollout_ray.agents.environments import Session
from rollout_ray.agents.responses import (
    function_call_item,
    function_call_output_item,
    message_item,
    reasoning_item,
    response_object,
)
from rollout_ray.agents.tools import responses_tools
from rollout_ray.config.agents import AgentConfig
from rollout_ray.engines.base import Conversation, Engine, Generation, GenerationRequest
from rollout_ray.errors import RowError


@dataclass
class Episode:
    generation: Generation  # the episode as one rollout: final text, token totals
    items: list[dict[str, Any]]
    steps: int
    tool_calls: int
    tool_errors: int
    turn_latency_s: list[float]
    response: dict[str, Any]  # the Responses-API response object
    verdict: dict[str, Any] | None = None
    mask: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def run_episode(
    engine: Engine,
    request: GenerationRequest,
    conv: Conversation,
    agent: AgentConfig,
    session: Session,
    max_tool_calls: int | None,
) -> Episode:
    """Raises ToolUnavailable (stage tool) or RowError (the first turn doesn't fit)."""
    items: list[dict[str, Any]] = []
    latencies: list[float] = []
    thoughts: list[str] = []
    sampling = request.sampling
    budget = agent.max_total_tokens
    calls_left = max_tool_calls if max_tool_calls is not None else agent.max_tool_calls
    steps = calls_made = errors = output_tokens = 0
    first: Generation | None = None
    last_text, finish = "", "stop"
    if calls_left == 0:
        conv.tool_choice = "none"
    started = time.monotonic()
    while True:
        if budget is not None and output_tokens >= budget:
            finish = "length"
            break
        turn_sampling = sampling
        if budget is not None:
            cap = min(sampling.get("max_tokens") or budget, budget - output_tokens)
            turn_sampling = {**sampling, "max_tokens": cap}
        turn_request = GenerationRequest(request.request_id, conv.messages, turn_sampling)
        try:
            gen = await engine.turn(conv, turn_request)
        except RowError:
            if steps == 0:
                raise
            finish = "length"  # the episode outgrew the context
            break
        steps += 1
        first = first or gen
        latencies.append(gen.latency_s)
        output_tokens += gen.output_tokens
        finish, last_text = gen.finish_reason, gen.text
        calls = list(gen.tool_calls or [])
        if calls_left is not None:
            calls = calls[: max(0, calls_left - calls_made)]
        if gen.reasoning_text:
            thoughts.append(gen.reasoning_text)
            items.append(reasoning_item(gen.reasoning_text))
        if gen.text or not calls:
            items.append(message_item(gen.text))
        conv.messages.append(_assistant_message(gen.text, calls))
        for call in calls:
            items.append(function_call_item(call.call_id, call.name, call.arguments))
        if not calls or finish == "length" or agent.kind == "none":
            break
        offered = {t["function"]["name"] for t in conv.tools}
        for call in calls:
            calls_made += 1
            refused = refuse_call(call.name, offered)
            try:
                arguments = json.loads(call.arguments)
                if not isinstance(arguments, dict):
                    raise ValueError("arguments must be a JSON object")
            except (ValueError, RecursionError) as exc:
                output, failed = (
                    json.dumps({"error": f"Invalid tool call arguments: {exc!r}"}),
                    True,
                )
            else:
                if refused:
                    output, failed = json.dumps({"error": refused}), True
                else:
                    output, failed = await session.call(call.name, arguments)
            errors += failed
            items.append(function_call_output_item(call.call_id, output))
            conv.messages.append(
                {"role": "tool", "tool_call_id": call.call_id, "name": call.name, "content": output}
            )
        if steps >= agent.max_steps:
            break
        if calls_left is not None and calls_made >= calls_left:
            conv.tool_choice = "none"  # calls spent: the next turn answers without tools
    assert first is not None
    generation = Generation(
        text=last_text,
        finish_reason=finish,
        prompt_tokens=conv.prompt_len or first.prompt_tokens,
        output_tokens=output_tokens,
        latency_s=time.monotonic() - started,
        ttft_s=first.ttft_s,
        reasoning_text="\n\n".join(thoughts) or None,
    )
    if conv.token_ids is not None:
        generation.prompt_token_ids = conv.token_ids[: conv.prompt_len]
        generation.output_token_ids = conv.token_ids[conv.prompt_len :]
        generation.output_logprobs = conv.logprobs[conv.prompt_len :]
    response = episode_response(engine, conv, items, generation, sampling)
    return Episode(
        generation,
        items,
        steps,
        calls_made,
        errors,
        latencies,
        response,
        mask=conv.mask[conv.prompt_len :] if conv.token_ids is not None else None,
    )


#: A tool name that may be run: OpenAI's rule for function names. Names reach a tool
#: server's URL (`url/{name}`), so nothing else (no `/`, `.`, `?`, `%`) is allowed.
SAFE_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def refuse_call(name: str, offered: set[str]) -> str | None:
    """Why a call the model made must not run, or None. Only the episode's offered tools
    run, and only under a safe name: a call's name comes from model output (and tools
    from rows), so neither may pick another endpoint of the tool server."""
    if not SAFE_TOOL_NAME.fullmatch(name):
        return f"Invalid tool name {name[:100]!r}: use letters, digits, '_' and '-' only"
    if name not in offered:
        listed = ", ".join(sorted(offered)[:20]) or "none"
        return f"Tool {name!r} is not one of this episode's tools (offered: {listed})"
    return None


def _assistant_message(text: str, calls: list) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": _arguments(c.arguments)},
            }
            for c in calls
        ]
    return message


def _arguments(text: str) -> Any:
    """Arguments as chat templates (and TRL) take them: an object when they parse."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if isinstance(value, dict) else text


def episode_response(
    engine: Engine,
    conv: Conversation,
    items: list[dict[str, Any]],
    gen: Generation,
    sampling: dict[str, Any],
) -> dict[str, Any]:
    """The episode as a Responses-API `response`, with every field Gym validates."""
    return response_object(
        model=engine.model_label,
        items=items,
        incomplete=gen.finish_reason == "length",
        input_tokens=gen.prompt_tokens,
        output_tokens=gen.output_tokens,
        sampling=sampling,
        tools=responses_tools(conv.tools),
        tool_choice=conv.tool_choice,
        parallel_tool_calls=conv.parallel_tool_calls,
    )


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output items as chat messages in TRL's tool-calling format (for sft/dpo)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for item in items:
        kind = item.get("type")
        if kind == "message":
            text = "".join(p.get("text", "") for p in item.get("content") or [])
            out.append({"role": "assistant", "content": text})
        elif kind == "function_call":
            names[item["call_id"]] = item["name"]
            call = {
                "type": "function",
                "id": item["call_id"],
                "function": {"name": item["name"], "arguments": _arguments(item["arguments"])},
            }
            if out and out[-1]["role"] == "assistant" and not out[-1].get("_closed"):
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            if out and out[-1]["role"] == "assistant":
                out[-1]["_closed"] = True
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "name": names.get(item["call_id"], ""),
                    "content": item.get("output", ""),
                }
            )
    for message in out:
        message.pop("_closed", None)
    return out
