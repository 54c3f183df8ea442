"""A large corpus of hostile JSONL lines through one real job: nothing may stop it.

The lines come from the test suite's hypothesis strategies (tests/messy_rows.py): any
JSON value in any field, empty containers, mixed types, nesting to 1,000 levels,
integers past 64 bits and past Python's digit limit, NaN, unicode, lone surrogates,
invalid UTF-8, missing and extra fields, the three row shapes with wrong types inside.
The job runs on the simulated engine (real Ray, real pipeline) with a verifier, then
every line's rollouts are looked for in data and failures.

    python benchmarks/fuzz.py                 # 10,000 lines, 2 repeats
    python benchmarks/fuzz.py --lines 1000    # a quicker look

Prints: job status, lines with rollouts unaccounted for or found twice (targets: 0),
rollouts stored and failed, failures by stage and class, wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def corpus(n: int) -> list[bytes]:
    from hypothesis.errors import NonInteractiveExampleWarning
    from messy_rows import lines

    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    return [lines.example() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("ROLLOUT_RAY_DASHBOARD", "0")

    from helpers import read_output
    from messy_rows import rollout_keys, write_lines

    from rollout_ray import run_job
    from rollout_ray.config import load_config

    started = time.monotonic()
    content = corpus(args.lines)
    made = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="rr-fuzz-") as tmp:
        path = write_lines(Path(tmp) / "fuzz.jsonl", content)
        config = load_config(
            {
                "model": "sim",
                "engine": {"kind": "simulated", "output_tokens": 8},
                "datasets": [
                    {
                        "name": "fuzz",
                        "path": str(path),
                        "num_repeats": args.repeats,
                        "verifier": {"kind": "exact_match"},
                    }
                ],
                "output": str(Path(tmp) / "out"),
                "metrics_port": 0,
            }
        )
        started = time.monotonic()
        try:
            result = run_job(config)
            status = result.status
        except Exception as exc:  # the target is that this never happens
            status = f"STOPPED: {type(exc).__name__}: {exc}"
        wall = time.monotonic() - started
        keys = rollout_keys(Path(tmp) / "out", args.repeats)
        expected = {(row, i) for row in range(len(content)) for i in range(args.repeats)}
        missing = {row for row, _ in expected - set(keys)}
        twice = {row for (row, _), n in keys.items() if n > 1}
        failures = read_output(Path(tmp) / "out", "failures")
        stored = len(read_output(Path(tmp) / "out"))
    kinds = Counter((f["stage"], f["error_class"]) for f in failures)
    print(f"{len(content):,} lines ({made:.0f} s to make), {args.repeats} rollouts each")
    print(f"job: {status} in {wall:.1f} s")
    print(f"lines with rollouts unaccounted for: {len(missing)}; found twice: {len(twice)}")
    print(f"rollouts stored: {stored:,}; failure records: {len(failures):,}")
    for (stage, error_class), n in kinds.most_common():
        print(f"  {stage:>8} {error_class:<24} {n:,}")


if __name__ == "__main__":
    main()
