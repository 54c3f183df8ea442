"""Gym export: committed rollouts as NeMo Gym rollout records (what `ng_collect_rollouts`
writes), so Gym's tooling and trainers that read Gym output take ours as they are.

Each line is the input row (its own fields, `responses_create_params`), the episode as
a Responses-API `response` (the very one its /verify got: output items, usage summed
over turns, the tool_choice sent), `reward` with the verifier's other fields beside it,
`_ng_task_index` / `_ng_rollout_index` (the row's index in its input file, and the
rollout's) and `agent_ref` (the row's, else `{"name": DATASET}`: name a dataset after
its Gym agent for `gym eval aggregate`). Single-turn rollouts get a one-message
response.
"""

from __future__ import annotations

import json
from typing import Any

from rollout_ray import storage
from rollout_ray.chat.responses import recorded_response
from rollout_ray.chat.tools import responses_tools
from rollout_ray.exports.writer import ExportReport, Outputs, check_datasets, shards
from rollout_ray.output.schema import decode_rows, record_from_row

TASK_INDEX, ROLLOUT_INDEX, AGENT_REF = "_ng_task_index", "_ng_rollout_index", "agent_ref"


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
    tools = json.loads(record["episode_tools"]) if record.get("episode_tools") else []
    response = recorded_response(
        record,
        tools=params.get("tools") or responses_tools(tools),
        tool_choice=params.get("tool_choice", "auto"),
        parallel_tool_calls=params.get("parallel_tool_calls", True),
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
    # Gym's ng_collect_rollouts writes every record's agent; `gym eval aggregate` skips
    # records without one. A row's own agent_ref stays; else the dataset's name.
    out.setdefault(AGENT_REF, {"name": record["dataset"]})
    return out


def _params(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("responses_create_params"):
        return json.loads(record["responses_create_params"])
    params: dict[str, Any] = {"input": record.get("prompt_messages") or []}
    if record.get("episode_tools"):
        params["tools"] = responses_tools(json.loads(record["episode_tools"]))
    return params
