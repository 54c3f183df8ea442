"""A run's live figures, as the coordinator reports them in progress.json, on the
progress line and to Prometheus: rollouts to do, committed and in flight, tokens and
rates, the engines' own counters and starts."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rollout_ray.output.schema import Commit
from rollout_ray.run import ray_facts
from rollout_ray.run.tries import PieceTries


class RunFigures:
    def __init__(self) -> None:
        self.todo = 0
        self.committed = 0  # rollouts with an outcome in a commit of this run
        self.tokens = 0
        self.started = time.time()
        self.first_piece_at: float | None = None
        #: Rollouts done and their output tokens in pieces not committed yet.
        self.partials: dict[str, tuple[int, int]] = {}
        self.engine_stats: dict[str, dict[str, float]] = {}
        self.actor_starts: Counter[str] = Counter()
        self.engine_start_s = 0.0  # the slowest engine actor's start, for phases
        self.manifest_s = 0.0  # time spent writing commits and progress (for benchmarks)
        self.engine_config: dict[str, Any] = {}  # an engine's effective settings

    def start(self, todo: int) -> None:
        self.todo = todo
        self.started = time.time()

    def landed(self, record: Commit) -> None:
        self.committed += record.settled
        self.tokens += record.output_tokens
        self.partials.pop(record.piece_id, None)

    def actor_started(self, actor: str, start_s: float | None) -> None:
        self.actor_starts[actor] += 1
        if start_s is not None:
            self.engine_start_s = max(self.engine_start_s, start_s)

    def run(self, tries: PieceTries, restarted: bool, pieces_running: int = 0) -> dict[str, Any]:
        """The `run` part of progress."""
        in_flight = sum(n for n, _ in self.partials.values())
        elapsed = max(time.time() - self.started, 1e-6)
        done = self.committed + in_flight
        tokens = self.tokens + sum(t for _, t in self.partials.values())
        rate = done / elapsed
        engines = self.engine_stats.values()
        return {
            "todo": self.todo,
            "done": done,
            # Of `done`: committed (kept whatever happens next) and in flight.
            "committed": self.committed,
            "in_flight": in_flight,
            "pieces_running": pieces_running,
            "output_tokens": tokens,
            "elapsed_s": round(elapsed, 3),
            "rollouts_per_s": round(rate, 3),
            "output_tokens_per_s": round(tokens / elapsed, 3),
            "eta_s": round((self.todo - done) / rate, 1) if rate > 0 else None,
            "first_piece_at": self.first_piece_at,
            "in_flight_requests": sum(s.get("requests_running", 0) for s in engines),
            "retries": {
                **tries.counts(),
                "request": sum(s.get("retries", 0) for s in engines),
                "retry_after": sum(s.get("retry_after_waits", 0) for s in engines),
            },
            "pieces_redone_after_preemption": len(tries.preempted),
            "coordinator_restarted": restarted,
            "engine_starts": sum(self.actor_starts.values()),
            "engine_start_s": self.engine_start_s,
            "engine_restarts": sum(n - 1 for n in self.actor_starts.values() if n > 1),
            "manifest_s": round(self.manifest_s, 3),
            "coordinator_peak_rss_mb": round(ray_facts.peak_rss_mb(), 1),
            "engine_config": self.engine_config,
        }
