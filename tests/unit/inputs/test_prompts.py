"""Row shapes to chat messages, per-row sampling and carried fields."""

from __future__ import annotations

import json

import pytest

from rollout_ray.config import DatasetConfig
from rollout_ray.errors import RowError
from rollout_ray.inputs.prompts import build_prompt

DS = DatasetConfig(path="x.jsonl", system_prompt=None)


def test_prompt_shape_carries_other_fields():
    p = build_prompt({"prompt": "2+2?", "expected_answer": "4", "id": 7}, DS)
    assert p.messages == [{"role": "user", "content": "2+2?"}]
    assert p.carried == {"expected_answer": "4", "id": 7}


def test_messages_shape_with_content_parts_and_system_prompt():
    ds = DatasetConfig(path="x.jsonl", system_prompt="Be brief.")
    row = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}],
            }
        ]
    }
    p = build_prompt(row, ds)
    # Text parts join with a newline, as vLLM's chat parsing (and so `vllm serve`) joins
    # them; joined with nothing, the model read "part onetwo".
    assert p.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "part one\ntwo"},
    ]


def test_gym_row_instructions_sampling_and_seed():
    row = {
        "responses_create_params": {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Q?"}],
                }
            ],
            "instructions": "Answer in \\boxed{}.",
            "temperature": 0.3,
            "max_output_tokens": 12,
            "metadata": {"extra_body": json.dumps({"seed": 5})},
        },
        "expected_answer": "B",
    }
    p = build_prompt(row, DS)
    assert p.messages == [
        {"role": "system", "content": "Answer in \\boxed{}."},
        {"role": "user", "content": "Q?"},
    ]
    assert p.sampling == {"temperature": 0.3, "max_tokens": 12, "seed": 5}
    assert p.carried == {"expected_answer": "B"}
    assert json.loads(p.responses_create_params)["max_output_tokens"] == 12


def test_messages_stored_as_json_text_are_the_list_they_hold():
    """A Parquet column of JSON strings (a common export) became one user message
    holding the whole JSON."""
    chat = [{"role": "system", "content": "Be terse"}, {"role": "user", "content": "hi"}]
    assert build_prompt({"messages": json.dumps(chat)}, DS).messages == chat
    assert build_prompt({"messages": "[not json"}, DS).messages == [
        {"role": "user", "content": "[not json"}
    ]


def test_gym_input_as_string():
    p = build_prompt({"responses_create_params": {"input": "hello"}}, DS)
    assert p.messages == [{"role": "user", "content": "hello"}]


def test_row_sampling_field_and_template():
    ds = DatasetConfig(path="x.jsonl", prompt_template="Q: {question}\nA:")
    p = build_prompt({"question": "why?", "sampling": {"temperature": 0.1}}, ds)
    assert p.messages[0]["content"] == "Q: why?\nA:"
    assert p.sampling == {"temperature": 0.1}
    assert p.carried == {"question": "why?"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "no shape"}, "none of the shapes"),
        ({"prompt": ""}, "'prompt' must be a non-empty string"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role is 'wizard'"),
        ({"responses_create_params": {"temperature": 1}}, "input is missing"),
        ({"prompt": "x", "sampling": {"temperature": -2}}, "sampling.temperature"),
        # Each refused by the engine on every try, and retried, before they were checked:
        ({"prompt": "x", "sampling": {"temperature": float("inf")}}, "finite number"),
        ({"prompt": "x", "sampling": {"stop": [""]}}, "stop holds an empty string"),
        ({"prompt": "x", "sampling": {"min_tokens": 9, "max_tokens": 3}}, "min_tokens (9)"),
    ],
)
def test_bad_rows_say_which_field(row, message):
    with pytest.raises(RowError) as err:
        build_prompt(row, DS)
    assert message in str(err.value)


def test_image_parts_of_both_apis_become_one_shape():
    chat = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    responses = {"type": "input_image", "image_url": "s3://bucket/cat.png", "detail": "low"}
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, chat]}]}
    assert build_prompt(row, DS).messages[0]["content"] == [{"type": "text", "text": "a"}, chat]
    gym = {"responses_create_params": {"input": [{"role": "user", "content": [responses]}]}}
    assert build_prompt(gym, DS).messages[0]["content"] == [
        {"type": "image_url", "image_url": {"url": "s3://bucket/cat.png", "detail": "low"}}
    ]
    for part, message in [
        ({"type": "input_image", "file_id": "file-1"}, "uploaded file"),
        ({"type": "input_image", "image_url": "ftp://host/x.png"}, "is not a data:"),
        ({"type": "image_url", "image_url": {}}, "without a URL"),
    ]:
        with pytest.raises(RowError, match=message):
            build_prompt({"messages": [{"role": "user", "content": [part]}]}, DS)


