"""A job's statistics come from its commits alone: piece statistics merged must equal
the statistics of all rollouts at once, in any order and any cut into pieces."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from rollout_ray.output import aggregates


def records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        reward = rng.choice([None, 0.0, 1.0, rng.uniform(-1, 2)])
        details = json.dumps({"accuracy": rng.random(), "valid": rng.random() < 0.5, "why": "x"})
        out.append({"reward": reward, "latency_s": rng.uniform(0, 3), "verifier_details": details})
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_piece_statistics_equal_those_of_all_rollouts(seed):
    rows = records(500, seed)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(rows)), 7))
    pieces = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    rng.shuffle(pieces)
    merged: dict = {}
    for piece in pieces:
        merged_piece = json.loads(json.dumps(aggregates.piece_stats(piece)))  # as committed
        aggregates.merge(merged, merged_piece)
    summary = aggregates.summarize(merged)
    rewards = [r["reward"] for r in rows if r["reward"] is not None]
    reward = summary["reward"]
    assert reward["count"] == len(rewards)
    assert reward["mean"] == pytest.approx(statistics.fmean(rewards))
    assert reward["std"] == pytest.approx(statistics.stdev(rewards))
    assert (reward["min"], reward["max"]) == (min(rewards), max(rewards))
    assert sum(reward["histogram"].values()) == len(rewards)
    assert reward["histogram"]["<=0"] == sum(r <= 0 for r in rewards)
    assert reward["histogram"].get(">1", 0) == sum(r > 1 for r in rewards)
    accuracy = [json.loads(r["verifier_details"])["accuracy"] for r in rows]
    assert summary["verifier.accuracy"]["mean"] == pytest.approx(statistics.fmean(accuracy))
    assert "verifier.why" not in summary  # text fields are not averaged
