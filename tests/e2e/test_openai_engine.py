"""The `openai` engine against real servers on loopback: vLLM's own OpenAI server, our
Ray Serve app, and a server that injects faults and counts what it receives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from fault_server import FaultServer
from helpers import job_config, read_output, wait_until, write_jsonl

from rollout_ray import load_config, run_job
from rollout_ray.errors import RolloutRayError
from rollout_ray.output.schema import ROLLOUT_FIELDS

pytestmark = pytest.mark.slow

SECRET = "sk-test-DO-NOT-LEAK-4f9a2c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model):
    """`python -m vllm.entrypoints.openai.api_server` on the tiny model."""
    from rollout_ray.config import VLLMEngineConfig
    from rollout_ray.engines.vllm_placement import cpu_environment

    port = free_port()
    env = {
        **os.environ,
        **cpu_environment(VLLMEngineConfig(), os.cpu_count() or 1),
        "VLLM_LOGGING_LEVEL": "ERROR",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            tiny_model,
            "--served-model-name",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "512",
            "--enforce-eager",
            "--no-enable-chunked-prefill",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"

    def ready() -> bool:
        assert proc.poll() is None, "vLLM's server exited"
        try:
            return httpx.get(f"{url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 300, "vLLM's OpenAI server", every=1)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def openai_job(url: str, output: Path, data: Path, **engine):
    return load_config(
        {
            "model": "tiny",
            "engine": {"kind": "openai", "base_url": url, "api_key_env": None, **engine},
            "datasets": [{"name": "api", "path": str(data), "num_repeats": 2}],
            "sampling": {"max_tokens": 8, "temperature": 0.9, "seed": 5},
            "output": str(output),
        }
    )


def test_vllm_server_same_record_as_in_process(ray_session, vllm_server, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"the sea {i}"} for i in range(6)])
    run_job(openai_job(vllm_server, tmp_path / "a", data))
    run_job(openai_job(vllm_server, tmp_path / "b", data))
    first = {(r["task_id"], r["rollout_index"]): r for r in read_output(tmp_path / "a")}
    second = {(r["task_id"], r["rollout_index"]): r for r in read_output(tmp_path / "b")}
    assert len(first) == 12
    # Seeded rollouts reproduce through the server; repeats differ.
    assert {k: r["response_text"] for k, r in first.items()} == {
        k: r["response_text"] for k, r in second.items()
    }
    assert (
        first[("in:0", 0)]["sampling"]["seed"] == 5 and first[("in:0", 1)]["sampling"]["seed"] == 6
    )
    for record in first.values():
        assert record["engine"] == "openai" and record["model"] == "tiny"
        assert 0 < record["output_tokens"] <= 8 and record["prompt_tokens"] > 0
    # Token ids and logprobs (for RL buffers) come back through the server, one per
    # output token.
    rl = openai_job(vllm_server, tmp_path / "rl", data).model_copy(deep=True)
    rl.sampling.logprobs = rl.sampling.return_token_ids = True
    run_job(rl)
    for record in read_output(tmp_path / "rl"):
        assert len(record["output_token_ids"]) == record["output_tokens"] > 0
        assert len(record["output_logprobs"]) == record["output_tokens"]
        assert all(lp <= 0 for lp in record["output_logprobs"])
        assert len(record["prompt_token_ids"]) == record["prompt_tokens"]
    # A NeMo Gym row goes through the Responses API, with the row's own sampling; one
    # whose input holds an earlier call goes as the API's own items.
    earlier = [
        {"role": "user", "content": "find it"},
        {"type": "function_call", "call_id": "c1", "name": "find", "arguments": '{"x": 1}'},
        {"type": "function_call_output", "call_id": "c1", "output": "found"},
        {"role": "user", "content": "and now?"},
    ]
    gym = write_jsonl(
        tmp_path / "gym.jsonl",
        [
            {"responses_create_params": {"input": "the sky", "max_output_tokens": 3, "seed": 1}},
            {"responses_create_params": {"input": earlier, "max_output_tokens": 3, "seed": 1}},
        ],
    )
    run_job(openai_job(vllm_server, tmp_path / "gym", gym))
    assert read_output(tmp_path / "gym", "failures") == []
    gym_records = read_output(tmp_path / "gym")
    assert len(gym_records) == 4
    for record in gym_records:
        assert 0 < record["output_tokens"] <= 3 and record["prompt_tokens"] > 0
        assert record["response_text"] and record["finish_reason"] in ("length", "stop")
    # The same record schema as the in-process engine writes.
    run_job(job_config(tiny_model, tmp_path / "local", [{"name": "api", "path": str(data)}]))
    ours = pq.read_schema(next(Path(tmp_path, "local", "data").rglob("*.parquet")))
    theirs = pq.read_schema(next(Path(tmp_path, "a", "data").rglob("*.parquet")))
    for field in ROLLOUT_FIELDS:
        assert ours.field(field.name).type == theirs.field(field.name).type == field.type


def test_agent_episodes_through_an_openai_endpoint(ray_session, tmp_path):
    """The openai engine runs the same episodes: chat completions with `tools` and
    `tool_choice`, the endpoint's tool calls run on a resources server, the results sent
    back as `tool` messages (arguments as JSON text, as the API wants them)."""
    from agent_server import AgentServer

    tool = {
        "type": "function",
        "name": "add",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
    }
    rows = [
        {
            "responses_create_params": {"input": f"ok add to the total {i}", "tools": [tool]},
            "expected_total": 2,
        }
        for i in range(4)
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    endpoint = FaultServer(api_key=SECRET).start()
    tools = AgentServer().start()
    agent = {"kind": "gym", "url": tools.url, "tool_choice": "required"}
    try:
        config = load_config(
            {
                "model": "m",
                "engine": {
                    "kind": "openai",
                    "base_url": endpoint.url,
                    "api_key_env": "FAULT_KEY",
                    "allow_insecure_http": True,
                },
                "datasets": [{"path": str(data), "num_repeats": 2, "agent": agent}],
                "output": str(tmp_path / "out"),
                "metrics_port": 0,
            }
        )
        os.environ["FAULT_KEY"] = SECRET
        assert run_job(config).status == "finished"
    finally:
        tools.stop()
        os.environ.pop("FAULT_KEY", None)
    records = read_output(tmp_path / "out")
    assert len(records) == 8, read_output(tmp_path / "out", "failures")
    for record in records:
        assert record["engine"] == "openai" and record["tool_calls"] == 2
        assert record["steps"] == 3 and record["response_text"].startswith("echo:")
        items = json.loads(record["episode"])
        outputs = [json.loads(i["output"]) for i in items if i["type"] == "function_call_output"]
        assert [o["total"] for o in outputs] == [1, 2]  # the calls reached the server, in order
        assert record["reward"] == 1.0
    assert endpoint.tool_requests and set(endpoint.tool_requests) == {"required"}
    assert tools.no_cookie == 0


def test_faults_limits_and_secrets(tmp_path):
    # `slow` answers only after a minute: the client's 5 s timeout is what ends it.
    server = FaultServer(api_key=SECRET, slow_s=60.0).start()
    kinds = (
        ["ok"] * 40
        + ["throttle"] * 5
        + ["error"] * 5
        + ["slow"] * 3
        + ["drop"] * 3
        + ["dead"] * 2
        + ["leak"] * 2
    )
    data = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": f"{kind} request {i}"} for i, kind in enumerate(kinds)]
    )
    output = tmp_path / "out"
    config = {
        "model": "fault-model",
        "engine": {
            "kind": "openai",
            "base_url": server.url,
            "api_key_env": "FAULT_API_KEY",
            "max_concurrent_requests": 4,
            "requests_per_minute": 60,
            "timeout_s": 5.0,
            "max_retries": 2,
            "backoff_base_s": 0.2,
            "backoff_max_s": 2.0,
        },
        "datasets": [{"name": "faults", "path": str(data)}],
        "sampling": {"max_tokens": 16},
        "output": str(output),
    }
    (tmp_path / "job.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(tmp_path / "job.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "FAULT_API_KEY": SECRET, "ROLLOUT_RAY_DASHBOARD": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unclosed" not in done.stderr  # the endpoint's client closed (aiohttp's warning)
    records = read_output(output)
    failures = read_output(output, "failures")
    ok_rows = {r["row_index"] for r in records}
    failed_rows = {f["row_index"]: f for f in failures}
    # Every row ends exactly once: committed, or in failures after its attempts.
    assert Counter(r["row_index"] for r in records).most_common(1)[0][1] == 1
    assert ok_rows.isdisjoint(failed_rows) and ok_rows | set(failed_rows) == set(range(60))
    assert {kinds[i] for i in failed_rows} == {"dead", "leak"}
    for i, failure in failed_rows.items():
        prompt = f"{kinds[i]} request {i}"
        if kinds[i] == "dead":
            # 3 requests (max_retries 2) in each of the max_attempts=3 rounds of the run.
            assert server.attempts[prompt] == 3 * 3 and failure["terminal"] is False
        else:
            assert server.attempts[prompt] == 1 and failure["terminal"] is True
            assert "[redacted]" in failure["error"]
    for record in records:  # the faulty ones recovered through retries
        assert record["response_text"] == f"echo: {kinds[record['row_index']]} request " + str(
            record["row_index"]
        )
    # Each throttled request's retry waited as its Retry-After asked, as the engine says.
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["run"]["retries"]["retry_after"] == kinds.count("throttle")
    # Limits, counted by the server (the window 5 s short of a minute: clocks and
    # network may shift a request start by a little, never by seconds).
    assert server.max_in_flight <= 4
    assert server.max_in_window(55.0) <= 60
    assert len(server.starts) > 60  # so the per-minute budget really bound
    assert server.bad_auth == 0
    # The key appears in no output file, manifest, log line or error text.
    texts = [done.stdout, done.stderr]
    for path in output.rglob("*"):
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        elif path.is_file():
            texts.append(path.read_text(errors="replace"))
    session = Path("/tmp/ray/session_latest/logs")
    for path in session.rglob("*") if session.exists() else []:
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    assert not any(SECRET in text for text in texts)


def test_ray_serve_app_shared_by_jobs(ray_session, tiny_model, tmp_path, monkeypatch):
    import openai
    from openai import OpenAI
    from ray import serve

    from rollout_ray.serve import deploy as serving

    serve.shutdown()  # another test's Serve proxy may listen on another port
    port = free_port()
    monkeypatch.setenv("SERVE_TEST_KEY", "sk-serve-test-1234")
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"a poem {i}"} for i in range(4)])
    config = load_config(
        {
            "model": tiny_model,
            "serve": {
                "served_model_name": "tiny",
                "max_model_len": 512,
                "port": port,
                "api_key_env": "SERVE_TEST_KEY",
                "max_messages": 4,
                "max_n": 2,
                "max_request_bytes": 4096,
            },
            "engine": {
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "api_key_env": "SERVE_TEST_KEY",
            },
            "datasets": [{"name": "served", "path": str(data), "num_repeats": 2}],
            "sampling": {"max_tokens": 8, "seed": 3},
            "output": str(tmp_path / "out1"),
        }
    )
    # Open to the network without a key: refused unless asked for (--insecure).
    exposed = config.model_copy(
        update={"serve": config.serve.model_copy(update={"host": "0.0.0.0", "api_key_env": None})}
    )
    with pytest.raises(RolloutRayError, match="no key"):
        serving.deploy(exposed)
    url = serving.deploy(config)
    try:
        # Without the key, or with another, nothing is served.
        for key in ("wrong-key", "unused"):
            with pytest.raises(openai.AuthenticationError):
                OpenAI(base_url=url, api_key=key).models.list()
        # The official client talks to it, with the key.
        client = OpenAI(base_url=url, api_key="sk-serve-test-1234")
        # Limits: body size (413), messages and n (400), each named.
        with pytest.raises(openai.APIStatusError, match="over 4096 bytes") as too_big:
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x" * 5000}], max_tokens=2
            )
        assert too_big.value.status_code == 413
        with pytest.raises(openai.BadRequestError, match="over 4 items"):
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}] * 5, max_tokens=2
            )
        with pytest.raises(openai.BadRequestError, match="n must be between 1 and 2"):
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2, n=3
            )
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
        assert [m.id for m in client.models.list().data] == ["tiny"]
        # Logprobs, one per output token, in the client's own types.
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5, logprobs=True
        )
        steps = reply.choices[0].logprobs.content
        assert len(steps) == reply.usage.completion_tokens and all(t.logprob <= 0 for t in steps)
        # The Responses API, as NeMo Gym rows use it.
        answer = client.responses.create(
            model="tiny", input="hello", instructions="be brief", max_output_tokens=3
        )
        assert answer.output_text and 0 < answer.usage.output_tokens <= 3
        # What it does not serve is refused by name, never silently ignored.
        with pytest.raises(openai.BadRequestError, match="stream"):
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}], stream=True
            )
        with pytest.raises(openai.NotFoundError, match="'other' is not served here"):
            client.chat.completions.create(
                model="other", messages=[{"role": "user", "content": "x"}], max_tokens=2
            )
        with pytest.raises(openai.BadRequestError, match="tools"):  # chat only takes them
            client.responses.create(
                model="tiny",
                input="x",
                tools=[{"type": "function", "name": "f", "parameters": {}, "strict": False}],
            )
        # Two jobs share it: the model serves both without loading again.
        run_job(config)
        run_job(config.model_copy(update={"output": str(tmp_path / "out2")}))
        one = {
            (r["task_id"], r["rollout_index"]): r["response_text"]
            for r in read_output(tmp_path / "out1")
        }
        two = {
            (r["task_id"], r["rollout_index"]): r["response_text"]
            for r in read_output(tmp_path / "out2")
        }
        assert len(one) == 8 and one == two  # seeded: the same answers
        # The key reaches neither the records nor any file under the outputs.
        files = [f for f in tmp_path.glob("out*/**/*") if f.is_file()]
        assert files and not [f for f in files if b"sk-serve-test" in f.read_bytes()]
        assert "sk-serve-test" not in json.dumps(read_output(tmp_path / "out1"), default=str)
        # One Serve proxy per cluster: another port is refused, not silently ignored.
        elsewhere = config.model_copy(
            update={"serve": config.serve.model_copy(update={"port": free_port()})}
        )
        with pytest.raises(RolloutRayError, match=f"HTTP proxy on 127.0.0.1:{port}"):
            serving.deploy(elsewhere)
    finally:
        serving.stop(config)


def test_ray_serve_llm_app(ray_session, tiny_model, tmp_path):
    """`serve.server: ray-serve-llm` deploys Ray's own app, which jobs use the same way."""
    from ray import serve

    from rollout_ray.serve import deploy as serving

    serve.shutdown()
    port = free_port()
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"a song {i}"} for i in range(3)])
    config = load_config(
        {
            "model": tiny_model,
            "serve": {
                "server": "ray-serve-llm",
                "served_model_name": "tiny",
                "max_model_len": 512,
                "port": port,
            },
            "engine": {
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "api_key_env": None,
            },
            "datasets": [{"name": "served", "path": str(data)}],
            "sampling": {"max_tokens": 6, "seed": 3},
            "output": str(tmp_path / "out"),
        }
    )
    serving.deploy(config)
    try:
        run_job(config)
        records = read_output(tmp_path / "out")
        assert len(records) == 3 and all(0 < r["output_tokens"] <= 6 for r in records)
    finally:
        serving.stop(config)
    # No app left: Serve itself is gone too (its controller and proxy poll all the time).
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    with pytest.raises(ValueError):
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


