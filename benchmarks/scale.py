"""The pipeline machinery at scale, with the `simulated` engine (no model, no GPU).

    (a) zero latency: rollouts/s of read, shard, dispatch, write and commit, and the
        peak memory of the whole job (driver, coordinator, workers, Ray's daemons),
        for a small and a 10x larger job side by side;
    (b) a fixed latency per rollout: throughput with 1 actor and with 8 actors.

Each job runs as `rollout-ray run` in a fresh process; memory is the largest sum of
RSS over the job's process tree, sampled every 0.2 s (RSS counts shared pages in
every process, so the sums overstate). Compare the ratios, not absolute figures.

    python benchmarks/scale.py            # 100k vs 1M rollouts; 1 vs 8 actors
    python benchmarks/scale.py --quick    # 10k vs 100k
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def write_input(path: Path, rows: int) -> None:
    with open(path, "w") as f:
        for i in range(rows):
            f.write(
                json.dumps({"prompt": f"Write a short story about the number {i}.", "id": i}) + "\n"
            )


class TreeMemory:
    """Peak summed RSS of a process and all its descendants (ours, and Ray's own)."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak = 0
        self.peak_ours = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = ours = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    name = " ".join(proc.cmdline()[:2])
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                if proc is self.root or "ray::" in name:
                    ours += rss  # the driver and the job's actors and tasks
            self.peak = max(self.peak, total)
            self.peak_ours = max(self.peak_ours, ours)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run(workdir: Path, name: str, rows: int, engine: dict, shard_size: int) -> dict:
    data = workdir / f"{name}.jsonl"
    if not data.exists():
        write_input(data, rows)
    output = workdir / f"{name}-out"
    config = workdir / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "model": "simulated",
                "engine": {"kind": "simulated", "output_tokens": 16, **engine},
                "datasets": [{"name": name, "path": str(data)}],
                "output": str(output),
                "shard_size": shard_size,
                "metrics_port": 0,
            }
        )
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ROLLOUT_RAY_DASHBOARD": "0"},
    )
    memory = TreeMemory(proc.pid)
    _, err = proc.communicate()
    wall = time.monotonic() - started
    memory.stop()
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{err[-3000:]}")
    metrics = json.loads((output / "metrics.json").read_text())
    run = metrics["run"]
    return {
        "rows": rows,
        "wall_s": wall,
        "rate": run["done"] / wall,
        "steady_rate": steady_rate(output),
        "peak_gib": memory.peak / 2**30,
        "peak_ours_gib": memory.peak_ours / 2**30,
        "coordinator_mb": run.get("coordinator_peak_rss_mb"),
    }


def steady_rate(output: Path) -> float:
    """Rollouts/s between the 10th and 90th percentile of completion times: the rate
    once every actor is up, without start-up or the last pieces' tail."""
    import numpy as np
    import pyarrow.dataset as pads

    done = pads.dataset(output / "data", format="parquet").to_table(columns=["created_at"])
    times = np.sort(done.column("created_at").to_numpy().astype("datetime64[ms]").astype(float))
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    return (hi - lo) / max((times[hi] - times[lo]) / 1000, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per rollout in (b)")
    args = parser.parse_args()
    small, large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rollout-ray-scale-") as tmp:
        workdir = Path(tmp)
        print(f"(a) zero latency, {cores} actors, shards of 5,000 rows")
        zero = {"latency_s": 0.0, "concurrency": cores, "num_cpus": 0.5}
        results = {}
        for rows in (small, large):
            r = results[rows] = run(workdir, f"zero-{rows}", rows, zero, 5000)
            print(
                f"  {rows:>9,} rollouts: {r['wall_s']:.1f} s wall, {r['rate']:,.0f} rollouts/s "
                f"end to end, {r['steady_rate']:,.0f}/s once running; peak memory "
                f"{r['peak_gib']:.2f} GiB all processes, {r['peak_ours_gib']:.2f} GiB driver "
                f"+ actors + tasks; coordinator {r['coordinator_mb']:.0f} MiB"
            )
        print(
            f"  peak memory {large:,} / {small:,}: "
            f"{results[large]['peak_gib'] / results[small]['peak_gib']:.3f} (all), "
            f"{results[large]['peak_ours_gib'] / results[small]['peak_ours_gib']:.3f} (ours)"
        )

        print(f"(b) {args.latency:g} s per rollout, 256 slots per actor")
        rates = {}
        for actors in (1, 8):
            engine = {
                "latency_s": args.latency,
                "concurrency": actors,
                "num_cpus": 0.1,
                "max_num_seqs": 256,
            }
            # Enough work that every actor runs well past its start-up.
            rows = (4_000 if args.quick else 15_000) * (4 if actors > 1 else 1)
            r = run(workdir, f"latency-{actors}", rows, engine, 256)
            rates[actors] = r["steady_rate"]
            print(
                f"  {actors} actor(s), {rows:,} rollouts: {r['steady_rate']:,.0f} rollouts/s "
                f"once running, {r['wall_s']:.1f} s wall"
            )
        print(f"  8 actors / 1 actor: {rates[8] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
