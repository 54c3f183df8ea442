"""What the processes beside an engine actor cost its forward passes, on a local Ray.

Runs throughput.py's on-Ray side with the engine's step trace on
(ROLLOUT_RAY_STEP_TRACE, docs/debugging.md). Once the engine steps a full batch, it
freezes (SIGSTOP) a group of processes for 10 s, lets them run 10 s, for a few cycles,
and prints each cycle's mean step time (steps with >= 200 requests in flight) in the
10 s before, during and after the freeze, then the ratio frozen / not frozen over all
cycles. Adjacent windows hold nearly the same batch, so the ratio is what that group's
activity costs a step; the run-to-run noise of one window is about 3%. A diagnostic
for a development machine (a frozen GCS answers nobody), never a setting.

    python benchmarks/step_freeze.py --prompts 1200 --group all

Groups: all (every process but the engine actor and this script), driver (the CLI),
coordinator (the coordinator and piece-feed actors), gcs, raylet, dashboard (the
dashboard, its modules, the agents and monitors), data (Ray Data's helper actors).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent
ENGINE = "MapWorker(MapBatches(EngineWorker))"
RAY = ("ray/", "ray::", "ray-dashboard", "gcs_server", "raylet", "rollout_ray.cli")
GROUPS = {
    "driver": ("rollout_ray.cli",),
    "coordinator": ("ray::Coordinator", "ray::ReadPendingPieces"),
    "gcs": ("gcs_server",),
    "raylet": ("raylet/raylet",),
    "dashboard": (
        "dashboard",
        "ray::DashboardAgent",
        "ray::RuntimeEnvAgent",
        "log_monitor",
        "autoscaler/_private/monitor",
    ),
    "data": ("ray::_StatsActor", "ray::ActorLocationTracker", "ray::_AutoscalingCoordinator"),
}
FULL = 200  # requests in flight for a step to count as a full batch
WINDOW_S = 10.0


def command_line(proc) -> str:
    return " ".join(proc.info["cmdline"] or ())


def members(group: str, spared: set[int]) -> list[int]:
    """The processes of `group` now, never the engine actor's or this run's own."""
    import psutil

    marks = RAY if group == "all" else GROUPS[group]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = command_line(proc)
        if proc.pid in spared or "throughput.py" in line or "step_freeze" in line:
            continue
        if any(mark in line for mark in marks):
            found.append(proc.pid)
    return found


def read_steps(folder: Path) -> list[tuple[float, float, int]]:
    steps = []
    for path in folder.glob("steps-*.tsv"):
        for line in path.read_text().splitlines():
            began, took, in_flight = line.split("\t")
            steps.append((float(began), float(took), int(in_flight)))
    return sorted(steps)


def freeze_cycles(group: str, cycles: int, folder: Path, windows: list, stop: threading.Event):
    """Waits for full batches, then freezes the group in cycles (windows: start, end)."""
    import psutil

    while not stop.is_set():
        engines = [p for p in psutil.process_iter(["cmdline"]) if ENGINE in command_line(p)]
        if engines and any(n >= FULL for _, _, n in read_steps(folder)):
            break
        time.sleep(0.5)
    else:
        return
    engine = engines[0]
    spared = {os.getpid(), engine.pid, *(p.pid for p in engine.children(recursive=True))}
    time.sleep(WINDOW_S)  # a "before" window for the first cycle
    for _ in range(cycles):
        frozen = members(group, spared)
        began = time.time()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stop.wait(WINDOW_S)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        windows.append((began, time.time(), len(frozen)))
        if stop.wait(WINDOW_S):
            return


def mean_ms(steps, start: float, end: float) -> float | None:
    took = [t for began, t, n in steps if start <= began < end and n >= FULL]
    return statistics.mean(took) * 1000 if took else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=1200)
    parser.add_argument("--group", choices=["all", *GROUPS], default="all")
    parser.add_argument("--cycles", type=int, default=4)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="step-freeze-"))
    env = {**os.environ, "ROLLOUT_RAY_STEP_TRACE": str(folder)}
    windows: list[tuple[float, float, int]] = []
    stop = threading.Event()
    freezer = threading.Thread(
        target=freeze_cycles, args=(args.group, args.cycles, folder, windows, stop)
    )
    freezer.start()
    try:
        command = [sys.executable, str(HERE / "throughput.py"), "--prompts", str(args.prompts)]
        command += ["--rounds", "1", "--only", "rollout-ray-on-ray"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    finally:
        stop.set()
        freezer.join()
    print(next((x for x in done.stdout.splitlines() if "rollout-ray-on-ray:" in x), ""))
    steps = read_steps(folder)
    print(f"group {args.group}: {len(steps)} steps traced, {len(windows)} freeze cycles")
    frozen_ms, free_ms = [], []
    for began, ended, count in windows:
        before = mean_ms(steps, began - WINDOW_S, began)
        during = mean_ms(steps, began + 0.5, ended)
        after = mean_ms(steps, ended + 0.5, ended + WINDOW_S)
        shown = [f"{x:6.1f}" if x else "     -" for x in (before, during, after)]
        print(
            f"  {count:2d} processes frozen: before {shown[0]} ms  "
            f"frozen {shown[1]} ms  after {shown[2]} ms"
        )
        if during:
            frozen_ms.append(during)
        free_ms += [x for x in (before, after) if x]
    if frozen_ms and free_ms:
        ratio = statistics.mean(frozen_ms) / statistics.mean(free_ms)
        print(
            f"step time frozen / not frozen: {ratio:.3f} "
            f"(means {statistics.mean(frozen_ms):.1f} vs {statistics.mean(free_ms):.1f} ms)"
        )


if __name__ == "__main__":
    main()
