"""Tools as the model sees them: one shape from the many a row can bring.

Rows carry Responses-API function tools (`{"type": "function", "name", "parameters"}`,
NeMo Gym's shape) or chat-completions tools (`{"type": "function", "function": {...}}`);
chat templates and vLLM's tool parsers want the second, so everything is turned into
it here, once. `tool_choice` likewise: "auto", "required", "none" or one function.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

from rollout_ray.errors import RowError

#: A tool choice: "auto" | "required" | "none" | the name of one function.
ToolChoice = str


def chat_tools(tools: Any, where: str) -> list[dict[str, Any]]:
    """Function tools in chat-completions shape.

    Raises:
        RowError: a tool has no name, or is not a function tool; names the index.
    """
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RowError(f"{where} must be a list of tools, got {type(tools).__name__}")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise RowError(f"{where}[{i}] must be an object")
        kind = tool.get("type", "function")
        if kind != "function":
            raise RowError(f"{where}[{i}] is a {kind!r} tool; only function tools can be run here")
        spec = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise RowError(f"{where}[{i}] has no function name")
        parameters = spec.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise RowError(f"{where}[{i}].parameters must be a JSON schema object")
        if parameters:
            problem = schema_problem(json.dumps(parameters, sort_keys=True))
            if problem:
                raise RowError(f"{where}[{i}].parameters is not a valid JSON schema: {problem}")
        function: dict[str, Any] = {
            "name": name,
            "description": spec.get("description") or "",
            "parameters": parameters or {"type": "object", "properties": {}},
        }
        if spec.get("strict") is not None:
            function["strict"] = bool(spec["strict"])
        out.append({"type": "function", "function": function})
    names = [t["function"]["name"] for t in out]
    if len(set(names)) != len(names):
        raise RowError(f"{where} names a function twice: {sorted(names)}")
    return out


@functools.lru_cache(maxsize=1024)
def schema_problem(schema_json: str) -> str | None:
    """Why a tool's parameters are not a valid JSON schema (by its own draft's
    meta-schema), or None. Any valid one is taken: type lists, `$defs` and `$ref`s,
    anyOf/oneOf/allOf, nesting. Rows share a few schemas: checked once each."""
    from jsonschema import exceptions, validators

    schema = json.loads(schema_json)
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return exc.message[:300]
    return None


def responses_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat-completions tools back in the Responses API's flat shape (Gym's `tools`)."""
    return [
        {
            "type": "function",
            "name": t["function"]["name"],
            "description": t["function"].get("description") or None,
            "parameters": t["function"].get("parameters"),
            "strict": t["function"].get("strict", True),
        }
        for t in tools
    ]


def normalise_choice(choice: Any, tools: list[dict[str, Any]], where: str) -> ToolChoice:
    """`tool_choice` in any of its API shapes, as "auto" | "required" | "none" | a name.

    Raises:
        RowError: the choice names a function the tools don't have.
    """
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice in ("auto", "required", "none"):
            return choice
        name = choice
    elif isinstance(choice, dict):
        spec = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        name = spec.get("name")
        if choice.get("type") in ("auto", "required", "none") and not name:
            return str(choice["type"])
    else:
        raise RowError(f"{where} must be auto, required, none or a function")
    if not isinstance(name, str) or name not in {t["function"]["name"] for t in tools}:
        raise RowError(f"{where} names function {name!r}, which is not among the tools")
    return name


def hermes_system_text(tools: list[dict[str, Any]]) -> str:
    """Tools described in the Hermes / Qwen convention, for chat templates that ignore
    `tools` (the hermes parser reads the calls this asks for)."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


# ---------------------------------------------------------------------- Python tools


def function_tool(fn: Callable[..., Any]) -> dict[str, Any]:
    """A chat-completions tool for a Python function: parameters from its type hints,
    description from the first paragraph of its docstring."""
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required = []
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        properties[name] = _json_type(hints.get(name, Any))
        if param.default is inspect.Parameter.empty:
            required.append(name)
    doc = inspect.getdoc(fn) or ""
    return {
        "type": "function",
        "function": {
            "name": fn.__name__,
            "description": doc.split("\n\n")[0].strip(),
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(hint: Any) -> dict[str, Any]:
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin = get_origin(hint)
    if origin in (list, tuple, set):
        args = get_args(hint)
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin is dict or hint is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"enum": list(get_args(hint))}
    if origin in (Union, types.UnionType):
        options = [_json_type(a) for a in get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    return {}
