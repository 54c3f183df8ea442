"""Tools in every shape a row brings, tool_choice, forced-call schemas, Python tools,
and episodes as chat messages."""

from __future__ import annotations

import json

import pytest

from rollout_ray.agents.environments import load_functions
from rollout_ray.chat.forced import ForcedCalls, forced_schema, read_forced
from rollout_ray.chat.responses import chat_messages
from rollout_ray.chat.tools import (
    chat_tools,
    function_tool,
    normalise_choice,
    responses_tools,
)
from rollout_ray.config import DatasetConfig
from rollout_ray.errors import JobFault, RowError
from rollout_ray.inputs.prompts import build_prompt

GYM_TOOL = {"type": "function", "name": "add", "parameters": {"type": "object"}, "strict": True}
CHAT_TOOL = {"type": "function", "function": {"name": "look", "description": "Look."}}


def test_both_api_shapes_become_one():
    tools = chat_tools([GYM_TOOL, CHAT_TOOL], "tools")
    assert [t["function"]["name"] for t in tools] == ["add", "look"]
    assert tools[1]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert responses_tools(tools)[0] == {
        "type": "function",
        "name": "add",
        "description": None,
        "parameters": {"type": "object"},
        "strict": True,
    }


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ("add", "must be a list"),
        ([{"type": "web_search"}], r"tools\[0\] is a 'web_search' tool"),
        ([{"type": "function", "parameters": {}}], r"tools\[0\] has no function name"),
        ([GYM_TOOL, GYM_TOOL], "names a function twice"),
        ([{"name": "x", "parameters": "[]"}], "must be a JSON schema object"),
        (
            [{"name": "x", "parameters": {"type": "object", "properties": {"n": {"type": 3}}}}],
            r"tools\[0\].parameters is not a valid JSON schema: 3 is not valid",
        ),
    ],
)
def test_bad_tools_name_the_place(tools, message):
    with pytest.raises(RowError, match=message):
        chat_tools(tools, "tools")


def test_tool_choice_in_every_shape():
    tools = chat_tools([GYM_TOOL], "t")
    assert normalise_choice(None, tools, "c") == "auto"
    assert normalise_choice("required", tools, "c") == "required"
    assert normalise_choice({"type": "none"}, tools, "c") == "none"
    assert normalise_choice({"type": "function", "name": "add"}, tools, "c") == "add"
    assert normalise_choice({"type": "function", "function": {"name": "add"}}, tools, "c") == "add"
    with pytest.raises(RowError, match="names function 'sub'"):
        normalise_choice("sub", tools, "c")


def test_forced_calls_schema_and_parsing():
    tools = chat_tools([GYM_TOOL, CHAT_TOOL], "t")
    schema = forced_schema("required", tools, parallel=False)
    assert schema["maxItems"] == 1 and len(schema["items"]["anyOf"]) == 2
    assert forced_schema("required", tools, parallel=True, most=3)["maxItems"] == 3
    assert "maxItems" not in forced_schema("required", tools, parallel=True)
    assert forced_schema("auto", tools, True) is None
    assert forced_schema("add", tools, True) == {"type": "object"}
    # Arguments as the model wrote them, not re-serialised.
    text = (
        '[{"name":"add","parameters":{"n":1.016179567849667298}},{"name":"look","parameters":{}}]'
    )
    assert read_forced(text, "required") == ForcedCalls(
        [("add", '{"n":1.016179567849667298}'), ("look", "{}")], False
    )
    # Cut by max_tokens inside the array: the finished calls are kept.
    cut = '[{"name":"add","parameters":{"n":1}},{"name":"look","param'
    assert read_forced(cut, "required") == ForcedCalls([("add", '{"n":1}')], True)
    assert read_forced('[{"name":"add","param', "required") == ForcedCalls([], True)
    assert read_forced('{"n": 2}', "add") == ForcedCalls([("add", '{"n": 2}')], False)
    assert read_forced('{"n": 2', "add") == ForcedCalls([], True)


def test_forced_schemas_keep_their_definitions_in_reach():
    """A tool's `$ref`s point into its own `$defs`: inside the call array they must
    still resolve (xgrammar refused `#/$defs/pt` once the schema was nested)."""
    point = {"type": "object", "properties": {"x": {"type": "number"}}}
    tool = {
        "name": "move",
        "parameters": {
            "type": "object",
            "$defs": {"pt": point},
            "properties": {"to": {"$ref": "#/$defs/pt"}},
        },
    }
    schema = forced_schema("required", chat_tools([tool], "t"), parallel=True)
    parameters = schema["items"]["anyOf"][0]["properties"]["parameters"]
    assert parameters["properties"]["to"] == {"$ref": "#/$defs/move.$defs.pt"}
    assert schema["$defs"] == {"move.$defs.pt": point}


