"""Metrics: a Prometheus endpoint served by the driver, and Ray's metrics API.

The coordinator already counts everything (commits, live partials, engine stats), so
both exporters read its progress snapshot: the Prometheus collector renders the latest
snapshot on each scrape (no work between scrapes), and the coordinator mirrors the
same figures into `ray.util.metrics` so they appear in the Ray dashboard.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rollout_ray.output.schema import Commit

log = logging.getLogger(__name__)


class ProgressCollector:
    """A prometheus_client collector over the latest progress snapshot."""

    def __init__(self, job: str):
        self.job = job
        self.latest: dict[str, Any] = {}
        self._lock = threading.Lock()

    def update(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self.latest = progress

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            progress = self.latest
        if not progress:
            return
        job = self.job
        rollouts = CounterMetricFamily(
            "rollout_ray_rollouts",
            "Rollouts settled, by outcome.",
            labels=["rollout_job", "dataset", "status"],
        )
        output = CounterMetricFamily(
            "rollout_ray_output_tokens",
            "Output tokens generated.",
            labels=["rollout_job", "dataset"],
        )
        prompt = CounterMetricFamily(
            "rollout_ray_prompt_tokens", "Prompt tokens sent.", labels=["rollout_job", "dataset"]
        )
        done = GaugeMetricFamily(
            "rollout_ray_shards_done", "Shards committed.", labels=["rollout_job", "dataset"]
        )
        total = GaugeMetricFamily(
            "rollout_ray_shards_planned", "Shards planned.", labels=["rollout_job", "dataset"]
        )
        reward = HistogramMetricFamily(
            "rollout_ray_reward", "Rewards.", labels=["rollout_job", "dataset"]
        )
        for name, counts in progress.get("datasets", {}).items():
            rollouts.add_metric([job, name, "ok"], counts["ok"])
            rollouts.add_metric([job, name, "failed"], counts["failed"])
            output.add_metric([job, name], counts["output_tokens"])
            prompt.add_metric([job, name], counts["prompt_tokens"])
            done.add_metric([job, name], counts.get("shards_done", 0))
            total.add_metric([job, name], counts.get("shards_total", 0))
            stats = (counts.get("stats") or {}).get("reward")
            if stats and stats.get("histogram"):
                reward.add_metric(
                    [job, name],
                    _cumulative(stats["histogram"]),
                    sum_value=stats["mean"] * stats["count"],
                )
        run = progress.get("run", {})
        gauges = {
            "rollout_ray_in_flight_requests": (
                "Requests the engines are working on.",
                run.get("in_flight_requests", 0),
            ),
            "rollout_ray_output_tokens_per_second": (
                "Output tokens per second, this run.",
                run.get("output_tokens_per_s", 0),
            ),
            "rollout_ray_eta_seconds": (
                "Seconds until this run is done, at the current rate.",
                run.get("eta_s") or 0,
            ),
        }
        yield from (rollouts, output, prompt, done, total, reward)
        for metric, (text, value) in gauges.items():
            gauge = GaugeMetricFamily(metric, text, labels=["rollout_job"])
            gauge.add_metric([job], value)
            yield gauge
        retries = CounterMetricFamily(
            "rollout_ray_retries", "Retries.", labels=["rollout_job", "reason"]
        )
        for reason, value in (run.get("retries") or {}).items():
            retries.add_metric([job, reason], value)
        yield retries
        restarts = CounterMetricFamily(
            "rollout_ray_engine_restarts", "Engine actors started again.", labels=["rollout_job"]
        )
        restarts.add_metric([job], run.get("engine_restarts", 0))
        yield restarts


def _cumulative(histogram: dict[str, int]) -> list[tuple[str, int]]:
    """Prometheus buckets (le=0, 0.1, ..., 1, +Inf) from aggregates' labelled bins."""
    from rollout_ray.output.aggregates import HIST_LABELS

    buckets, running = [], 0
    for i, label in enumerate(HIST_LABELS[:-1]):
        running += histogram.get(label, 0)
        buckets.append((f"{i / 10:.1f}", running))
    buckets.append(("+Inf", running + histogram.get(">1", 0)))
    return buckets


def serve_prometheus(collector: ProgressCollector, port: int, host: str = "127.0.0.1") -> bool:
    """Expose the collector on http://host:port/metrics; False if the port is taken."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(collector)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("metrics: port %d is not free (%s); Prometheus endpoint off", port, exc)
        return False
    return True


class RayMetrics:
    """The same figures through Ray's metrics API, for the Ray dashboard."""

    def __init__(self, job: str):
        from ray.util.metrics import Counter, Gauge

        self.job = job
        tags = ("rollout_job", "dataset")
        self.rollouts = Counter("rollout_ray_rollouts", "Rollouts committed.", (*tags, "status"))
        self.tokens = Counter("rollout_ray_output_tokens", "Output tokens.", tags)
        self.rate = Gauge(
            "rollout_ray_output_tokens_per_second", "Output tokens/s.", ("rollout_job",)
        )
        self.eta = Gauge("rollout_ray_eta_seconds", "ETA of this run.", ("rollout_job",))
        self.in_flight = Gauge(
            "rollout_ray_in_flight_requests", "Requests in engines.", ("rollout_job",)
        )

    def on_commit(self, record: Commit) -> None:
        tags = {"rollout_job": self.job, "dataset": record.dataset}
        if record.n_ok:
            self.rollouts.inc(record.n_ok, {**tags, "status": "ok"})
        if record.n_failed:
            self.rollouts.inc(record.n_failed, {**tags, "status": "failed"})
        if record.output_tokens:
            self.tokens.inc(record.output_tokens, tags)

    def on_progress(self, run: dict[str, Any]) -> None:
        tags = {"rollout_job": self.job}
        self.rate.set(run.get("output_tokens_per_s") or 0, tags)
        self.eta.set(run.get("eta_s") or 0, tags)
        self.in_flight.set(run.get("in_flight_requests") or 0, tags)
