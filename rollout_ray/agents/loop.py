"""The turn loop of one agent episode: model turn, tool calls, tool outputs, again,
until the model answers. (run/agent_rollouts.py makes records of it; exports/conversations.py
turns the records into chat messages.)

Runs as a coroutine in the engine actor, one per rollout, so while an episode waits
on its tools the engine's batch is filled by the others. The episode is kept as
Responses-API output items (what Gym's `/verify` and its rollout files hold) and, on
engines that tokenize, as the conversation's token ids with a mask of the model's own.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from rollout_ray.agents.environments import Session
from rollout_ray.chat.responses import (
    function_call_item,
    function_call_output_item,
    message_item,
    reasoning_item,
    response_object,
    template_arguments,
)
from rollout_ray.chat.tools import responses_tools
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
    response: dict[str, Any]  # the Responses-API response object /verify gets
    mask: list[int] | None = None
    #: What the record should say about how the episode ran (a template fallback, a
    #: turn that made more calls than it was allowed).
    warnings: list[str] = field(default_factory=list)


def turn_seed(seed: int, turn: int) -> int:
    """The seed of an episode's turn (from 0): the rollout's seed for the first, then one
    drawn from (seed, turn), so each turn samples anew (with one seed, a forced episode
    repeats its first call) and a rerun samples the same episode."""
    if turn == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{turn}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 33  # 31 bits: any engine takes it


async def run_episode(
    engine: Engine,
    request: GenerationRequest,
    conv: Conversation,
    agent: AgentConfig,
    session: Session,
    max_tool_calls: int | None,
) -> Episode:
    """Turns until the model answers without calls or a limit ends the episode. Every
    call a turn makes runs (as Gym's simple_agent runs them): a forced turn's grammar
    allows no more calls than the budget has left, and one cut by max_tokens keeps the
    calls it finished, runs them, and ends the episode incomplete.

    Raises:
        ToolUnavailable: a tool server could not be reached (stage tool).
        RowError: the first turn doesn't fit, or the row can't run at all.
    """
    items: list[dict[str, Any]] = []
    latencies: list[float] = []
    thoughts: list[str] = []
    warnings: list[str] = []
    sampling = request.sampling
    seed = sampling.get("seed")
    budget = agent.max_total_tokens
    calls_left = max_tool_calls if max_tool_calls is not None else agent.max_tool_calls
    steps = calls_made = errors = output_tokens = input_tokens = 0
    first: Generation | None = None
    last_text, finish, ran_last = "", "stop", False
    if calls_left == 0:
        conv.tool_choice = "none"
    started = time.monotonic()
    while True:
        if budget is not None and output_tokens >= budget:
            finish = "length"
            break
        turn_sampling = dict(sampling)
        if budget is not None:
            cap = min(sampling.get("max_tokens") or budget, budget - output_tokens)
            turn_sampling["max_tokens"] = cap
        if seed is not None:
            turn_sampling["seed"] = turn_seed(seed, steps)
        conv.calls_left = None if calls_left is None else calls_left - calls_made
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
        input_tokens += gen.prompt_tokens
        output_tokens += gen.output_tokens
        finish = gen.finish_reason
        cut = finish == "length"
        calls = list(gen.tool_calls or [])
        if gen.reasoning_text:
            thoughts.append(gen.reasoning_text)
            items.append(reasoning_item(gen.reasoning_text))
        last_text = gen.text if gen.text or not calls else ""
        if gen.text or not calls:
            items.append(message_item(gen.text, "incomplete" if cut else "completed"))
        conv.messages.append(_assistant_message(gen.text, calls))
        items += [function_call_item(c.call_id, c.name, c.arguments) for c in calls]
        ran_last = False
        if not calls or agent.kind == "none":
            break
        allowed = 1 if not conv.parallel_tool_calls else conv.calls_left
        if allowed is not None and len(calls) > allowed:
            warnings.append(
                f"turn {steps} made {len(calls)} calls where {allowed} were allowed "
                "(parallel_tool_calls, max_tool_calls); all of them ran, as the model wrote "
                "them, as Gym's simple_agent runs them"
            )
        offered = {t["function"]["name"] for t in conv.tools}
        for call in calls:
            calls_made += 1
            output, failed = await _run_call(session, call.name, call.arguments, offered)
            errors += failed
            items.append(function_call_output_item(call.call_id, output))
            conv.messages.append(
                {"role": "tool", "tool_call_id": call.call_id, "name": call.name, "content": output}
            )
        ran_last = True
        if cut or steps >= agent.max_steps:
            break
        if calls_left is not None and calls_made >= calls_left:
            conv.tool_choice = "none"  # calls spent: the next turn answers without tools
    assert first is not None
    if ran_last:
        await engine.finish(conv)  # the last calls' outputs, into the token record
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
    response = response_object(
        model=engine.model_label,
        items=items,
        incomplete=finish == "length",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        sampling=sampling,
        tools=responses_tools(conv.tools),
        tool_choice=conv.tool_choice,
        parallel_tool_calls=conv.parallel_tool_calls,
    )
    return Episode(
        generation,
        items,
        steps,
        calls_made,
        errors,
        latencies,
        response,
        mask=conv.mask[conv.prompt_len :] if conv.token_ids is not None else None,
        warnings=conv.warnings + warnings,
    )


async def _run_call(
    session: Session, name: str, arguments: str, offered: set[str]
) -> tuple[str, bool]:
    """One call's output, and whether it is an error: unparseable arguments and tools
    the episode did not offer get an error output the model sees (as in Gym)."""
    try:
        parsed = json.loads(arguments)
        if not isinstance(parsed, dict):
            raise ValueError("arguments must be a JSON object")
    except (ValueError, RecursionError) as exc:
        return json.dumps({"error": f"Invalid tool call arguments: {exc!r}"}), True
    refused = refuse_call(name, offered)
    if refused:
        return json.dumps({"error": refused}), True
    return await session.call(name, parsed, arguments)


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
                "function": {"name": c.name, "arguments": template_arguments(c.arguments)},
            }
            for c in calls
        ]
    return message
