"""CPU priority on a local Ray that rollout-ray started: the engine actors at normal
priority, Ray's daemons and the job's bookkeeping below them.

An engine on CPU fills every core with its OpenMP team, and any other process that
wakes on one of those cores stalls the whole team at its next barrier. Beside a busy
engine actor, Ray's daemons, the dashboard, the coordinator, Ray Data's helper actors
and the driver take ~0.2 of 2 cores (docs/benchmarks.md, `cpu_share.py`); a process
taking 0.2 cores at equal priority cost a raw vLLM run ~11% of its tokens here, at nice
19 nothing outside the noise (`benchmarks/neighbour.py`). Lowered, they run in the
engine's idle moments instead of in its forward passes; a job on Ray ran 1.045-1.050x
as fast (docs/benchmarks.md, stop 33).

Only processes named below are lowered, never a worker that could later host an engine
(an idle worker, or the raylet, whose nice every new worker inherits). Lowering is one
way: an unprivileged process cannot raise a priority back, so this applies only to a
local Ray this process started and that ends with it. `ROLLOUT_RAY_LOWER_RAY=0` keeps
every process at the priority Ray gave it.
"""

from __future__ import annotations

import contextlib
import os
import threading

#: Ray's own daemons and the dashboard's processes: nothing on the path of a token.
IDLE_NICE = 19
#: What feeds or records the engines (the GCS, the coordinator, the piece feed, Ray
#: Data's scheduler in the driver): lowered, but with enough weight to keep up.
FEED_NICE = 10

#: Markers in a process's command line (or Ray's title for it) and the nice for it.
LOWERED: tuple[tuple[str, int], ...] = (
    ("ray/dashboard/dashboard.py", IDLE_NICE),
    ("ray-dashboard-", IDLE_NICE),
    ("ray/_private/log_monitor.py", IDLE_NICE),
    ("ray/autoscaler/_private/monitor.py", IDLE_NICE),
    ("ray::DashboardAgent", IDLE_NICE),
    ("ray::RuntimeEnvAgent", IDLE_NICE),
    ("ray::_StatsActor", IDLE_NICE),
    ("ray::ActorLocationTracker", IDLE_NICE),
    ("ray::_AutoscalingCoordinatorActor", FEED_NICE),
    ("ray::Coordinator", FEED_NICE),
    ("ray::ReadPendingPieces", FEED_NICE),
    ("gcs_server", FEED_NICE),
)

#: Seconds between looks for processes started since (Ray Data's actors come with the
#: pipeline, a restarted coordinator any time).
EVERY_S = 2.0


def enabled() -> bool:
    return os.environ.get("ROLLOUT_RAY_LOWER_RAY", "1") != "0"


def nice_for(cmdline: str) -> int | None:
    """The nice a process gets, or None to leave it (engines, idle workers, raylet)."""
    for mark, nice in LOWERED:
        if mark in cmdline:
            return nice
    return None


def lower(pid: int, nice: int, skip: int | None = None) -> None:
    """Every thread of a process to at least `nice`: on Linux a nice is a thread's,
    and a process's threads made before a change keep their own."""
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in threads:
        if tid == skip:
            continue
        with contextlib.suppress(OSError):
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)


def lower_once() -> None:
    """One look over this process's descendants (a local Ray's daemons and workers)
    and the driver's own threads but its main one."""
    import psutil

    me = psutil.Process()
    lower(me.pid, FEED_NICE, skip=threading.main_thread().native_id)
    found: dict[int, tuple[int, int | None]] = {}  # pid: (parent, nice)
    for proc in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found[proc.pid] = (proc.ppid(), nice_for(" ".join(proc.cmdline())))
    for pid, (parent, nice) in found.items():
        # Unnamed children of a daemon (the dashboard's forkserver and modules) are
        # lowered with it; a worker's own children (an engine's core) never are.
        while nice is None and parent in found:
            parent, above = found[parent]
            nice = above if above == IDLE_NICE else None
        if nice is not None:
            lower(pid, nice)


class Lowering:
    """Looks every few seconds while a job runs on the local Ray this process started."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-ray-priority", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a look that fails changes nothing
                lower_once()
            if self._stop.wait(EVERY_S):
                return

    def stop(self) -> None:
        self._stop.set()
