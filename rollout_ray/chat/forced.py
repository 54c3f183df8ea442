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

_DECODER = json.JSONDecoder(strict=False)  # what a grammar lets through: raw control chars
_SPACE = " \t\n\r"
#: Where a JSON schema keeps the definitions its `$ref`s point at.
_DEFINITIONS = ("$defs", "definitions")


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
        return enforceable(_object_schema(by_name[choice].get("parameters")))
    definitions: dict[str, Any] = {}
    calls = []
    for name, spec in by_name.items():
        parameters = _hoisted(_object_schema(spec.get("parameters")), name, definitions)
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
    if definitions:
        schema["$defs"] = definitions
    return enforceable(schema)


#: String formats xgrammar enforces (vLLM's list); others are left to the tool server.
_FORMATS = {
    "email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname",
    "uuid", "uri", "uri-reference", "uri-template", "json-pointer",
    "relative-json-pointer",
}  # fmt: skip
#: Keywords xgrammar can't enforce (vLLM refuses a schema that has them).
_UNENFORCED = ("multipleOf", "uniqueItems", "contains", "minContains", "maxContains")


def enforceable(schema: Any) -> Any:
    """A schema vLLM's xgrammar takes, for any valid JSON schema a tool brings: what it
    can't enforce (multipleOf, uniqueItems, a pattern with a length, allOf of several
    parts, propertyNames, ...) is dropped or merged. The grammar then lets through a
    little more than the schema (or, for patternProperties, a little less): the tool
    server checks its arguments as it does any model's, and the model sees its error."""
    if isinstance(schema, list):
        return [enforceable(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    node = {k: v for k, v in schema.items() if k not in _UNENFORCED}
    parts = node.get("allOf")
    if isinstance(parts, list) and len(parts) > 1:
        del node["allOf"]
        for part in parts:
            for key, value in part.items() if isinstance(part, dict) else ():
                if key == "properties" and isinstance(value, dict):
                    node["properties"] = {**(node.get("properties") or {}), **value}
                elif key == "required" and isinstance(value, list):
                    node["required"] = sorted({*(node.get("required") or []), *value})
                else:
                    node.setdefault(key, value)
    if isinstance(node.get("format"), str) and node["format"] not in _FORMATS:
        del node["format"]
    if ("pattern" in node or "format" in node) and ("minLength" in node or "maxLength" in node):
        node.pop("minLength", None)
        node.pop("maxLength", None)
    node.pop("propertyNames", None)
    if node.get("unevaluatedProperties", True) is not True:
        del node["unevaluatedProperties"]
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and ("properties" in node or len(patterns) > 1):
        del node["patternProperties"]
    return {k: enforceable(v) if k not in ("enum", "const") else v for k, v in node.items()}


def _object_schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    return parameters if parameters else {"type": "object", "properties": {}}


def _hoisted(schema: dict[str, Any], name: str, definitions: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters placed inside the call array: their `$defs` (or
    `definitions`) move to the array schema's root, renamed per tool, and their local
    `$ref`s follow, so that `#/$defs/x` still finds what the tool meant."""
    local = {w: schema[w] for w in _DEFINITIONS if isinstance(schema.get(w), dict)}
    if not local:
        return schema
    renamed = {
        f"#/{where}/{_pointer(key)}": f"#/$defs/{_pointer(f'{name}.{where}.{key}')}"
        for where, defs in local.items()
        for key in defs
    }
    for where, defs in local.items():
        for key, value in defs.items():
            definitions[f"{name}.{where}.{key}"] = _with_refs(value, renamed)
    return _with_refs({k: v for k, v in schema.items() if k not in local}, renamed)


def _pointer(key: str) -> str:
    """A key as one JSON-pointer segment."""
    return key.replace("~", "~0").replace("/", "~1")


def _with_refs(value: Any, renamed: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _with_refs(v, renamed) for k, v in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str):
            for old, new in renamed.items():
                if ref == old or ref.startswith(old + "/"):
                    out["$ref"] = new + ref[len(old) :]
                    break
        return out
    if isinstance(value, list):
        return [_with_refs(v, renamed) for v in value]
    return value


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
