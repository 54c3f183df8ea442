"""Rows to prompts: the three row shapes become chat messages plus per-row sampling.

Shapes: `prompt` (a string), `messages` (a chat list) and NeMo Gym's
`responses_create_params` (`input` as a string or message list, optional
`instructions`, sampling fields). A message with image parts keeps its content as a
list of text and `image_url` parts (inputs/images.py); any other content becomes text.
What the shape doesn't consume is carried into the output record unchanged (e.g.
`expected_answer`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rollout_ray.chat.responses import chat_messages, template_arguments
from rollout_ray.chat.tools import chat_tools
from rollout_ray.config import DatasetConfig, SamplingConfig
from rollout_ray.errors import RowError
from rollout_ray.inputs.images import image_part
from rollout_ray.json_text import to_json

GYM_KEY = "responses_create_params"
TOOLS_KEY = "tools"
ROW_SAMPLING_KEY = "sampling"
ROLES = {"system", "user", "assistant", "developer", "tool"}

#: Responses API field -> our sampling field.
_GYM_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_output_tokens": "max_tokens",
    "seed": "seed",
    "top_k": "top_k",
    "stop": "stop",
}


@dataclass
class Prompt:
    """What one row asks the model, and what the row carries along."""

    #: Chat-completions messages (an assistant's `tool_calls`, `tool` replies); content
    #: is text, or text and `image_url` parts (inputs/images.py).
    messages: list[dict[str, Any]]
    sampling: dict[str, Any] = field(default_factory=dict)
    carried: dict[str, Any] = field(default_factory=dict)
    responses_create_params: str | None = None
    #: Repairs made to the row when it was read (e.g. invalid UTF-8 replaced).
    warnings: list[str] | None = None
    #: Function tools the row offers (chat-completions shape), and how to use them.
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None


def build_prompt(row: dict[str, Any], dataset: DatasetConfig) -> Prompt:
    """Turn an input row into chat messages, per-row sampling and carried fields.

    Raises:
        RowError: the row has none of the shapes, or its shape is malformed; the message
            names the field.
    """
    shape = dataset.shape if dataset.shape != "auto" else detect_shape(row, dataset)
    if shape == "responses_create_params":
        prompt = _from_gym(row)
    elif shape == "messages":
        value = _json_list_text(row.get(dataset.messages_field))
        prompt = Prompt(_messages(value, dataset.messages_field))
        prompt.carried = {k: v for k, v in row.items() if k != dataset.messages_field}
        if TOOLS_KEY in prompt.carried:  # chat-completions rows carry their tools beside
            prompt.tools = chat_tools(prompt.carried.pop(TOOLS_KEY), TOOLS_KEY)
            prompt.tool_choice = prompt.carried.pop("tool_choice", None)
    else:
        prompt = Prompt([{"role": "user", "content": _prompt_text(row, dataset)}])
        consumed = set() if dataset.prompt_template else {dataset.prompt_field}
        prompt.carried = {k: v for k, v in row.items() if k not in consumed}
    if ROW_SAMPLING_KEY in prompt.carried:
        prompt.sampling.update(_row_sampling(prompt.carried.pop(ROW_SAMPLING_KEY)))
    if dataset.tools:
        prompt.tools = _merged_tools(prompt.tools, chat_tools(dataset.tools, "tools"))
    if dataset.system_prompt and prompt.messages[0]["role"] != "system":
        prompt.messages.insert(0, {"role": "system", "content": dataset.system_prompt})
    return prompt


def detect_shape(row: dict[str, Any], dataset: DatasetConfig) -> str:
    if GYM_KEY in row:
        return "responses_create_params"
    if dataset.messages_field in row:
        return "messages"
    if dataset.prompt_template or dataset.prompt_field in row:
        return "prompt"
    fields = ", ".join(sorted(row)[:12]) or "none"
    raise RowError(
        f"row has none of the shapes: no {dataset.prompt_field!r} string, no "
        f"{dataset.messages_field!r} list, no {GYM_KEY!r} (its fields: {fields})"
    )


def _prompt_text(row: dict[str, Any], dataset: DatasetConfig) -> str:
    if dataset.prompt_template:
        try:
            text = dataset.prompt_template.format(**row)
        except KeyError as exc:
            raise RowError(f"prompt_template needs field {exc.args[0]!r}, not in the row") from None
        except Exception as exc:  # IndexError, ValueError (a format spec), AttributeError...
            raise RowError(
                f"prompt_template {dataset.prompt_template[:80]!r} can't be filled from this "
                f"row: {type(exc).__name__}: {exc}"
            ) from None
        if not text:
            raise RowError("prompt_template gives an empty prompt for this row")
        return text
    value = row.get(dataset.prompt_field)
    if not isinstance(value, str) or not value:
        raise RowError(
            f"field {dataset.prompt_field!r} must be a non-empty string, got {type(value).__name__}"
        )
    return value


def _json_list_text(value: Any) -> Any:
    """A chat list stored as JSON text (a Parquet or CSV export's string column) is the
    list it holds; taken as it was, the whole JSON became one user message."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, list) else value
    return value


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    """Chat messages from a `messages` list or a Gym `input`: messages, and the
    Responses-API items of earlier turns (function_call, function_call_output,
    reasoning) as the conversation they are (chat.responses.chat_messages)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RowError(f"field {where!r} must be a non-empty list of chat messages")
    return chat_messages(value, message=_message, think=True, where=where)


def _message(message: dict[str, Any], where: str) -> dict[str, Any]:
    """One chat message, checked: its role, its content (text, or text and images), and
    an assistant's `tool_calls` / a tool reply's `tool_call_id` (chat-completions rows)."""
    if "role" not in message:
        raise RowError(f"{where} must be an object with 'role' and 'content'")
    role = message["role"]
    if not isinstance(role, str) or role not in ROLES:
        raise RowError(f"{where}.role is {_short(role)}; allowed: {', '.join(sorted(ROLES))}")
    content = message.get("content")
    out: dict[str, Any] = {
        "role": "system" if role == "developer" else role,
        "content": ""
        if content is None and role == "assistant"
        else _content(content, f"{where}.content"),
    }
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = _chat_calls(message["tool_calls"], f"{where}.tool_calls")
    if role == "tool":
        out["tool_call_id"] = str(message.get("tool_call_id") or "")
        if isinstance(message.get("name"), str):
            out["name"] = message["name"]
    return out


def _chat_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's chat-completions `tool_calls`, arguments as chat templates
    take them."""
    if not isinstance(calls, list):
        raise RowError(f"{where} must be a list of calls")
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowError(f"{where}[{i}] must be a call: {{'function': {{'name', 'arguments'}}}}")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            arguments = template_arguments(arguments)
        out.append(
            {
                "id": str(call.get("id") or f"call_{i}"),
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
    return out


def _content(content: Any, where: str) -> Any:
    """A message's content: its text, or (when it has images) a list of chat-completions
    parts, text and `image_url` (see inputs/images.py)."""
    if isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
    ):
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            image = image_part(part, f"{where}[{j}]") if isinstance(part, dict) else None
            if image is not None:
                parts.append(image)
            else:
                parts.append({"type": "text", "text": content_text([part], f"{where}[{j}]")})
        return parts
    return content_text(content, where)


def _short(value: Any) -> str:
    """A value as a message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def content_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise RowError(f"{where} has a part without text (only text and image parts)")
        return "\n".join(parts)  # as vLLM's chat parsing joins them
    raise RowError(f"{where} must be a string or a list of text parts")


def _from_gym(row: dict[str, Any]) -> Prompt:
    params = row.get(GYM_KEY)
    if not isinstance(params, dict):
        raise RowError(f"{GYM_KEY!r} must be an object")
    if "input" not in params:
        raise RowError(f"{GYM_KEY}.input is missing")
    instructions = params.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RowError(f"{GYM_KEY}.instructions must be a string, got {_short(instructions)}")
    if params["input"] == [] and not instructions:
        agent = (
            row.get("agent_ref", {}).get("name") if isinstance(row.get("agent_ref"), dict) else None
        )
        raise RowError(
            f"{GYM_KEY}.input is empty and there are no instructions: nothing to ask the "
            "model. Gym environments whose agent builds the prompt (this row's agent_ref: "
            f"{agent or 'none'}) need that agent; rollout-ray's agents take the prompt "
            "from the row"
        )
    messages = _messages(params["input"], f"{GYM_KEY}.input") if params["input"] != [] else []
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    sampling = {
        ours: params[theirs]
        for theirs, ours in _GYM_SAMPLING.items()
        if params.get(theirs) is not None
    }
    # Gym carries a per-rollout seed inside metadata.extra_body, as a JSON string.
    metadata = params.get("metadata")
    extra_body = metadata.get("extra_body") if isinstance(metadata, dict) else None
    if isinstance(extra_body, str) and "seed" not in sampling:
        try:
            seed = json.loads(extra_body).get("seed")
        except (ValueError, AttributeError, RecursionError):
            seed = None
        if isinstance(seed, int) and not isinstance(seed, bool):
            sampling["seed"] = seed
    carried = {k: v for k, v in row.items() if k != GYM_KEY}
    if sampling:
        sampling = _validated(sampling, GYM_KEY)
    prompt = Prompt(messages, sampling, carried, to_json(params))
    prompt.tools = chat_tools(params.get("tools"), f"{GYM_KEY}.tools")
    prompt.tool_choice = params.get("tool_choice")
    parallel = params.get("parallel_tool_calls")
    prompt.parallel_tool_calls = parallel if isinstance(parallel, bool) else None
    most = params.get("max_tool_calls")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 0):
        raise RowError(f"{GYM_KEY}.max_tool_calls must be a whole number >= 0, got {_short(most)}")
    prompt.max_tool_calls = most
    return prompt


def _merged_tools(own: list[dict[str, Any]], shared: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row's tools, then the dataset's that the row doesn't define itself."""
    names = {t["function"]["name"] for t in own}
    return own + [t for t in shared if t["function"]["name"] not in names]


def _row_sampling(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RowError(f"field {ROW_SAMPLING_KEY!r} must be an object of sampling parameters")
    return _validated(value, ROW_SAMPLING_KEY)


def _validated(values: dict[str, Any], where: str) -> dict[str, Any]:
    """A row's sampling values, checked as the config's are."""
    if not all(isinstance(k, str) for k in values):
        raise RowError(f"field {where} has a key that is not a string")
    try:
        return SamplingConfig(**values).model_dump(exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise RowError(f"field {where}.{key}: {first['msg']}") from None
