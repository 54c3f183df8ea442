"""Gym export: committed rollouts as NeMo Gym rollout records (what `ng_collect_rollouts`
writes), so Gym's tooling and trainers that read Gym output take ours as they are.

Each line is the input row (its own fields, `responses_create_params`), the episode as
a Responses-API `response` (output items and usage), `reward` with the verifier's
other fields beside it, and `_ng_task_index` / `_ng_rollout_index` (the row's index in
its input file, and the rollout's). Single-turn rollouts get a one-message response.
"""

from __future__ import annotations

import json
from typing import Any

from rollout_ray import storage
from rollout_ray.agents.responses import message_item, response_object
from rollout_ray.agents.tools import responses_tools
from rollout_ray.exports.writer import ExportReport, Outputs, check_datasets, shards
from rollout_ray.output.schema import decode_rows, record_from_row

TASK_INDEX, ROLLOUT_INDEX = "_ng_task_index", "_ng_rollout_index"


def export_gym(output: Outputs, dest: str, *, datasets: list[str] | None = None) -> ExportReport:
    """Write one Gym rollout record per committed rollout to a .jsonl file."""
    if not dest.endswith(".jsonl"):
        raise ValueError(f"the gym export writes JSONL: name the file .jsonl, got {dest!r}")
    datasets = check_datasets(output, datasets)
    rows = tasks = 0
    lines: list[str] = []
    for table in shards(output, datasets, None):
        decoded = decode_rows(table)
        tasks += len({(r["dataset"], r["task_id"]) for r in decoded})
        for row in decoded:
            lines.append(json.dumps(gym_record(row), ensure_ascii=False, default=str))
            rows += 1
    if lines:  # nothing to write leaves the destination as it was (exports.empty)
        storage.write_bytes_atomic(dest, ("\n".join(lines) + "\n").encode())
    return ExportReport(kind="gym", dest=dest, rows_written=rows, tasks_seen=tasks)


def gym_record(row: dict[str, Any]) -> dict[str, Any]:
    record = record_from_row(row)
    params = _params(record)
    items = (
        json.loads(record["episode"])
        if record.get("episode")
        else [message_item(record.get("response_text") or "")]
    )
    tools = json.loads(record["episode_tools"]) if record.get("episode_tools") else []
    created = record.get("created_at")
    response = response_object(
        model=record.get("model"),
        items=items,
        incomplete=record.get("finish_reason") == "length",
        input_tokens=record.get("prompt_tokens") or 0,
        output_tokens=record.get("output_tokens") or 0,
        sampling=record.get("sampling") or {},
        tools=params.get("tools") or responses_tools(tools),
        tool_choice=params.get("tool_choice", "auto"),
        parallel_tool_calls=params.get("parallel_tool_calls", True),
        created_at=float(created.timestamp()) if created is not None else 0.0,
    )
    out: dict[str, Any] = {**record["input"], "responses_create_params": params}
    details = record.get("verifier_details")
    if details:
        try:
            parsed = json.loads(details)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            out.update({k: v for k, v in parsed.items() if k not in out})
    out.update(
        response=response,
        reward=record.get("reward"),
        **{TASK_INDEX: record.get("row_index"), ROLLOUT_INDEX: record.get("rollout_index")},
    )
    return out


def _params(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("responses_create_params"):
        return json.loads(record["responses_create_params"])
    params: dict[str, Any] = {"input": record.get("prompt_messages") or []}
    if record.get("episode_tools"):
        params["tools"] = responses_tools(json.loads(record["episode_tools"]))
    return params
