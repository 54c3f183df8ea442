"""What each feature costs, measured side by side in one run (print ratios and verdicts).

verify    job wall time with the math verifier on vs off (SmolLM2 on vLLM, arithmetic
          questions, so every response is parsed), alternated
metrics   all metrics on (the job's Prometheus endpoint scraped every second, Ray's
          metrics, vLLM's own stats) vs `metrics: false`, on the vLLM engine with the
          default shard size, alternated
sweep     a 4-setting sweep vs the same rollouts with the same settings as one plain
          job (rows carry their setting), over each job's generation window, alternated
endpoint  the openai engine against a local endpoint answering after a fixed delay:
          achieved requests/s vs concurrency / delay
serve     the same prompts through `rollout-ray serve` (our Serve app) and through
          Ray's `ray.serve.llm` app vs the in-process engine, same engine batch, over
          each job's generation window

Every job is `rollout-ray run` in a fresh process (its own Ray, its metrics endpoint
gone when it ends). Sides alternate (A B B A ...); every run is printed, then the
median ratio, each side's spread and a verdict (see compare.py).

    python benchmarks/overheads.py                      # all, 2 rounds each
    python benchmarks/overheads.py --only verify --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Comparison
from throughput import prompts

SMOLLM2 = "smollm2-135m-instruct"
VLLM = {"kind": "vllm", "max_model_len": 2048}


def job(workdir: Path, name: str, config: dict) -> dict:
    """`rollout-ray run` of a job in a fresh process; its metrics.json, plus `wall` (the
    process from start to exit) and `window` (first piece started to the end)."""
    output = workdir / name
    subprocess.run(["rm", "-rf", str(output)], check=True)
    path = workdir / f"{name}.json"
    path.write_text(json.dumps({"output": str(output), "metrics_port": 0, **config}))
    env = {**os.environ, "ROLLOUT_RAY_DASHBOARD": "0"}
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(path)],
        env=env,
        capture_output=True,
        text=True,
    )
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((output / "metrics.json").read_text())
    first = metrics["run"].get("first_piece_at") or started
    metrics.update(wall=ended - started, window=ended - first, output=output)
    metrics["tokens"] = sum(d["output_tokens"] for d in metrics["datasets"].values())
    return metrics


def prompt_file(workdir: Path, n: int, arithmetic: bool = False) -> Path:
    path = workdir / f"prompts-{n}-{arithmetic}.jsonl"
    with path.open("w") as f:
        for i, text in enumerate(prompts(n)):
            if arithmetic:  # a question whose answer the math verifier has to parse
                a, b = 17 + i % 83, 29 + i % 71
                text, answer = f"What is {a} times {b}? Show your working.", str(a * b)
            else:
                answer = "1"
            f.write(json.dumps({"prompt": text, "expected_answer": answer}) + "\n")
    return path


def bench_verify(workdir: Path, n: int, rounds: int) -> None:
    data = prompt_file(workdir, n, arithmetic=True)
    base = {"model": SMOLLM2, "engine": VLLM, "sampling": {"temperature": 0.7, "max_tokens": 128}}
    count = iter(range(10**6))

    def side(verifier: dict | None) -> float:
        dataset = {"path": str(data), **({"verifier": verifier} if verifier else {})}
        result = job(workdir, f"verify-{next(count)}", {**base, "datasets": [dataset]})
        return result["tokens"] / result["wall"]

    rates = Comparison("verify", "output tok/s (job wall time)")
    rates.run_all({"off": lambda: side(None), "on": lambda: side({"kind": "math"})}, rounds)
    rates.report("on", "off", at_least=0.97)


def bench_metrics(workdir: Path, n: int, rounds: int) -> None:
    """A scraper reads the job's endpoint every second while metrics are on (Prometheus'
    default interval is 15 s); the endpoint ends with its job's process."""
    import httpx

    data = prompt_file(workdir, n)
    port = 19464
    base = {"model": SMOLLM2, "engine": VLLM, "sampling": {"temperature": 0.7, "max_tokens": 128}}
    count = iter(range(10**6))
    scrapes = []

    def side(on: bool) -> float:
        stop = threading.Event()

        def scrape() -> None:
            while not stop.wait(1.0):
                with contextlib.suppress(httpx.HTTPError):
                    scrapes.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5))

        if on:
            threading.Thread(target=scrape, daemon=True).start()
        config = {
            **base,
            "datasets": [{"path": str(data)}],
            "metrics": on,
            "metrics_port": port if on else 0,
        }
        try:
            result = job(workdir, f"metrics-{next(count)}", config)
        finally:
            stop.set()
        return result["tokens"] / result["wall"]

    rates = Comparison("metrics", "output tok/s (job wall time)")
    rates.run_all({"off": lambda: side(False), "on": lambda: side(True)}, rounds)
    ok = sum(1 for r in scrapes if r.status_code == 200)
    print(f"  metrics: {ok} scrapes answered while on")
    rates.report("on", "off", at_least=0.99)


