"""Who takes the engine's cores? Run a command and, for each second in which the busiest
process (the engine: an actor, or the driver in process) computed, the CPU every other
process took in that second.

On a machine whose cores the engine's OpenMP team fills, every other process's wake-up
stalls the whole team at its next barrier: this says which processes those are and how
much they take, e.g. Ray's daemons and the Ray Data driver beside an engine actor.

    python benchmarks/cpu_share.py -- python benchmarks/throughput.py --prompts 400 \
        --rounds 1 --only rollout-ray-on-ray
    python benchmarks/cpu_share.py -- rollout-ray run configs/sft.yaml executor=ray

Prints the engine's cores in its busy seconds (2.0 on this machine would be all of
them) and the others' CPU seconds in the same seconds, largest first.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import time

import psutil

#: A second in which the engine used at least this many cores counts as busy.
BUSY_CORES = 1.2


def kind(cmdline: str) -> str:
    """A process as a reader knows it: Ray's daemon names, else the command itself."""
    for mark, name in (
        ("gcs_server", "Ray GCS"),
        ("raylet", "Ray raylet"),
        ("dashboard/agent.py", "Ray dashboard agent"),
        ("DashboardAgent", "Ray dashboard agent"),
        ("dashboard.py", "Ray dashboard"),
        ("ray-dashboard", "Ray dashboard"),
        ("log_monitor.py", "Ray log monitor"),
        ("monitor.py", "Ray monitor"),
        ("ray::IDLE", "Ray idle worker"),
        ("rollout_ray.cli", "the driver (rollout-ray's CLI)"),
    ):
        if mark in cmdline:
            return name
    return cmdline[:100]


def sample(
    command: list[str], names: dict[tuple, str], period_s: float = 1.0
) -> list[dict[tuple, float]]:
    """CPU seconds per process (pid, start time) in each period while `command` runs;
    `names` gets each process's command line as last seen (Ray renames its workers
    after the actor or task they run)."""
    proc = subprocess.Popen(command)
    previous: dict[tuple, float] = {}
    timeline = []
    while proc.poll() is None:
        now = {}
        for p in psutil.process_iter():
            try:
                times = p.cpu_times()
                key = (p.pid, p.create_time())
                names[key] = " ".join(p.cmdline()) or p.name()
                now[key] = times.user + times.system
            except (psutil.Error, OSError):
                continue
        if previous:
            timeline.append({k: v - previous[k] for k, v in now.items() if k in previous})
        previous = now
        time.sleep(period_s)
    return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"] if args.command else []
    if not command:
        parser.error("give the command to run after --")
    names: dict[tuple, str] = {}
    timeline = sample(command, names)
    total: collections.Counter = collections.Counter()
    for second in timeline:
        total.update(second)
    mine = [k for k in total if "cpu_share.py" in names[k]]
    pythons = [k for k in total if "python" in names[k] or names[k].startswith("ray::")]
    pythons = [k for k in pythons if k not in mine]
    if not pythons:
        raise SystemExit("no python process ran")
    engine = max(pythons, key=lambda k: total[k])
    busy = [s for s in timeline if s.get(engine, 0.0) >= BUSY_CORES]
    others: collections.Counter = collections.Counter()
    for second in busy:
        for key, cpu in second.items():
            if key != engine and key not in mine:
                others[kind(names[key])] += cpu
    engine_cpu = sum(s[engine] for s in busy)
    print(f"engine: {kind(names[engine])} (pid {engine[0]})")
    print(
        f"busy seconds: {len(busy)}; the engine's cores in them: "
        f"{engine_cpu / max(1, len(busy)):.2f} of {psutil.cpu_count()}; "
        f"every other process: {sum(others.values()):.1f} CPU s "
        f"({sum(others.values()) / max(1, len(busy)):.2f} cores)"
    )
    for name, cpu in others.most_common(12):
        if cpu >= 0.05:
            print(f"  {cpu:6.2f} s  {name}")


if __name__ == "__main__":
    main()
