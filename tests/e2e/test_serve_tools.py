"""`rollout-ray serve` with tools: NeMo Gym's own simple_agent and vllm_model servers
(started with ng_run, from the Gym venv) drive rollout-ray's Serve app through a Gym
environment with tools (example_session_state_mgmt), and the official client sees the
served model's calls as it would see vLLM's."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from gym_servers import gym_data
from gym_stack import GymStack

from rollout_ray.config import load_config

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gym_simple_agent_runs_tools_through_the_serve_app(ray_session, tiny_model, tmp_path):
    import openai
    from openai import OpenAI
    from ray import serve

    from rollout_ray.serve import deploy as serving

    serve.shutdown()  # another test's Serve proxy may listen on another port
    port = free_port()
    config = load_config(
        {
            "model": tiny_model,
            "serve": {"served_model_name": "tiny", "max_model_len": 1024, "port": port},
            "engine": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"},
            "datasets": [{"path": "sample:counter"}],
            "output": str(tmp_path / "unused"),
        }
    )
    url = serving.deploy(config)
    stack = None
    try:
        client = OpenAI(base_url=url, api_key="unused")
        add = {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
                    "required": ["n"],
                },
            },
        }
        # tool_choice required: the random model's turn is a call, with arguments its
        # schema allows, in vLLM's reply shape.
        reply = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "add something"}],
            tools=[add],
            tool_choice="required",
            parallel_tool_calls=False,  # one call: an array of them may run to max_tokens
            # The grammar can't bound an integer's digits, so the random model writes a
            # few before closing (about 11 on average): room for 100 of them.
            max_tokens=128,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.function.name == "add" and 1 <= json.loads(call.function.arguments)["n"] <= 9
        # A choice naming no offered tool is a 400 that says so.
        with pytest.raises(openai.BadRequestError, match="not among the tools"):
            client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "x"}],
                tools=[add],
                tool_choice={"type": "function", "function": {"name": "sub"}},
            )

        # Gym's own agent and model server, pointed at the Serve app.
        stack = GymStack(tmp_path, "example_session_state_mgmt", url, "tiny", max_steps=3)
        rows = [
            json.loads(line)
            for line in gym_data("example_session_state_mgmt").read_text().splitlines()
        ][:3]
        results = []
        for row in rows:
            params = row["responses_create_params"]
            params["tool_choice"] = "required"
            params["parallel_tool_calls"] = False
            params["max_output_tokens"] = 128
            count = params["tools"][0]["parameters"]["properties"]["count"]
            count.update(minimum=1, maximum=9)  # a random model writes digits forever else
            answer = httpx.post(f"{stack.agent_url}/run", json=row, timeout=300)
            assert answer.status_code == 200, answer.text[-2000:]
            results.append(answer.json())
    finally:
        if stack is not None:
            stack.stop()
        serving.stop(config)
    made = 0
    for result in results:
        items = result["response"]["output"]
        calls = [i for i in items if i["type"] == "function_call"]
        outputs = [i for i in items if i["type"] == "function_call_output"]
        # simple_agent ran its steps (3, or fewer when the random model's digits spent
        # the episode's max_output_tokens, which Gym counts over every step): each a
        # forced call that its resources server answered (state kept in the cookie).
        # A step cut by that budget ends the episode before its call runs (simple_agent
        # breaks on incomplete_details first): then one call, the last, has no output.
        assert len(outputs) <= len(calls) <= 3, items
        assert len(calls) - len(outputs) <= 1, items
        if len(calls) < 3 or len(outputs) < len(calls):
            assert result["response"]["incomplete_details"]["reason"] == "max_output_tokens"
        ran = {o["call_id"] for o in outputs}
        assert ran == {c["call_id"] for c in calls[: len(outputs)]}, items
        made += len(outputs)
        assert {c["name"] for c in calls} <= {"increment_counter", "get_counter_value"}
        for output in outputs:
            assert "count" in json.loads(output["output"]) or "success" in output["output"]
        assert result["reward"] in (0.0, 1.0)
    assert made >= 1  # the served model's calls reached Gym's resources server
