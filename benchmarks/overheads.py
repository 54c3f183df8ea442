"""What each feature costs, measured side by side in one run (print ratios).

verify    generation with the math verifier on vs off (SmolLM2, vLLM), off-on-on-off
metrics   all metrics (Prometheus endpoint scraped every second, Ray metrics) on vs
          `metrics: false` (simulated engine, zero latency: where any overhead would
          show), off-on-on-off
sweep     a 4-setting sweep vs the same rollouts as one plain job (tiny vLLM model)
endpoint  the openai engine against a local endpoint answering after a fixed delay:
          achieved requests/s vs concurrency / delay
serve     the same prompts through our Ray Serve app vs the in-process engine

python benchmarks/overheads.py                 # all
python benchmarks/overheads.py --only endpoint serve
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import prompts


def job(workdir: Path, name: str, **config) -> dict:
    """Run a job in this process (on this process's Ray) and return its metrics."""
    from rollout_ray import load_config, run_job

    config.setdefault("output", str(workdir / name))
    config.setdefault("metrics_port", 0)
    started = time.monotonic()
    # Polled for progress as the CLI's progress line is, whatever else is on.
    result = run_job(load_config(config), on_progress=lambda progress: None)
    metrics = dict(result.metrics)
    metrics["wall"] = time.monotonic() - started
    metrics["gen_rate"] = generation_rate(Path(config["output"]))
    return metrics


def generation_rate(output: Path) -> float:
    """Output tokens/s between the 10th and 90th percentile of completion times."""
    table = pads.dataset(output / "data", format="parquet").to_table(
        columns=["created_at", "output_tokens"]
    )
    order = np.argsort(table.column("created_at").to_numpy().astype("datetime64[ms]"))
    times = table.column("created_at").to_numpy().astype("datetime64[ms]").astype(float)[order]
    tokens = table.column("output_tokens").to_numpy()[order]
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    return float(tokens[lo:hi].sum() / max((times[hi] - times[lo]) / 1000, 1e-3))


def prompt_file(workdir: Path, n: int) -> Path:
    path = workdir / f"prompts-{n}.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": p, "expected_answer": "1"}) + "\n" for p in prompts(n))
    )
    return path


def bench_verify(workdir: Path, n: int) -> None:
    """Off, on, on, off (ABBA): a machine that warms up or slows down over the run
    shifts both sides alike."""
    data = prompt_file(workdir, n)
    base = {
        "model": "smollm2-135m-instruct",
        "sampling": {"temperature": 0.7, "max_tokens": 128},
        "engine": {"kind": "vllm", "max_model_len": 2048},
    }
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for i, label in enumerate(("off", "on", "on", "off")):
        verifier = {"verifier": {"kind": "math"}} if label == "on" else {}
        result = job(
            workdir, f"verify-{label}-{i}", datasets=[{"path": str(data), **verifier}], **base
        )
        rates[label].append(result["gen_rate"])
    off, on = sum(rates["off"]) / 2, sum(rates["on"]) / 2
    print(
        f"verify: generation {off:.0f} tok/s without ({rates['off'][0]:.0f}, "
        f"{rates['off'][1]:.0f}), {on:.0f} tok/s with the math verifier ({rates['on'][0]:.0f}, "
        f"{rates['on'][1]:.0f}) -> ratio {on / off:.3f}"
    )


def bench_metrics(workdir: Path, n: int) -> None:
    """Metrics off (`metrics: false`) against on with a scraper reading the Prometheus
    endpoint every second (Prometheus' default is 15 s), off-on-on-off."""
    import httpx

    data = prompt_file(workdir, n)
    base = {
        "model": "sim",
        "engine": {"kind": "simulated", "concurrency": 2, "num_cpus": 0.5},
        "datasets": [{"path": str(data)}],
        "shard_size": 2000,
    }
    port = 19464
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    walls: dict[str, list[float]] = {"off": [], "on": []}
    try:
        # The first job on a fresh Ray also starts its worker processes: a warm-up.
        for i, label in enumerate(("warm-up", "off", "on", "on", "off")):
            on = label == "on"
            settings = {"metrics": on, "metrics_port": port if on else 0}
            wall = job(workdir, f"metrics-{label}-{i}", **settings, **base)["wall"]
            walls.setdefault(label, []).append(wall)
    finally:
        stop.set()
    off, on = 2 * n / sum(walls["off"]), 2 * n / sum(walls["on"])
    print(
        f"metrics (warm-up, off, on, on, off; walls {walls}): {off:,.0f} rollouts/s off, "
        f"{on:,.0f} on -> cost {100 * (1 - on / off):.2f}% (ratio {on / off:.3f})"
    )


def bench_sweep(workdir: Path, n: int, model: str) -> None:
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
    base = {
        "model": model,
        "engine": {"kind": "vllm", "max_model_len": 512},
        "sampling": {"max_tokens": 32},
    }
    plain = job(workdir, "sweep-plain", datasets=[{"path": str(rows)}], **base)
    sweep = job(workdir, "sweep-grid", datasets=[{"path": str(data)}], sweep=grid, **base)
    print(
        f"sweep: plain job {plain['wall']:.1f} s, 4-setting sweep {sweep['wall']:.1f} s "
        f"(same {4 * n} rollouts, same settings) -> ratio {sweep['wall'] / plain['wall']:.3f}"
    )


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


