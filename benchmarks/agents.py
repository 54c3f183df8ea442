"""Agent episodes: is the engine kept full while episodes wait on their tools?

Sides on the same prompts, model (SmolLM2 unless --model-path), engine settings
and tool server (a Gym-protocol server in this process whose tools answer after
--tool-delay seconds, 0.1 by default):

  agent        rollout-ray, agent kind gym: tool_choice required, no parallel calls,
               2 tool calls then an answer (3 turns), --max-tokens per turn
  single-turn  rollout-ray, the same prompts (the tools described in a system message,
               as the agent side's first turn has them) in one turn, forced to the
               agent's mean episode length (min_tokens = max_tokens): the same tokens
  gym-way      what NeMo Gym does: `vllm serve` (same engine settings, hermes parser)
               and an async HTTP agent loop (seed_session, chat completions with tools,
               POST /{tool}, /verify) with every episode in flight at once, and the
               same system message (SmolLM2's template drops `tools`, so the server
               would not show them to the model)
  gym-way-same-calls
               the gym way with forced turns held to rollout-ray's call grammar (the
               request's structured_outputs; calls read from the text): the same calls
               per episode as the agent side, which `vllm serve`'s own `required` does
               not give SmolLM2 (its arguments come back as non-objects)
  agent-128-blocks
               the agent side on vLLM-CPU's own 128-token KV blocks instead of
               rollout-ray's 32 (CPU_BLOCK_SIZE): a turn's prompt is the previous
               turn's plus a few tokens, and prefix caching reuses whole blocks only,
               so with 128 each turn recomputes up to 127 tokens it has seen
  single-turn-128-blocks
               the single-turn side on 128-token blocks
  agent-core-process
               the agent side with vLLM's engine core in AsyncLLM's own process
               (`engine.engine_core: process`, as `vllm serve` runs it) instead of
               stepped in the job's process (the CPU default)
  (--only agent agent-128-blocks single-turn single-turn-128-blocks ...)

rollout-ray sides are fresh processes timed end to end, start-up included, and warm
(the job's own phases without the engine's start, from its metrics.json); the gym-way
side is timed warm (its server already up, as Gym users run it), and its server's
start-up is printed too. Sides alternate (agent, single, gym, gym, single, agent, ...).

    python benchmarks/agents.py              # 128 episodes, 2 rounds
    python benchmarks/agents.py --quick      # 32 episodes, 1 round: a smoke run

Targets (issues 15, 25): agent >= 0.9x single-turn; agent >= 1.5x gym-way, warm, the
same calls per episode on both sides (gym-way-same-calls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from compare import Comparison, schedule
from throughput import cpu_env

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from episode_check import check_output

from rollout_ray.chat.forced import forced_schema, read_forced
from rollout_ray.chat.tools import chat_tools, hermes_system_text
from rollout_ray.engines.vllm_engine import CPU_BLOCK_SIZE

ADD = {
    "type": "function",
    "name": "add",
    "description": "Add n to the running total.",
    "parameters": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 99}},
        "required": ["n"],
        "additionalProperties": False,
    },
}
TOTAL = {
    "type": "function",
    "name": "get_total",
    "description": "Read the running total.",
    "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
}
MAX_TOOL_CALLS = 2
#: The *-128-blocks sides' KV block size: vLLM-CPU's own default.
VLLM_CPU_BLOCKS = 128
SYSTEM = {"role": "system", "content": hermes_system_text(chat_tools([ADD, TOTAL], "tools"))}


def rows(n: int) -> list[dict]:
    return [
        {
            "responses_create_params": {
                "input": [
                    {
                        "role": "user",
                        "content": f"Add {i % 9 + 1} and then {i % 7 + 2} to the "
                        "total with the tools, then say the total.",
                    }
                ],
                "tools": [ADD, TOTAL],
            },
            "expected_total": i % 9 + 1 + i % 7 + 2,
        }
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- tool server


class ToolServer:
    """A Gym-protocol resources server whose tools take `delay_s` (aiohttp, own thread)."""

    def __init__(self, delay_s: float):
        from aiohttp import web

        self.delay_s = delay_s
        self.sessions: dict[str, int] = {}
        self.calls = 0
        self.verify_bodies: list[dict] = []  # what /verify received, for the episode check
        app = web.Application()
        app.router.add_post("/seed_session", self._seed)
        app.router.add_post("/add", self._add)
        app.router.add_post("/get_total", self._total)
        app.router.add_post("/verify", self._verify)
        self.port = free_port()
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _seed(self, request):
        from aiohttp import web

        sid = uuid.uuid4().hex
        self.sessions[sid] = 0
        reply = web.json_response({})
        reply.set_cookie("sid", sid)
        return reply

    async def _add(self, request):
        from aiohttp import web

        await asyncio.sleep(self.delay_s)
        self.calls += 1
        sid = request.cookies.get("sid", "")
        if sid not in self.sessions:
            return web.json_response({"detail": "no session"}, status=400)
        try:
            self.sessions[sid] += int((await request.json()).get("n") or 0)
        except (TypeError, ValueError, AttributeError):  # as a Gym server: a 422, no crash
            return web.json_response({"detail": "n must be an integer"}, status=422)
        return web.json_response({"total": self.sessions[sid]})

    async def _total(self, request):
        from aiohttp import web

        await asyncio.sleep(self.delay_s)
        self.calls += 1
        return web.json_response({"total": self.sessions.get(request.cookies.get("sid", ""))})

    async def _verify(self, request):
        from aiohttp import web

        body = await request.json()
        self.verify_bodies.append(body)
        total = self.sessions.get(request.cookies.get("sid", ""))
        return web.json_response({**body, "reward": float(total == body.get("expected_total"))})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- sides


def run_rollout_ray(
    args,
    work: Path,
    data: Path,
    tools: ToolServer | None,
    tokens: int,
    blocks: int | None = None,
    core: str = "auto",
) -> dict:
    output = work / f"out-{time.time_ns()}"
    dataset = {"path": str(data), "name": "bench"}
    sampling = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    if tools:
        tools.verify_bodies.clear()
        dataset["agent"] = {
            "kind": "gym",
            "url": tools.url,
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_tool_calls": MAX_TOOL_CALLS,
            "max_steps": MAX_TOOL_CALLS + 1,
        }
    else:  # the same work as one long turn
        sampling.update(max_tokens=tokens, min_tokens=tokens)
    config = {
        "model": args.model_path,
        "datasets": [dataset],
        "sampling": sampling,
        "engine": {
            "kind": "vllm",
            "max_model_len": args.max_model_len,
            "engine_core": core,
            **block_size(blocks or args.block_size),
        },
        "output": str(output),
        "metrics_port": 0,
    }
    path = work / f"job-{time.time_ns()}.json"
    path.write_text(json.dumps(config))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **cpu_env()},
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"rollout-ray failed:\n{done.stderr[-4000:]}")
    import pyarrow.dataset as pads

    table = pads.dataset(output / "data", format="parquet").to_table()
    out = table.column("output_tokens").to_pylist()
    # Warm: the job's own phases, without the engine's start (the gym-way side is timed
    # with its server already up).
    phases = json.loads((output / "metrics.json").read_text())["phases"]
    warm = phases["generate"] - phases["engine_start_s"]
    result = {"output_tokens": sum(out), "episodes": table.num_rows, "wall_s": wall, "warm_s": warm}
    if tools:
        # Issue 25: every episode's tokens, items and /verify body agree, call for call
        # (tests/episode_check.py, written apart from the package's own parsing).
        checked, problems = check_output(output, tools.verify_bodies)
        wrong = {problem.split(": ", 1)[0] for problem in problems}  # "task#rollout: ..."
        result["episodes_checked"], result["episodes_disagreeing"] = checked, len(wrong)
        for problem in problems[:5]:
            print(f"    episode check: {problem}", flush=True)
        result["tool_calls"] = sum(table.column("tool_calls").to_pylist())
        # Tokens the engine prefills that the single-turn side never sees: what came back
        # (tool outputs in the template's tool turns: mask 0), per episode. On CPU a
        # prefilled token costs nearly what a decoded one does (docs/benchmarks.md).
        masks = table.column("output_mask").to_pylist()
        result["observed_per_episode"] = sum(len(m) - sum(m) for m in masks) / len(masks)
        result["mean_reward"] = sum(table.column("reward").to_pylist()) / max(1, table.num_rows)
    return result


def block_size(size: int | None) -> dict:
    """The engine block's `engine_kwargs` for a KV block size (vLLM on CPU: 128 unset)."""
    return {"engine_kwargs": {"block_size": size}} if size else {}