def bench_sweep(workdir: Path, n: int, rounds: int) -> None:
    """The sweep against the same rollouts, with the same settings, as one plain job
    whose rows carry their setting (per-row sampling): what the sweep block adds."""
    grid = {"temperature": [0.5, 1.0], "top_p": [0.9, 1.0]}
    data = prompt_file(workdir, n)
    rows = workdir / f"sweep-rows-{n}.jsonl"
    with rows.open("w") as out:
        for p in prompts(n):
            for temperature in grid["temperature"]:
                for top_p in grid["top_p"]:
                    sampling = {"temperature": temperature, "top_p": top_p}
                    out.write(json.dumps({"prompt": p, "sampling": sampling}) + "\n")
    base = {"model": SMOLLM2, "engine": VLLM, "sampling": {"max_tokens": 64}}
    count = iter(range(10**6))

    def side(**config) -> float:
        return job(workdir, f"sweep-{next(count)}", {**base, **config})["window"]

    windows = Comparison("sweep", "s of generation window")
    windows.run_all(
        {
            "plain": lambda: side(datasets=[{"path": str(rows)}]),
            "sweep": lambda: side(datasets=[{"path": str(data)}], sweep=grid),
        },
        rounds,
    )
    windows.report("sweep", "plain", at_most=1.1)