#: A Gym row whose input carries an earlier turn: reasoning, a message, a call and its
#: output (single_step_tool_use_with_argument_comparison's shape).
HISTORY = {
    "responses_create_params": {
        "input": [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Book it.", "type": "message"},
            {
                "id": "rs_1",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "Look."}],
            },
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "find",
                "arguments": '{"x": 1.50}',
                "id": None,
                "status": None,
            },
            {"type": "function_call_output", "call_id": "c1", "output": '{"found": true}'},
            {"role": "user", "content": "And now?"},
        ],
        "tools": [{"type": "function", "name": "find", "parameters": {"type": "object"}}],
    }
}


def test_gym_history_items_are_the_conversation_they_are():
    """Seen before: rows whose input holds function_call / function_call_output items
    were refused ("must be an object with 'role' and 'content'"), agent or not."""
    p = build_prompt(HISTORY, DS)
    assert p.messages == [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Book it."},
        {
            "role": "assistant",
            "content": "<think>Look.</think>Checking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "find", "arguments": {"x": 1.5}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "find", "content": '{"found": true}'},
        {"role": "user", "content": "And now?"},
    ]


def test_chat_rows_keep_their_calls():
    row = {
        "messages": [
            {"role": "user", "content": "add 1"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c9", "type": "function", "function": {"name": "add", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c9", "content": "1"},
        ]
    }
    p = build_prompt(row, DS)
    assert p.messages[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": {}}
    assert p.messages[2] == {"role": "tool", "tool_call_id": "c9", "name": "add", "content": "1"}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"type": "function_call", "name": "f", "arguments": "{}"}, "needs 'call_id'"),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}, "JSON text"),
        ({"type": "function_call_output", "call_id": "c", "output": 3}, "output must be text"),
        ({"type": "web_search_call", "id": "w"}, "is a 'web_search_call' item"),
    ],
)
def test_bad_history_items_say_which(item, message):
    row = {"responses_create_params": {"input": [{"role": "user", "content": "x"}, item]}}
    with pytest.raises(RowError, match=message) as err:
        build_prompt(row, DS)
    assert "responses_create_params.input[1]" in str(err.value)


def test_an_empty_input_says_what_it_needs():
    row = {"responses_create_params": {"input": []}, "agent_ref": {"name": "aviary_agent"}}
    with pytest.raises(RowError, match="nothing to ask the model") as err:
        build_prompt(row, DS)
    assert "aviary_agent" in str(err.value)
    with_instructions = {"responses_create_params": {"input": [], "instructions": "Go."}}
    assert build_prompt(with_instructions, DS).messages == [{"role": "system", "content": "Go."}]


@pytest.mark.slow  # needs NeMo Gym's venv (make test installs it; make flake doesn't)
def test_every_public_gym_example_row_is_taken_for_its_shape():
    """The example rows of every resources server in the nemo-gym wheel (gym venv): none
    refused for its shape. Left: rows with images (issue 25's other half) and rows
    whose input is empty (an agent of Gym's builds their prompt)."""
    import subprocess
    from pathlib import Path

    from gym_servers import gym_python

    root = subprocess.run(
        [gym_python(), "-c", "import resources_servers; print(resources_servers.__path__[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    refused, left, history, total = [], 0, 0, 0
    for path in sorted(Path(root).glob("*/data/example.jsonl")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            total += 1
            items = row.get("responses_create_params", {}).get("input")
            images = "input_image" in line or '"image_url"' in line
            empty = items == []
            history += isinstance(items, list) and any(
                isinstance(i, dict) and i.get("type") in ("function_call", "reasoning")
                for i in items
            )
            try:
                build_prompt(row, DS)
            except RowError as exc:
                if images or empty:
                    left += 1
                else:
                    refused.append(f"{path.parent.parent.name}:{n}: {exc}")
    assert total > 400 and history >= 5
    assert refused == []
    assert left <= 30
