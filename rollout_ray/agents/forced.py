"""Forced tool calls (tool_choice `required` or a function's name): the grammar that makes
any model call, and the calls read back exactly as the model wrote them.

`required` is a JSON array of `{"name", "parameters"}` objects (as vLLM's server builds
it), at most as many as the turn may make; a name is that function's arguments object.
Reading them back keeps each call's arguments as the text the model wrote (the tokens
say `1.016179567849667298`, so does the record: `json.dumps(json.loads(...))` would say
`1.0161795678496673`), and a turn cut by max_tokens inside the array keeps the calls it
finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


@dataclass
class ForcedCalls:
    """The calls of a forced turn: (name, arguments as written), and whether the model
    started another one that its token budget cut short."""

    calls: list[tuple[str, str]]
    unfinished: bool


def forced_schema(
    choice: str, tools: list[dict[str, Any]], parallel: bool, most: int | None = None
) -> dict[str, Any] | None:
    """The JSON schema a `required` or named choice is enforced with; None for auto or
    none.

    Args:
        choice: "auto" | "required" | "none" | a function's name.
        tools: the episode's tools (chat-completions shape).
        parallel: whether a turn may make several calls.
        most: the calls the episode has left (max_tool_calls), if it has a budget: the
            array is never longer, so every call the model writes is one that runs.
    """
    if choice in ("auto", "none"):
        return None
    by_name = {t["function"]["name"]: t["function"] for t in tools}
    if choice != "required":
        return _object_schema(by_name[choice].get("parameters"))
    calls = []
    for name, spec in by_name.items():
        parameters = _object_schema(spec.get("parameters"))
        calls.append(
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": [name]},
                    "parameters": parameters,
                },
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
    limit = 1 if not parallel else most
    if limit is not None:
        schema["maxItems"] = max(1, limit)
    return schema


def _object_schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    return parameters if parameters else {"type": "object", "properties": {}}


def read_forced(text: str, choice: str) -> ForcedCalls:
    """The calls a forced turn wrote, arguments as their exact text."""
    if choice != "required":
        arguments = text.strip(_SPACE)
        try:
            _DECODER.decode(arguments)
        except ValueError:  # cut by max_tokens: no complete call
            return ForcedCalls([], bool(arguments))
        return ForcedCalls([(choice, arguments)], False)
    at = _skip(text, 0)
    if at >= len(text) or text[at] != "[":
        return ForcedCalls([], bool(text.strip(_SPACE)))
    calls, at = [], at + 1
    while True:
        at = _skip(text, at, ",")
        if at >= len(text):
            return ForcedCalls(calls, False)  # cut right after a call
        if text[at] == "]":
            return ForcedCalls(calls, False)
        found = _object_fields(text, at)
        if found is None:
            return ForcedCalls(calls, True)
        fields, at = found
        name = fields.get("name")
        try:
            name_value = json.loads(name) if name else None
        except ValueError:
            name_value = None
        if isinstance(name_value, str):
            calls.append((name_value, fields.get("parameters") or "{}"))


def _skip(text: str, at: int, also: str = "") -> int:
    while at < len(text) and (text[at] in _SPACE or text[at] in also):
        at += 1
    return at


def _object_fields(text: str, at: int) -> tuple[dict[str, str], int] | None:
    """The text of each value of the JSON object at `at`, and where it ends; None when
    the object is cut short (or is no object)."""
    if text[at] != "{":
        return None
    fields: dict[str, str] = {}
    at += 1
    try:
        while True:
            at = _skip(text, at, ",")
            if text[at] == "}":
                return fields, at + 1
            key, at = _DECODER.raw_decode(text, at)
            at = _skip(text, at, ":")
            _, end = _DECODER.raw_decode(text, at)
            fields[str(key)] = text[at:end]
            at = end
    except (ValueError, IndexError):
        return None
