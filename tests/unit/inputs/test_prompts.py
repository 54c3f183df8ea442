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
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            }
        ]
    }
    p = build_prompt(row, ds)
    assert p.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
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
