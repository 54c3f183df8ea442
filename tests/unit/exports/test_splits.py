"""The seed of a split and of a shuffle is used: another seed gives another validation
set and another order (docs/testing.md once listed this promise with no test that fails
when the seed is dropped: every export test passed with it ignored)."""

from __future__ import annotations

from test_exports import fake_output, group, read

from rollout_ray.exports import export


def test_the_seed_picks_the_validation_tasks_and_the_order(tmp_path):
    records = []
    for t in range(40):
        records += group(f"t{t}", [1.0, 0.0, 0.5])
    out = fake_output(tmp_path / "a", records)

    def val_tasks(seed: int) -> set[str]:
        export("sft", out, str(tmp_path / f"v{seed}.jsonl"), val_fraction=0.25, seed=seed)
        return {r["task_id"] for r in read(tmp_path / f"v{seed}.val.jsonl")}

    def order(seed: int) -> list[tuple[str, int]]:
        export("rl", out, str(tmp_path / f"s{seed}.jsonl"), shuffle=True, seed=seed)
        return [(r["task_id"], r["rollout_index"]) for r in read(tmp_path / f"s{seed}.jsonl")]

    assert val_tasks(3) == val_tasks(3) and val_tasks(3) != val_tasks(4)
    assert order(7) == order(7) and order(7) != order(8)
    assert sorted(order(7)) == sorted(order(8))  # the same rows, in another order