def fixed_delay_server(port: int, delay: float) -> None:
    """An OpenAI-compatible chat endpoint that answers every request after `delay`
    seconds; runs in its own process, as a real endpoint would."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay)
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": "ok"},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, backlog=4096, access_log=None, print=None)


def bench_endpoint(workdir: Path, n: int, concurrency: int, delay: float, rounds: int) -> None:
    import socket

    port = 18731
    server = subprocess.Popen(
        [sys.executable, __file__, "--fixed-delay-server", str(port), str(delay)]
    )
    count = iter(range(10**6))
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        data = prompt_file(workdir, n)

        def busy() -> float:
            result = job(
                workdir,
                f"endpoint-{next(count)}",
                {
                    "model": "fixed-delay",
                    "engine": {
                        "kind": "openai",
                        "base_url": f"http://127.0.0.1:{port}/v1",
                        "api_key_env": None,
                        "max_concurrent_requests": concurrency,
                        "timeout_s": 30,
                    },
                    "datasets": [{"path": str(data)}],
                    "sampling": {"max_tokens": 4},
                },
            )
            # Completions per second between the 10th and 90th percentile of completions.
            table = pads.dataset(result["output"] / "data", format="parquet").to_table(
                columns=["created_at"]
            )
            times = np.sort(
                table.column("created_at").to_numpy().astype("datetime64[ms]").astype(float)
            )
            lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
            return (hi - lo) / ((times[hi] - times[lo]) / 1000) / (concurrency / delay)

        share = Comparison("endpoint", "of the ideal request rate")
        share.run_all({"busy": busy}, rounds)
        values = ", ".join(f"{v:.3f}" for v in share.runs["busy"])
        print(
            f"endpoint: {share.median('busy'):.3f} of the ideal {concurrency / delay:,.0f} "
            f"requests/s (concurrency {concurrency}, {delay:g} s a reply; runs {values}; "
            f"spread {share.spread('busy'):.1%}); target >= 0.95"
        )
    finally:
        server.terminate()
        server.wait()


def window_rate(output: Path) -> float:
    """Output tokens/s over the job's generation window: from its first request's start
    (completion time minus latency) to its last completion. Leaves out start-up (an
    in-process engine loads its model inside the job, a served one before it)."""
    table = pads.dataset(output / "data", format="parquet").to_table(
        columns=["created_at", "latency_s", "output_tokens"]
    )
    done = table.column("created_at").to_numpy().astype("datetime64[ms]").astype(float) / 1000
    started = done - table.column("latency_s").to_numpy()
    return float(table.column("output_tokens").to_numpy().sum() / (done.max() - started.min()))


def bench_serve(workdir: Path, n: int, rounds: int) -> None:
    """In-process against each Serve app, alternated; an app is up only while its
    jobs run, so the in-process engine is alone on the machine."""
    from rollout_ray import load_config
    from rollout_ray.logs import quiet_libraries
    from rollout_ray.run.placement import init_ray
    from rollout_ray.serve import deploy as serving

    quiet_libraries()
    init_ray(num_cpus=8)  # logical CPUs: the Serve app's replica and proxies fit
    data = prompt_file(workdir, n)
    port = 18732
    sampling = {"temperature": 0.7, "max_tokens": 128}
    count = iter(range(10**6))

    def local() -> float:
        config = {"model": SMOLLM2, "engine": VLLM, "datasets": [{"path": str(data)}]}
        return window_rate(
            job(workdir, f"serve-{next(count)}", {**config, "sampling": sampling})["output"]
        )

    def served(server: str) -> float:
        app = load_config(
            {
                "model": SMOLLM2,
                "datasets": [{"path": str(data)}],
                "output": "unused",
                "serve": {
                    "served_model_name": "smollm2",
                    "port": port,
                    "max_model_len": 2048,
                    "server": server,
                },
            }
        )
        serving.deploy(app)
        try:
            engine = {
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "api_key_env": None,
                "max_concurrent_requests": 256,
            }
            config = {"model": "smollm2", "engine": engine, "datasets": [{"path": str(data)}]}
            result = job(workdir, f"serve-{next(count)}", {**config, "sampling": sampling})
            return window_rate(result["output"])
        finally:
            serving.stop(app)

    for server in ("rollout-ray", "ray-serve-llm"):
        rates = Comparison(f"serve ({server})", "output tok/s over the generation window")
        rates.run_all({"in-process": local, "served": lambda s=server: served(s)}, rounds)
        rates.report("served", "in-process", at_least=0.85)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    choices = ["verify", "metrics", "sweep", "endpoint", "serve"]
    parser.add_argument("--only", nargs="*", choices=choices)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side")
    parser.add_argument("--fixed-delay-server", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fixed_delay_server:
        fixed_delay_server(int(args.fixed_delay_server[0]), float(args.fixed_delay_server[1]))
        return
    os.environ.setdefault("ROLLOUT_RAY_DASHBOARD", "0")
    small = args.quick
    with tempfile.TemporaryDirectory(prefix="rollout-ray-overheads-") as tmp:
        workdir = Path(tmp)
        wanted = args.only or choices
        if "verify" in wanted:
            bench_verify(workdir, 100 if small else 400, args.rounds)
        if "metrics" in wanted:
            bench_metrics(workdir, 100 if small else 400, args.rounds)
        if "sweep" in wanted:
            bench_sweep(workdir, 50 if small else 100, args.rounds)
        if "endpoint" in wanted:
            bench_endpoint(workdir, 3000 if small else 10_000, 256, 1.0, args.rounds)
        if "serve" in wanted:
            bench_serve(workdir, 100 if small else 400, args.rounds)


if __name__ == "__main__":
    main()