def bench_endpoint(workdir: Path, n: int, concurrency: int, delay: float) -> None:
    import socket
    import subprocess

    port = 18731
    server = subprocess.Popen(
        [sys.executable, __file__, "--fixed-delay-server", str(port), str(delay)]
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        data = prompt_file(workdir, n)
        output = workdir / "endpoint"
        job(
            workdir,
            "endpoint",
            model="fixed-delay",
            engine={
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "api_key_env": None,
                "max_concurrent_requests": concurrency,
                "timeout_s": 30,
            },
            datasets=[{"path": str(data)}],
            sampling={"max_tokens": 4},
        )
    finally:
        server.terminate()
        server.wait()
    # Completions per second between the 10th and 90th percentile of completion times.
    table = pads.dataset(output / "data", format="parquet").to_table(columns=["created_at"])
    times = np.sort(table.column("created_at").to_numpy().astype("datetime64[ms]").astype(float))
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    rate = (hi - lo) / ((times[hi] - times[lo]) / 1000)
    ideal = concurrency / delay
    print(
        f"endpoint: {rate:,.0f} requests/s at concurrency {concurrency} and {delay:g} s "
        f"per reply (endpoint in its own process); ideal {ideal:,.0f} -> busy {rate / ideal:.3f}"
    )


def window_rate(output: Path) -> float:
    """Output tokens/s over the job's generation window: from its first request's start
    (completion time minus latency) to its last completion. Leaves out start-up (an
    in-process engine loads its model inside the job, a served one before it) and
    keeps the whole tail; with a few hundred rollouts that finish in waves of one
    engine batch, percentiles of completion times swing by 15% from run to run."""
    table = pads.dataset(output / "data", format="parquet").to_table(
        columns=["created_at", "latency_s", "output_tokens"]
    )
    done = table.column("created_at").to_numpy().astype("datetime64[ms]").astype(float) / 1000
    started = done - table.column("latency_s").to_numpy()
    return float(table.column("output_tokens").to_numpy().sum() / (done.max() - started.min()))


def bench_serve(workdir: Path, n: int) -> None:
    """In-process, served, served, in-process (ABBA); the Serve app is up only for the
    served jobs, as the in-process engine is alone on the machine."""
    from rollout_ray import load_config, serving

    data = prompt_file(workdir, n)
    port = 18732
    sampling = {"temperature": 0.7, "max_tokens": 128}
    rates: dict[str, list[float]] = {"in-process": [], "served": []}

    def local(i: int) -> None:
        job(
            workdir,
            f"serve-local-{i}",
            model="smollm2-135m-instruct",
            engine={"kind": "vllm", "max_model_len": 2048},
            datasets=[{"path": str(data)}],
            sampling=sampling,
        )
        rates["in-process"].append(window_rate(workdir / f"serve-local-{i}"))

    local(0)
    config = load_config(
        {
            "model": "smollm2-135m-instruct",
            "datasets": [{"path": str(data)}],
            "output": "unused",
            "serve": {"served_model_name": "smollm2", "port": port, "max_model_len": 2048},
        }
    )
    serving.deploy(config)
    try:
        for i in (1, 2):
            job(
                workdir,
                f"serve-remote-{i}",
                model="smollm2",
                engine={
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{port}/v1",
                    "api_key_env": None,
                    "max_concurrent_requests": 256,
                },
                datasets=[{"path": str(data)}],
                sampling=sampling,
            )
            rates["served"].append(window_rate(workdir / f"serve-remote-{i}"))
    finally:
        serving.stop(config)
    local(3)
    inproc, served = (sum(v) / len(v) for v in (rates["in-process"], rates["served"]))
    print(
        f"serve (in-process, served, served, in-process; tokens/s over each job's "
        f"generation window): in-process {inproc:.0f} "
        f"({', '.join(f'{r:.0f}' for r in rates['in-process'])}), through Ray Serve "
        f"{served:.0f} ({', '.join(f'{r:.0f}' for r in rates['served'])}) -> ratio "
        f"{served / inproc:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", nargs="*", choices=["verify", "metrics", "sweep", "endpoint", "serve"]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sweep-model", help="an HF folder for the sweep (default SmolLM2)")
    parser.add_argument("--fixed-delay-server", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fixed_delay_server:
        fixed_delay_server(int(args.fixed_delay_server[0]), float(args.fixed_delay_server[1]))
        return
    os.environ.setdefault("ROLLOUT_RAY_DASHBOARD", "0")
    from rollout_ray.logs import quiet_libraries
    from rollout_ray.placement import init_ray

    quiet_libraries()
    init_ray(num_cpus=8)  # logical CPUs: a Serve app and engine actors fit beside each other
    small = args.quick
    with tempfile.TemporaryDirectory(prefix="rollout-ray-overheads-") as tmp:
        workdir = Path(tmp)
        wanted = args.only or ["verify", "metrics", "sweep", "endpoint", "serve"]
        if "verify" in wanted:
            bench_verify(workdir, 100 if small else 400)
        if "metrics" in wanted:
            bench_metrics(workdir, 100_000 if small else 300_000)
        if "sweep" in wanted:
            bench_sweep(workdir, 50 if small else 200, args.sweep_model or "smollm2-135m-instruct")
        if "endpoint" in wanted:
            bench_endpoint(workdir, 3000 if small else 10_000, 256, 1.0)
        if "serve" in wanted:
            bench_serve(workdir, 100 if small else 400)


if __name__ == "__main__":
    main()
