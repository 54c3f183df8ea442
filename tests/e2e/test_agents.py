"""Agent episodes end to end: tools reach the model, calls run against a resources
server (ours with injected faults, and NeMo Gym's own), episodes land as records with
their token masks, and no rollout is lost whatever the tool server does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_server import AgentServer
from gym_servers import aggregate_with_gym, check_with_gym, gym_data
from helpers import job_config, read_output, write_jsonl

from rollout_ray import run_job
from rollout_ray.config import load_config
from rollout_ray.errors import ConfigError
from rollout_ray.exports import export

pytestmark = pytest.mark.slow

ADD = {
    "type": "function",
    "name": "add",
    "description": "Add n to the running total.",
    "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    "strict": True,
}
FAULTS = ["ok", "flaky", "slow", "error", "down", "verify_down", "verify_bad"]


def fault_rows(repeat: int = 1) -> list[dict]:
    return [
        {
            "responses_create_params": {
                "input": [{"role": "user", "content": f"add one to the total ({fault} {i})"}],
                "tools": [ADD],
            },
            "fault": fault,
            "expected_total": 1,
        }
        for i in range(repeat)
        for fault in FAULTS
    ]


def simulated_job(output: Path, data: Path, agent: dict, tools=None, **extra):
    return load_config(
        {
            "model": "simulated",
            "engine": {"kind": "simulated", "tool_turns": 1, "output_tokens": 6},
            "output": str(output),
            "metrics_port": 0,
            "datasets": [{"path": str(data), "num_repeats": 2, "agent": agent, "tools": tools}],
            **extra,
        }
    )


def test_tool_server_faults_lose_no_rollout(ray_session, tmp_path):
    server = AgentServer(slow_s=2.5).start()
    try:
        data = write_jsonl(tmp_path / "rows.jsonl", fault_rows(repeat=2))
        agent = {"kind": "gym", "url": server.url, "tool_timeout_s": 1.0, "tool_retries": 2}
        result = run_job(simulated_job(tmp_path / "out", data, agent, max_attempts=2))
    finally:
        server.stop()
    assert result.status == "finished"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    ok = read_output(tmp_path / "out")
    failures = read_output(tmp_path / "out", "failures")
    # Every rollout is a record or a failure with its stage: 0 lost.
    wanted = {(i, r) for i in range(len(rows)) for r in range(2)}
    landed = {(r["row_index"], r["rollout_index"]) for r in ok}
    failed = {(f["row_index"], f["rollout_index"]) for f in failures}
    assert landed | failed == wanted and not landed & failed
    by_fault = {
        fault: [r for r in ok if rows[r["row_index"]]["fault"] == fault] for fault in FAULTS
    }
    # Retried through 503s and a timeout: the episode went on and scored.
    for fault in ("ok", "flaky", "slow"):
        assert len(by_fault[fault]) == 4, fault
        assert all(r["reward"] == 1.0 and r["verifier"] == "gym" for r in by_fault[fault])
        assert all(r["steps"] == 2 and r["tool_calls"] == 1 for r in by_fault[fault])
    # A tool's own error is its output: the model saw it, the total stayed 0.
    assert all(r["tool_errors"] == 1 and r["reward"] == 0.0 for r in by_fault["error"])
    assert len(by_fault["error"]) == 4
    stages = {}
    for f in failures:
        stages.setdefault(rows[f["row_index"]]["fault"], set()).add(f["stage"])
    assert stages == {"down": {"tool"}, "verify_down": {"verify"}, "verify_bad": {"verify"}}
    # Down servers may pass on a later run; a /verify reply without a reward would be the
    # same reply again (the one /verify client's rule, as for the http verifier).
    terminal = {rows[f["row_index"]]["fault"] for f in failures if f["terminal"]}
    assert terminal == {"verify_bad"}
    assert any("/add" in f["error"] and "failed 3 times" in f["error"] for f in failures)
    # The session cookie went with every call: the server never saw one without it.
    assert server.no_cookie == 0
    # The episode, as Gym's /verify saw it, and the verifier's own fields.
    record = by_fault["ok"][0]
    items = json.loads(record["episode"])
    assert [i["type"] for i in items] == ["function_call", "function_call_output", "message"]
    assert json.loads(items[0]["arguments"]) == {"n": 1}
    assert json.loads(items[1]["output"]) == {"total": 1}
    assert json.loads(record["verifier_details"]) == {"total": 1, "outputs": 1}
    assert len(record["output_mask"]) == len(record["output_token_ids"]) > 0
    assert 0 in record["output_mask"] and 1 in record["output_mask"]


def test_rows_with_tools_need_an_agent(ray_session, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", fault_rows())
    config = load_config(
        {
            "model": "simulated",
            "engine": {"kind": "simulated"},
            "output": str(tmp_path / "out"),
            "metrics_port": 0,
            "datasets": [{"path": str(data)}],
        }
    )
    with pytest.raises(ConfigError, match=r"rows.jsonl line 1 offers tools \(add\).*no agent"):
        run_job(config)
    assert not (tmp_path / "out" / "_manifest" / "job.json").exists()  # nothing planned


def test_every_dataset_with_tools_and_no_agent_is_named_in_one_refusal(tmp_path):
    """Seen before: one dataset refused a run (114 Gym datasets took 21 reruns)."""
    tools = write_jsonl(tmp_path / "tools.jsonl", fault_rows())
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "no tools here"}])
    names = ["a", "plain", "b", "c"]
    datasets = [{"name": name, "path": str(plain if name == "plain" else tools)} for name in names]
    datasets[3]["agent"] = {"kind": "none"}  # c has an agent: fine
    datasets.append({"name": "d", "path": str(tools)})
    config = load_config(
        {
            "model": "simulated",
            "engine": {"kind": "simulated"},
            "executor": "local",
            "output": str(tmp_path / "out"),
            "metrics_port": 0,
            "datasets": datasets,
        }
    )
    with pytest.raises(ConfigError) as refused:
        run_job(config)
    message = str(refused.value)
    assert message.startswith("3 datasets offer tools and have no agent")
    for index, name in ((0, "a"), (2, "b"), (4, "d")):
        assert f"(datasets.{index}) dataset '{name}': {tools} line 1 offers tools (add)" in message
        assert f"datasets.{index}.agent='{{kind: gym, url: URL}}'" in message
    assert "'plain'" not in message and "'c'" not in message
    assert not (tmp_path / "out" / "_manifest" / "job.json").exists()  # nothing planned


def test_python_tools_and_recorded_calls(ray_session, tmp_path):
    rows = [{"prompt": f"what is {i} + 2?", "expected_answer": str(i + 2)} for i in range(4)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    python = {"kind": "python", "tools": "agent_tools:TOOLS"}
    result = run_job(simulated_job(tmp_path / "py", data, python))
    assert result.status == "finished"
    ok = read_output(tmp_path / "py")
    assert len(ok) == 8
    for record in ok:
        items = json.loads(record["episode"])
        call, output = items[0], items[1]
        # The first tool, its schema made from type hints, called and run in Python.
        assert call["name"] == "add_numbers" and json.loads(call["arguments"]) == {"a": 1, "b": 1}
        assert output["output"] == "2"
        tools = json.loads(record["episode_tools"])
        assert tools[0]["function"]["parameters"]["properties"] == {
            "a": {"type": "integer"},
            "b": {"type": "integer"},
        }
    # kind none: the dataset's tools reach the model, its calls are recorded, nothing
    # runs, and the episode is one turn.
    none = run_job(simulated_job(tmp_path / "none", data, {"kind": "none"}, tools=[ADD]))
    assert none.status == "finished"
    recorded = read_output(tmp_path / "none")
    assert len(recorded) == 8
    assert all(r["steps"] == 1 and r["tool_calls"] == 0 for r in recorded)
    for record in recorded:
        items = json.loads(record["episode"])
        assert [i["type"] for i in items] == ["function_call"]


def test_tiny_model_episodes_on_a_real_gym_server(ray_session, tmp_path, tiny_model, gym_server):
    """Mechanics on the real vLLM engine: structured outputs make the random model call
    tools (tool_choice required), the real Gym server keeps each episode's state in its
    session cookie, and the token record is what the model saw and wrote."""
    server = gym_server("example_session_state_mgmt")
    rows = [json.loads(line) for line in gym_data(server.name).read_text().splitlines()][:4]
    for row in rows:  # a random model writes digits forever unless the schema bounds them
        count = row["responses_create_params"]["tools"][0]["parameters"]["properties"]["count"]
        count.update(minimum=1, maximum=9)
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    agent = {
        "kind": "gym",
        "url": server.url,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tool_calls": 2,
    }
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [{"path": str(data), "num_repeats": 2, "agent": agent}],
        sampling={"max_tokens": 96, "temperature": 1.0, "logprobs": True, "return_token_ids": True},
        engine={"kind": "vllm", "max_model_len": 1024},
    )
    assert run_job(config).status == "finished"
    ok = read_output(tmp_path / "out")
    failures = read_output(tmp_path / "out", "failures")
    assert len(ok) == 8, [f["error"] for f in failures]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for record in ok:
        items = json.loads(record["episode"])
        kinds = [i["type"] for i in items]
        # Two calls (the budget), each answered by the server, then a turn without tools.
        assert kinds.count("function_call") == 2 and kinds.count("function_call_output") == 2
        assert record["tool_calls"] == 2 and record["steps"] == 3
        assert record["reward"] in (0.0, 1.0)
        mask, ids = record["output_mask"], record["output_token_ids"]
        logprobs = record["output_logprobs"]
        assert len(mask) == len(ids) == len(logprobs)
        assert sum(mask) == record["output_tokens"]
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0)
        assert all(lp <= 0.0 for lp in logprobs)
        # The tool outputs are in the token record, on masked-out positions.
        observed = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        for item in items:
            if item["type"] == "function_call_output":
                assert item["output"] in observed
    # Exports: RL with the loss mask, SFT in TRL's tool-calling format, Gym's records.
    export("rl", str(tmp_path / "out"), str(tmp_path / "rl.parquet"))
    import pyarrow.parquet as pq

    rl = pq.read_table(tmp_path / "rl.parquet").to_pylist()
    assert rl and all(len(r["response_mask"]) == len(r["response_token_ids"]) for r in rl)
    export("sft", str(tmp_path / "out"), str(tmp_path / "sft.jsonl"), format="prompt-completion")
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    turns = sft[0]["completion"]
    assert [m["role"] for m in turns][:2] == ["assistant", "tool"]
    assert turns[0]["tool_calls"][0]["function"]["name"] in (
        "increment_counter",
        "get_counter_value",
    )
    assert json.loads(sft[0]["tools"])[0]["function"]["name"] == "increment_counter"
    export("gym", str(tmp_path / "out"), str(tmp_path / "gym.jsonl"))
    check_with_gym(tmp_path / "gym.jsonl", len(ok))
    # `gym eval aggregate` (Gym's own code, the real server's /aggregate_metrics): the
    # records carry their agent_ref, so every one counts. Seen before: none did, and it
    # aggregated nothing.
    found = aggregate_with_gym(tmp_path / "gym.jsonl", server.url)
    assert found["asked"] == ["rows"]
    (agent,) = found["metrics"]
    assert agent["agent_ref"] == {"name": "rows"}
    rewards = [r["reward"] for r in ok]
    assert agent["agent_metrics"]["mean/reward"] == pytest.approx(sum(rewards) / len(rewards))
    assert len(agent["group_level_metrics"]) == len({r["task_id"] for r in ok})