def start_vllm_server(args) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    started = time.monotonic()
    structured = json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            args.model_path,
            "--served-model-name",
            "bench",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            str(args.max_model_len),
            "--enforce-eager",
            "--no-enable-chunked-prefill",
            "--max-num-seqs",
            "256",
            "--max-num-batched-tokens",
            "4096",
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
            "--structured-outputs-config",
            structured,
            "--disable-log-stats",
            "--block-size",  # rollout-ray's on CPU, unless --block-size says otherwise
            str(args.block_size or CPU_BLOCK_SIZE),
        ],
        env={**os.environ, **cpu_env(), "VLLM_ENABLE_V1_MULTIPROCESSING": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    import urllib.request

    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"vllm serve failed:\n{proc.stderr.read()[-4000:]}") from None
            time.sleep(0.5)
    return proc, url, time.monotonic() - started


async def gym_way_episodes(
    vllm_url: str, tool_url: str, data: list[dict], args, same_calls: bool = False
) -> dict:
    """The Gym way: one HTTP agent loop per row, all in flight at once, on one aiohttp
    session as NeMo Gym's servers make their requests (nemo_gym.server_utils).

    `same_calls`: forced turns are held to rollout-ray's call grammar (the JSON array of
    `{"name", "parameters"}` that vLLM's server builds for `required`, at most one call)
    through the request's `structured_outputs`, and the loop reads the calls from the
    text: `vllm serve`'s own `required` gives SmolLM2 calls whose arguments are not
    objects, so its episodes make fewer calls than the agent side's (docs/agents.md).
    """
    import aiohttp

    retried = {"n": 0}
    connector = aiohttp.TCPConnector(limit=1024)
    timeout = aiohttp.ClientTimeout(total=600)
    jar = aiohttp.DummyCookieJar()  # each episode's session cookie sent by hand
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=jar)
    async with session as client:

        async def post(url: str, body: dict, cookie: str = "") -> tuple[int, str, dict]:
            headers = {"Cookie": cookie} if cookie else {}
            async with client.post(url, json=body, headers=headers) as reply:
                text = await reply.text()
                return reply.status, text, {k: m.value for k, m in reply.cookies.items()}

        async def episode(row: dict) -> tuple[int, int]:
            _, _, seeded = await post(f"{tool_url}/seed_session", row)
            cookie = "; ".join(f"{k}={v}" for k, v in seeded.items())
            params = row["responses_create_params"]
            messages = [SYSTEM, *params["input"]]
            tools = [
                {
                    "type": "function",
                    "function": {k: t[k] for k in ("name", "description", "parameters")},
                }
                for t in params["tools"]
            ]
            tokens = calls = 0
            for _ in range(MAX_TOOL_CALLS + 1):
                choice = "required" if calls < MAX_TOOL_CALLS else "none"
                request = {
                    "model": "bench",
                    "messages": messages,
                    "tools": tools,
                    "tool_choice": choice,
                    "parallel_tool_calls": False,
                    "max_tokens": args.max_tokens,
                    "temperature": args.temperature,
                }
                held = same_calls and choice == "required"  # to rollout-ray's call grammar
                if held:
                    schema = forced_schema("required", tools, False, MAX_TOOL_CALLS - calls)
                    request.update(tool_choice="none", structured_outputs={"json": schema})
                for attempt in range(4):  # a dropped connection is retried, and counted
                    try:
                        status, text, _ = await post(f"{vllm_url}/v1/chat/completions", request)
                        break
                    except aiohttp.ClientConnectionError:
                        retried["n"] += 1
                        if attempt == 3:
                            raise
                        await asyncio.sleep(1)
                if status >= 400:
                    raise RuntimeError(f"vllm serve answered {status}: {text[:300]}")
                body = json.loads(text)
                tokens += body["usage"]["completion_tokens"]
                message = body["choices"][0]["message"]
                found = message.get("tool_calls") or []
                if held:
                    written = read_forced(message.get("content") or "", choice).calls
                    found = [
                        {
                            "id": f"call_{uuid.uuid4().hex[:12]}",
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }
                        for name, arguments in written
                    ]
                    message = {**message, "content": ""} if found else message
                messages.append(
                    {
                        "role": "assistant",
                        "content": message.get("content") or "",
                        "tool_calls": found,
                    }
                    if found
                    else {"role": "assistant", "content": message.get("content") or ""}
                )
                if not found or body["choices"][0]["finish_reason"] == "length":
                    break
                for call in found[: MAX_TOOL_CALLS - calls]:
                    calls += 1
                    try:
                        arguments = json.loads(call["function"]["arguments"])
                    except ValueError:
                        arguments = None
                    if isinstance(arguments, dict):  # as Gym's agent: else an error output
                        _, out, _ = await post(
                            f"{tool_url}/{call['function']['name']}", arguments, cookie
                        )
                    else:
                        out = json.dumps({"error": "Invalid tool call arguments"})
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": out})
            await post(f"{tool_url}/verify", {**row, "response": {}}, cookie)
            return tokens, calls

        results = await asyncio.gather(*(episode(r) for r in data))
    return {
        "output_tokens": sum(t for t, _ in results),
        "tool_calls": sum(c for _, c in results),
        "episodes": len(results),
        "retried_requests": retried["n"],
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64, help="per turn")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--tool-delay", type=float, default=0.1)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--model-path", default=None)
    parser.add_argument(
        "--block-size", type=int, default=None, help="KV cache block size, every side"
    )
    parser.add_argument("--only", nargs="*", help="these sides only")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.episodes, args.rounds = 32, 1
    if args.model_path is None:
        from rollout_ray.engines.embedded_model import resolve_model

        args.model_path = resolve_model("smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="agents-bench-"))
    data = rows(args.episodes)
    path = work / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    tools = ToolServer(args.tool_delay)
    print(
        f"{args.episodes} episodes ({MAX_TOOL_CALLS} tool calls, then an answer), "
        f"{args.max_tokens} tokens per turn, tools answer after {args.tool_delay:g} s, "
        f"{args.model_path}",
        flush=True,
    )
    vllm, vllm_url, vllm_start = None, "", 0.0
    if not args.only or {"gym-way", "gym-way-same-calls"} & set(args.only):
        vllm, vllm_url, vllm_start = start_vllm_server(args)
        print(f"  vllm serve ready in {vllm_start:.1f} s (not counted in gym-way)", flush=True)
    mean = {"tokens": args.max_tokens}
    details: list[dict] = []

    warm = Comparison("agents, warm (engine start not counted)", "output tok/s")

    def rollout_ray_side(name: str, agentic: bool, blocks: int | None = None, core: str = "auto"):
        """A rollout-ray side: the agent episodes, or the same tokens as one turn."""

        def run() -> float:
            if agentic:
                result = run_rollout_ray(args, work, path, tools, 0, blocks, core)
            else:
                plain_rows = path.with_name("plain.jsonl")
                result = run_rollout_ray(args, work, plain_rows, None, mean["tokens"], blocks)
            if name == "agent":  # the single-turn sides are forced to its mean length
                mean["tokens"] = max(1, round(result["output_tokens"] / result["episodes"]))
            details.append({"side": name, **result})
            warm.runs.setdefault(name, []).append(result["output_tokens"] / result["warm_s"])
            return result["output_tokens"] / result["wall_s"]

        return run

    def gym_way_side(name: str, same_calls: bool):
        def run() -> float:
            started = time.monotonic()
            result = asyncio.run(gym_way_episodes(vllm_url, tools.url, data, args, same_calls))
            result["wall_s"] = time.monotonic() - started
            details.append({"side": name, **result})
            warm.runs.setdefault(name, []).append(result["output_tokens"] / result["wall_s"])
            return result["output_tokens"] / result["wall_s"]

        return run

    # The same model input on every side: SmolLM2's template ignores `tools`, so
    # rollout-ray puts them in a system message (Hermes style); the single-turn side and
    # the gym-way requests get that same system message.
    plain = [{"messages": [SYSTEM, *r["responses_create_params"]["input"]]} for r in data]
    path.with_name("plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain))
    rates = Comparison("agents", "output tok/s")

    sides = {
        "agent": rollout_ray_side("agent", True),
        "single-turn": rollout_ray_side("single-turn", False),
        "gym-way": gym_way_side("gym-way", False),
        "gym-way-same-calls": gym_way_side("gym-way-same-calls", True),
        "agent-128-blocks": rollout_ray_side("agent-128-blocks", True, VLLM_CPU_BLOCKS),
        "agent-core-process": rollout_ray_side("agent-core-process", True, core="process"),
        "single-turn-128-blocks": rollout_ray_side(
            "single-turn-128-blocks", False, VLLM_CPU_BLOCKS
        ),
    }
    sides = {k: v for k, v in sides.items() if not args.only or k in args.only}
    try:
        for side in schedule(list(sides), args.rounds):
            value = sides[side]()
            rates.runs.setdefault(side, []).append(value)
            last = details[-1]
            print(
                f"  {side:>11}: {last['episodes']} episodes, {last['output_tokens']} output "
                f"tokens, {last.get('tool_calls', '-')} tool calls in {last['wall_s']:.1f} s "
                f"= {value:,.0f} tok/s"
                + (
                    f"; episodes whose tokens, items and /verify body disagree: "
                    f"{last['episodes_disagreeing']} of {last['episodes_checked']}; "
                    f"tool-output tokens prefilled per episode {last['observed_per_episode']:.1f}"
                    if "episodes_checked" in last
                    else ""
                ),
                flush=True,
            )
    finally:
        if vllm is not None:
            vllm.terminate()
            vllm.wait(30)

    def report(comparison: Comparison, a: str, b: str, target: float | None = None) -> None:
        if a in comparison.runs and b in comparison.runs:
            comparison.report(a, b, at_least=target)

    report(rates, "agent", "single-turn", 0.9)
    report(rates, "agent", "gym-way", 1.5)
    # Issue 25's targets, like for like: both rollout-ray sides and the gym way warm.
    report(warm, "agent", "single-turn", 0.9)
    report(warm, "agent", "gym-way", 1.5)
    report(warm, "agent", "gym-way-same-calls", 1.5)  # the like for like
    report(warm, "agent", "agent-128-blocks")
    report(warm, "agent-core-process", "agent")
    report(warm, "agent-core-process", "gym-way-same-calls", 1.5)
    report(warm, "single-turn", "single-turn-128-blocks")
    report(warm, "agent-128-blocks", "single-turn-128-blocks", 0.9)
    # The gym-way with its server's start-up counted once per run, as rollout-ray's is.
    cold = [
        d["output_tokens"] / (d["wall_s"] + vllm_start) for d in details if d["side"] == "gym-way"
    ]
    if cold:
        rates.runs["gym-way-cold"] = cold
        report(rates, "agent", "gym-way-cold", 1.0)
    print(json.dumps(details))


if __name__ == "__main__":
    main()
