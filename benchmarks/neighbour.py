"""What a small neighbour process costs an engine on the same cores, by its priority.

Raw vLLM (`throughput.py --only raw-vllm`) alone, beside a process that computes in
10 ms bursts for a share of one core (as Ray's daemons and bookkeeping actors wake
beside an engine actor) at nice 0, and the same at nice 19. Sides alternated; prints
each side against "alone". This is the measurement behind lowering Ray's processes on
a local Ray (rollout_ray/run/priorities.py).

    python benchmarks/neighbour.py --prompts 400 --rounds 2 --cores 0.2
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from compare import Comparison

HERE = Path(__file__).parent


def neighbour(nice: int, cores: float) -> None:
    """Computes `cores` of one core in 10 ms bursts until killed."""
    os.nice(nice)
    busy = 0.010
    idle = busy * (1 - cores) / cores
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < busy:
            pass
        time.sleep(idle)


def raw_rate(prompts: int, nice: int | None, cores: float) -> float:
    beside = None
    if nice is not None:
        command = [sys.executable, __file__, "--neighbour", str(nice), "--cores", str(cores)]
        beside = subprocess.Popen(command)
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(HERE / "throughput.py"),
                *("--prompts", str(prompts), "--rounds", "1", "--only", "raw-vllm"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if beside is not None:
            beside.kill()
            beside.wait()
    return float(re.search(r"raw-vllm: .* = (\d+) tok/s", done.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=float, default=0.2, help="the neighbour's share")
    parser.add_argument("--neighbour", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.neighbour is not None:
        neighbour(args.neighbour, args.cores)
        return
    sides = {
        "alone": lambda: raw_rate(args.prompts, None, args.cores),
        "beside nice 0": lambda: raw_rate(args.prompts, 0, args.cores),
        "beside nice 19": lambda: raw_rate(args.prompts, 19, args.cores),
    }
    rates = Comparison("raw vLLM", "output tok/s").run_all(sides, args.rounds)
    rates.report("beside nice 0", "alone")
    rates.report("beside nice 19", "alone")
    rates.report("beside nice 19", "beside nice 0")


if __name__ == "__main__":
    main()
