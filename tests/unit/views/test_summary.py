"""The end-of-job summary shows the verifier's own numeric fields, not only the reward."""

from __future__ import annotations

from rich.console import Console

from rollout_ray.output.aggregates import piece_stats, summarize
from rollout_ray.run.pipeline import JobResult
from rollout_ray.views.console import print_summary


def test_verifier_field_means_in_the_summary():
    records = [
        {"reward": r, "verifier_details": f'{{"accuracy": {a}, "extracted_answer": "B"}}'}
        for r, a in [(1.0, 1), (0.0, 0), (1.0, 1), (1.0, 0.5)]
    ]
    stats = summarize(piece_stats(records))
    counts = {"ok": 4, "expected": 4, "failed": 0, "prompt_tokens": 9, "output_tokens": 9}
    result = JobResult("out", "finished", 1.0, {"datasets": {"mcqa": {**counts, "stats": stats}}})
    console = Console(record=True, width=200)
    print_summary(console, result)
    text = console.export_text()
    assert "mcqa: verifier field means: accuracy 0.625 (n=4)" in text
    assert "extracted_answer" not in text  # not numeric: not averaged
