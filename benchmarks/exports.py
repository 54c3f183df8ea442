"""Exports at scale: time and peak memory of each export kind, for a job ten times
larger than another, side by side.

The jobs are written by the `simulated` engine (seeded, so repeats differ, scored by a
regex verifier, so rewards vary within a task), 4 rollouts per task. Each export runs in
a fresh process; memory is that process's peak RSS. Compare the ratios: time should
grow with the size, memory should not.

    python benchmarks/exports.py            # 100k vs 1M rollouts
    python benchmarks/exports.py --quick    # 10k vs 100k
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = {
    "sft": ("sft.parquet", {"threshold": 1.0}),
    "dpo": ("dpo.parquet", {"min_gap": 0.5}),
    "rl": ("rl.parquet", {}),
    "eval": ("eval.json", {}),
}


def make_job(workdir: Path, rollouts: int) -> Path:
    rows = rollouts // 4
    data = workdir / f"rows-{rows}.jsonl"
    with data.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"prompt": f"Tell me about the number {i}."}) + "\n")
    output = workdir / f"job-{rollouts}"
    config = {
        "model": "sim",
        "engine": {"kind": "simulated", "concurrency": 2, "num_cpus": 0.5},
        "datasets": [
            {
                "name": "sim",
                "path": str(data),
                "num_repeats": 4,
                "verifier": {"kind": "regex", "pattern": "^(alpha|charlie|echo)"},
            }
        ],
        "sampling": {"seed": 1, "max_tokens": 16, "return_token_ids": True, "logprobs": True},
        "shard_size": 5000,
        "metrics_port": 0,
        "output": str(output),
    }
    path = workdir / f"job-{rollouts}.json"
    path.write_text(json.dumps(config))
    subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={"ROLLOUT_RAY_DASHBOARD": "0", **os.environ},
    )
    return output


def measure(kind: str, output: Path, workdir: Path) -> dict:
    name, options = KINDS[kind]
    dest = workdir / f"{output.name}-{name}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(output), str(dest), json.dumps(options)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.monotonic() - started
    return result


def child(kind: str, output: str, dest: str, options: str) -> None:
    from rollout_ray.exports import export

    report = export(kind, output, dest, **json.loads(options))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": report.rows_written, "peak_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    small, large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="rollout-ray-exports-") as tmp:
        workdir = Path(tmp)
        jobs = {n: make_job(workdir, n) for n in (small, large)}
        for kind in KINDS:
            a, b = (measure(kind, jobs[n], workdir) for n in (small, large))
            time_ratio = b["wall_s"] / a["wall_s"]
            print(
                f"{kind:>4}: {small:,} rollouts {a['wall_s']:.1f} s, {a['peak_mib']:.0f} MiB "
                f"({a['rows']:,} rows) | {large:,} rollouts {b['wall_s']:.1f} s, "
                f"{b['peak_mib']:.0f} MiB ({b['rows']:,} rows) | time x{time_ratio:.1f}, "
                f"memory x{b['peak_mib'] / a['peak_mib']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