def add_numbers(a: int, b: float = 1.0, *, mode: str | None = None) -> float:
    """Add two numbers.

    Not part of the description."""
    return a + b


def test_function_tools_from_type_hints():
    tool = function_tool(add_numbers)["function"]
    assert tool["name"] == "add_numbers" and tool["description"] == "Add two numbers."
    assert tool["parameters"] == {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "number"},
            "mode": {"type": "string"},
        },
        "required": ["a"],
    }


def test_python_tools_load_or_stop_the_job():
    assert set(load_functions("agent_tools:TOOLS")) == {"add_numbers", "lookup"}
    assert set(load_functions("agent_tools:add_numbers")) == {"add_numbers"}
    with pytest.raises(JobFault, match="can't be imported"):
        load_functions("no_such_module:TOOLS")
    with pytest.raises(JobFault, match="holds no functions"):
        load_functions("agent_tools:__doc__")


def test_rows_bring_their_tools():
    dataset = DatasetConfig(path="x.jsonl", tools=[CHAT_TOOL, GYM_TOOL])
    gym = {
        "responses_create_params": {
            "input": "hi",
            "tools": [GYM_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_tool_calls": 3,
        }
    }
    prompt = build_prompt(gym, dataset)
    # The row's own tools first, then the dataset's it doesn't define.
    assert [t["function"]["name"] for t in prompt.tools] == ["add", "look"]
    assert (prompt.tool_choice, prompt.parallel_tool_calls, prompt.max_tool_calls) == (
        "required",
        False,
        3,
    )
    chat = {"messages": [{"role": "user", "content": "hi"}], "tools": [CHAT_TOOL], "id": 1}
    prompt = build_prompt(chat, DatasetConfig(path="x.jsonl"))
    assert [t["function"]["name"] for t in prompt.tools] == ["look"]
    assert prompt.carried == {"id": 1}  # tools are the prompt's, not carried data
    bad = {"responses_create_params": {"input": "hi", "max_tool_calls": -1}}
    with pytest.raises(RowError, match="max_tool_calls must be a whole number"):
        build_prompt(bad, DatasetConfig(path="x.jsonl"))


def test_an_episode_as_trl_messages():
    items = [
        {"type": "message", "content": [{"type": "output_text", "text": "Let me add."}]},
        {"type": "function_call", "call_id": "c1", "name": "add", "arguments": '{"n": 1}'},
        {"type": "function_call", "call_id": "c2", "name": "add", "arguments": "{bad"},
        {"type": "function_call_output", "call_id": "c1", "output": "1"},
        {"type": "function_call_output", "call_id": "c2", "output": "error"},
        {"type": "function_call", "call_id": "c3", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c3", "output": "seen"},
        {"type": "message", "content": [{"type": "output_text", "text": "It is 1."}]},
    ]
    messages = chat_messages(items)
    assert [m["role"] for m in messages] == [
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    first = messages[0]
    assert first["content"] == "Let me add."
    assert [c["function"]["arguments"] for c in first["tool_calls"]] == [{"n": 1}, "{bad"]
    assert messages[1] == {"role": "tool", "tool_call_id": "c1", "name": "add", "content": "1"}
    assert (
        messages[3]["content"] == "" and messages[3]["tool_calls"][0]["function"]["name"] == "look"
    )
    assert json.dumps(messages)  # plain JSON all the way down


def test_a_conversation_goes_back_to_responses_items_as_it_was():
    """The openai engine's Responses API path sends a row's earlier turns as the API's
    own items (it sent chat messages with tool_calls: vLLM's server takes them, the
    Responses API's definition does not)."""
    from rollout_ray.chat.responses import responses_input

    messages = [
        {"role": "user", "content": "Book it."},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "find", "arguments": {"x": 1}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "find", "content": "found"},
        {"role": "user", "content": "And now?"},
    ]
    items = responses_input(messages)
    assert [i.get("type", i.get("role")) for i in items] == [
        "user",
        "assistant",
        "function_call",
        "function_call_output",
        "user",
    ]
    assert items[2]["arguments"] == '{"x": 1}' and items[2]["call_id"] == "c1"
    assert chat_messages(items) == messages
