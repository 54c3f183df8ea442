"""What the manifest costs: planning big inputs, and resuming a nearly finished job.

    (a) planning a JSONL file (shards by byte ranges, no row parsed) next to parsing
        every row of it, for 100,000 and 1,000,000 lines: time and peak memory;
    (b) resuming a job that is 99% done, for 100,000 and 1,000,000 rollouts: seconds
        from `rollout-ray run` to the first remaining piece starting, the whole run,
        and the peak memory of the driver and of the coordinator.

Each measurement runs in a fresh process. Compare the ratios, not absolute figures.
The resume case writes the finished 99% as commit records only (their data files are
not written): resuming never reads them, which is what this measures.

    python benchmarks/manifest.py            # 100k and 1M
    python benchmarks/manifest.py --quick    # 10k and 100k
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

LINE = {
    "prompt": "Write a short story about {i}. " + "Make it vivid and kind. " * 18,
    "expected_answer": "n/a",
    "source": "benchmark",
}


def write_jsonl(path: Path, n: int) -> None:
    template = json.dumps(LINE)
    with open(path, "w") as f:
        for i in range(n):
            f.write(template.replace("{i}", str(i)) + "\n")


def child(code: str) -> tuple[float, float, str]:
    """Run Python code in a fresh process: (seconds, peak RSS in MiB, its stdout)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
    return seconds, peak, done.stdout


PEAK = (
    "import resource, json; print(json.dumps({'peak_mb': "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
)


def bench_planning(path: Path) -> dict:
    plan = (
        "from rollout_ray.config import load_config\n"
        "from rollout_ray.output.plan import build_plan\n"
        f"config = load_config({{'datasets': [{{'path': '{path}'}}], 'output': 'x'}})\n"
        "files, shards = build_plan(config)\n"
        "print(len(shards))\n" + PEAK
    )
    parse = (
        "import json\n"
        f"n = sum(1 for line in open('{path}', 'rb') if json.loads(line))\n"
        "print(n)\n" + PEAK
    )
    plan_s, plan_mb, _ = child(plan)
    parse_s, parse_mb, _ = child(parse)
    return {"plan_s": plan_s, "plan_mb": plan_mb, "parse_s": parse_s, "parse_mb": parse_mb}


def fabricate_progress(output: str, done_share: float) -> int:
    """Write commit records for `done_share` of the planned shards; returns how many."""
    from rollout_ray import storage
    from rollout_ray.inputs.sources import Shard
    from rollout_ray.output.manifest import Layout, now_utc, write_commits
    from rollout_ray.output.schema import Commit

    layout = Layout(output)
    shards = [Shard.from_dict(r) for r in storage.read_parquet(layout.plan).to_pylist()]
    finished = shards[: int(len(shards) * done_share)]
    records = []
    for shard in finished:
        n = shard.num_rows * shard.num_repeats
        data, _ = layout.piece_files(shard, 0, "bench")
        records.append(
            Commit(
                **{
                    "piece_id": f"{shard.shard_id}#r0",
                    "shard_id": shard.shard_id,
                    "dataset": shard.dataset,
                    "round": 0,
                    "data_file": data,
                    "failures_file": None,
                    "n_expected": n,
                    "n_ok": n,
                    "n_failed": 0,
                    "n_retryable": 0,
                    "prompt_tokens": 40 * n,
                    "output_tokens": 16 * n,
                    "reward_sum": 0.0,
                    "reward_count": 0,
                    "seconds": 1.0,
                    "committed_at": now_utc(),
                }
            )
        )
    # As many commit files as a long job leaves behind before compaction.
    for i in range(0, len(records), 500):
        write_commits(layout, records[i : i + 500])
    return len(records)


def bench_resume(workdir: Path, rows: int) -> dict:
    data = workdir / f"resume-{rows}.jsonl"
    write_jsonl(data, rows)
    output = str(workdir / f"resume-{rows}-out")
    config = workdir / f"resume-{rows}.yaml"
    config.write_text(
        json.dumps(
            {
                "model": "simulated",
                "engine": {"kind": "simulated", "output_tokens": 16, "concurrency": 1},
                "datasets": [{"name": "big", "path": str(data)}],
                "output": output,
            }
        )
    )
    from rollout_ray.config import load_config
    from rollout_ray.output.plan import prepare_output

    prepare_output(load_config(config))
    fabricate_progress(output, 0.99)
    command = [sys.executable, "-m", "rollout_ray.cli", "run", str(config)]
    launched = time.time()
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "ROLLOUT_RAY_DASHBOARD": "0"}
    )
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    driver_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = json.loads(Path(output, "metrics.json").read_text())
    run = metrics["run"]
    return {
        "rollouts": rows,
        "remaining": run["todo"],
        "wall_s": wall,
        "to_first_piece_s": run["first_piece_at"] - launched,
        "driver_peak_mb": driver_mb,
        "coordinator_peak_mb": run["coordinator_peak_rss_mb"],
        "plan_check_s": metrics["plan_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    small, large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="rollout-ray-manifest-") as tmp:
        workdir = Path(tmp)
        print("(a) planning a JSONL file vs parsing every row")
        planning = {}
        for n in (small, large):
            path = workdir / f"plan-{n}.jsonl"
            write_jsonl(path, n)
            planning[n] = r = bench_planning(path)
            size = path.stat().st_size / 2**20
            print(
                f"  {n:>9,} lines ({size:,.0f} MiB): plan {r['plan_s']:.2f} s, "
                f"{r['plan_mb']:.0f} MiB peak | parse {r['parse_s']:.2f} s, "
                f"{r['parse_mb']:.0f} MiB peak"
            )
            path.unlink()
        print(
            f"  plan time / parse time at {large:,}: "
            f"{planning[large]['plan_s'] / planning[large]['parse_s']:.3f}"
        )
        print(
            f"  plan peak memory {large:,} / {small:,} lines: "
            f"{planning[large]['plan_mb'] / planning[small]['plan_mb']:.3f}"
        )

        print("(b) resuming a job that is 99% done (simulated engine)")
        resume = {}
        for n in (small, large):
            resume[n] = r = bench_resume(workdir, n)
            print(
                f"  {n:>9,} rollouts, {r['remaining']:,} left: first piece after "
                f"{r['to_first_piece_s']:.1f} s, run {r['wall_s']:.1f} s, driver peak "
                f"{r['driver_peak_mb']:.0f} MiB, coordinator peak "
                f"{r['coordinator_peak_mb']:.0f} MiB, input check {r['plan_check_s']:.2f} s"
            )
        print(
            f"  time to first piece {large:,} / {small:,}: "
            f"{resume[large]['to_first_piece_s'] / resume[small]['to_first_piece_s']:.3f}"
        )
        print(
            f"  coordinator peak memory {large:,} / {small:,}: "
            f"{resume[large]['coordinator_peak_mb'] / resume[small]['coordinator_peak_mb']:.3f}"
        )
        print(
            f"  driver peak memory {large:,} / {small:,}: "
            f"{resume[large]['driver_peak_mb'] / resume[small]['driver_peak_mb']:.3f}"
        )


if __name__ == "__main__":
    main()
