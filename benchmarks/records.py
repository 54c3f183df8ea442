"""What typed commit records cost: a million through `Commit` (+ to_row, as they are
stored) vs plain dicts. A job makes one commit per piece (~256 rollouts), so the
figure per rollout is the gap divided by the piece size. (Failure records are dict
literals typed by a TypedDict: nothing changes at run time.)
Alternated, every run printed, ratios of medians (see compare.py).

    python benchmarks/records.py              # 1,000,000 records, 5 rounds
    python benchmarks/records.py --n 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare import Comparison

from rollout_ray.output.schema import Commit


def commits_typed(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        _ = Commit(
            piece_id=f"p{i}",
            shard_id="s",
            dataset="d",
            round=0,
            data_file="x.parquet",
            n_expected=256,
            n_ok=256,
        ).to_row()
    return n / (time.perf_counter() - started)


def commits_dict(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        _ = {
            "piece_id": f"p{i}",
            "shard_id": "s",
            "dataset": "d",
            "round": 0,
            "data_file": "x.parquet",
            "failures_file": None,
            "n_expected": 256,
            "n_ok": 256,
            "n_failed": 0,
            "n_retryable": 0,
            "prompt_tokens": 0,
            "output_tokens": 0,
            "reward_sum": 0.0,
            "reward_count": 0,
            "seconds": 0.0,
            "stats": None,
            "actor": "",
            "node": "",
            "committed_at": None,
        }
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    commits = Comparison("commit records", "records/s")
    commits.run_all(
        {"typed": lambda: commits_typed(args.n), "dict": lambda: commits_dict(args.n)},
        args.rounds,
    )
    commits.report("typed", "dict")


if __name__ == "__main__":
    main()
