"""Any valid JSON schema a row's tool brings runs: type lists (newton_bench's
`["number", "null"]`), nesting, `$defs` and `$ref`s, anyOf/oneOf/allOf, consts and
patterns; an invalid one fails its row alone, once, saying why."""

from __future__ import annotations

import json

import pytest
from helpers import job_config, read_output, write_jsonl
from jsonschema import validators

from rollout_ray import run_job
from rollout_ray.config import load_config

pytestmark = pytest.mark.slow

POINT = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
SCHEMAS = {
    "type_list": {
        "type": "object",
        "properties": {"v": {"type": ["number", "null"]}},
        "required": ["v"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "p": {
                "type": "object",
                "properties": {
                    "q": {
                        "type": "array",
                        "maxItems": 2,
                        "items": {
                            "type": "object",
                            "properties": {"r": {"type": "integer"}},
                            "required": ["r"],
                        },
                    }
                },
                "required": ["q"],
            }
        },
        "required": ["p"],
    },
    "defs": {
        "type": "object",
        "$defs": {"pt": POINT},
        "properties": {"a": {"$ref": "#/$defs/pt"}},
        "required": ["a"],
    },
    "definitions": {
        "type": "object",
        "definitions": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "properties": {"a": {"$ref": "#/definitions/n"}},
        "required": ["a"],
    },
    "any_of": {
        "type": "object",
        "properties": {
            "u": {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "boolean"}]}
        },
        "required": ["u"],
    },
    "one_of_all_of": {
        "type": "object",
        "properties": {
            "u": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "boolean"}]},
            "w": {"allOf": [{"type": "integer"}, {"minimum": 1, "maximum": 5}]},
        },
        "required": ["u", "w"],
    },
    "const_pattern": {
        "type": "object",
        "properties": {
            "c": {"const": "x"},
            "s": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "m": {"type": "integer", "multipleOf": 3, "minimum": 0, "maximum": 9},
        },
        "required": ["c", "s", "m"],
    },
    "no_type": {"properties": {"z": {"type": "boolean"}}},
}


def schema_rows() -> list[dict]:
    return [
        {
            "responses_create_params": {
                "input": [{"role": "user", "content": f"call {name}"}],
                "tools": [{"type": "function", "name": f"f_{name}", "parameters": schema}],
            },
            "schema": name,
        }
        for name, schema in SCHEMAS.items()
    ]


def test_forced_calls_on_vllm_take_any_valid_schema(tiny_model, tmp_path):
    """Seen before: `$defs` refs failed once the schema sat in the call array ("Cannot
    find field $defs"), oneOf/allOf and a pattern with a length were refused by vLLM
    ("features not supported by xgrammar"), each retried on every run."""
    data = write_jsonl(tmp_path / "rows.jsonl", schema_rows())
    agent = {"kind": "none", "tool_choice": "required", "parallel_tool_calls": False}
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [{"path": str(data), "agent": agent}],
        sampling={"max_tokens": 64, "temperature": 1.0, "seed": 5},
        engine={"kind": "vllm", "max_model_len": 1024},
        executor="local",
    )
    assert run_job(config).status == "finished"
    assert read_output(tmp_path / "out", "failures") == []
    records = read_output(tmp_path / "out")
    assert len(records) == len(SCHEMAS)
    finished = 0
    for record in records:
        items = json.loads(record["episode"])
        calls = [i for i in items if i["type"] == "function_call"]
        if record["finish_reason"] == "length" and not calls:
            continue  # the random model wrote digits until max_tokens: a cut message
        (call,) = calls
        assert call["name"] == f"f_{record['schema']}"
        assert isinstance(json.loads(call["arguments"], strict=False), dict)
        finished += 1
    assert finished >= 4


def test_the_simulated_engine_calls_any_valid_schema(tmp_path):
    """Seen before: a type list made the simulated engine raise `TypeError: unhashable
    type: 'list'`, retried 3 times, with advice to raise max_attempts."""
    bad = {
        "responses_create_params": {
            "input": "call it",
            "tools": [{"name": "broken", "parameters": {"type": "object", "required": "n"}}],
        },
        "schema": "broken",
    }
    data = write_jsonl(tmp_path / "rows.jsonl", [*schema_rows(), bad])
    config = load_config(
        {
            "model": "simulated",
            "engine": {"kind": "simulated", "tool_turns": 1},
            "executor": "local",
            "output": str(tmp_path / "out"),
            "metrics_port": 0,
            "datasets": [{"path": str(data), "agent": {"kind": "none"}}],
        }
    )
    assert run_job(config).status == "finished"
    records = read_output(tmp_path / "out")
    assert len(records) == len(SCHEMAS)
    for record in records:
        (call,) = [i for i in json.loads(record["episode"]) if i["type"] == "function_call"]
        schema = SCHEMAS[record["schema"]]
        validators.validator_for(schema)(schema).validate(json.loads(call["arguments"]))
    (failure,) = read_output(tmp_path / "out", "failures")
    assert failure["terminal"] and failure["attempt"] == 1
    assert (
        "tools[0].parameters is not a valid JSON schema: 'n' is not of type 'array'"
        in (failure["error"])
    )