def test_token_and_request_budgets_bind():
    """The limiter lets a minute's budget start at once and holds the rest back: what
    tokens_per_minute and requests_per_minute promise, counted, not timed."""
    import asyncio

    from rollout_ray.engines.rate_limits import RateLimiter

    async def started(limiter: RateLimiter, costs: list[int]) -> int:
        tasks = [asyncio.create_task(limiter.acquire(c)) for c in costs]
        for _ in range(20):  # let every acquire that can go through, go through
            await asyncio.sleep(0)
        done = sum(t.done() for t in tasks)
        for task in tasks:
            task.cancel()
        return done

    assert asyncio.run(started(RateLimiter(None, 100), [30] * 5)) == 3  # 90 of 100 tokens
    assert asyncio.run(started(RateLimiter(None, 100), [500, 30])) == 1  # clamped, alone
    assert asyncio.run(started(RateLimiter(4, None), [1] * 6)) == 4
    assert asyncio.run(started(RateLimiter(None, None), [10**9] * 3)) == 3  # no budget


def test_no_api_key_in_clear_text_to_another_machine(monkeypatch):
    from rollout_ray.config import OpenAIEngineConfig
    from rollout_ray.engines.base import FatalEngineError
    from rollout_ray.engines.openai_engine import OpenAIEngine

    monkeypatch.setenv("KEY_FOR_TEST", "sk-not-in-clear")

    def engine(url: str, **extra) -> OpenAIEngine:
        config = OpenAIEngineConfig(base_url=url, api_key_env="KEY_FOR_TEST", **extra)
        return OpenAIEngine("m", config)

    with pytest.raises(FatalEngineError, match="unencrypted"):
        engine("http://10.1.2.3:8000/v1")
    engine("https://10.1.2.3/v1")  # encrypted
    engine("http://127.0.0.1:8000/v1")  # this machine
    engine("http://10.1.2.3:8000/v1", allow_insecure_http=True)  # asked for
    monkeypatch.delenv("KEY_FOR_TEST")
    engine("http://10.1.2.3:8000/v1")  # no key to leak
