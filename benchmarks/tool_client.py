"""CPU of the client that makes an agent's tool calls: rollout-ray's (replies.HttpClient,
on aiohttp's pool) against the httpx pool it used before, on the same calls.

--episodes sessions at once (256: agent.max_connections' default), each a
/seed_session then --calls tool calls, against a Gym-protocol server in this process
(benchmarks/agents.py's ToolServer, in a thread of its own, tools answering after
--tool-delay s). What is measured is the CPU time of the client's thread: on a machine
whose cores an engine fills, that is CPU the engine loses. Sides alternate over
--rounds; every run is printed, then the ratio of medians.

    python benchmarks/tool_client.py                # 256 episodes x 5 requests, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agents import ToolServer
from compare import Comparison, schedule

from rollout_ray.replies import HttpClient


def thread_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


async def episodes(client, url: str, args) -> None:
    async def one(i: int) -> None:
        seeded = await client.post(f"{url}/seed_session", b"{}")
        cookie = {"Cookie": f"sid={seeded.cookies.get('sid')}"}
        for _ in range(args.calls):
            await client.post(f"{url}/add", json.dumps({"n": 1}).encode(), cookie)

    await asyncio.gather(*(one(i) for i in range(args.episodes)))
    await client.aclose()


class Httpx:
    """The client before: one httpx.AsyncClient, a pool as large as the episodes."""

    def __init__(self, connections: int):
        import httpx

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(limits=limits, timeout=60)

    async def post(self, url: str, content: bytes, headers: dict | None = None):
        headers = {**(headers or {}), "Content-Type": "application/json"}
        return await self.client.post(url, content=content, headers=headers)

    async def aclose(self) -> None:
        await self.client.aclose()


class RolloutRay:
    """The client now: rollout_ray.replies.HttpClient."""

    def __init__(self, connections: int):
        self.client = HttpClient(connections, 60)

    async def post(self, url: str, content: bytes, headers: dict | None = None):
        headers = {**(headers or {}), "Content-Type": "application/json"}
        return await self.client.post(url, 1 << 20, "bench", content, headers)

    async def aclose(self) -> None:
        await self.client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--calls", type=int, default=4, help="tool calls per episode")
    parser.add_argument("--tool-delay", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = ToolServer(args.tool_delay)
    requests = args.episodes * (args.calls + 1)
    print(
        f"{args.episodes} sessions at once, {requests} requests, tools answer after "
        f"{args.tool_delay:g} s"
    )
    sides = {"httpx": Httpx, "rollout-ray": RolloutRay}
    cpu = Comparison("client CPU per request", "requests per CPU s")
    for side in schedule(list(sides), args.rounds):
        started, wall = thread_cpu_s(), time.monotonic()
        asyncio.run(episodes(sides[side](args.episodes), server.url, args))
        used, wall = thread_cpu_s() - started, time.monotonic() - wall
        print(
            f"  {side:>11}: {used:6.2f} CPU s, wall {wall:5.2f} s, {requests} requests", flush=True
        )
        cpu.runs.setdefault(side, []).append(requests / max(used, 1e-6))
    cpu.report("rollout-ray", "httpx")


if __name__ == "__main__":
    main()
