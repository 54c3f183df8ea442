"""Exports: SFT/DPO/RL files as TRL and HF datasets read them, and eval metrics by hand."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rollout_ray import storage
from rollout_ray.exports import EXPORTERS, eval_table, export, options, pass_at_k
from rollout_ray.output import manifest
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import PLAN_SCHEMA, Commit, rollouts_table, sampling_record

# ---------------------------------------------------------------------------- fake outputs


def rollout(task: str, index: int, reward: float | None, **fields: Any) -> dict[str, Any]:
    """A committed rollout record; `_shard` and `_round` say which piece holds it."""
    record = {
        "dataset": "ds",
        "task_id": task,
        "rollout_index": index,
        "prompt_messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {task}"},
        ],
        "response_text": f"answer {task}/{index}",
        "finish_reason": "stop",
        "prompt_tokens": 3,
        "output_tokens": 2,
        "prompt_token_ids": [1, 2, 3],
        "output_token_ids": [10 + index, 20 + index],
        "output_logprobs": [-0.5, -0.25],
        "reward": reward,
        "verifier": "exact",
        "verifier_details": json.dumps({"extracted_answer": None}),
        "model": "tiny",
        "sampling": sampling_record({"temperature": 1.0, "max_tokens": 8}),
        "attempt": 1,
    }
    record.update(fields)
    return record


def write_piece(output: str, dataset: str, shard_id: str, round_: int, table: pa.Table) -> Commit:
    """Write one piece's data file as the pipeline lays it out; returns its commit record."""
    name = f"part-{shard_id}-r{round_}.parquet"
    uri = storage.join(Layout(output).data_dir(dataset), name)
    storage.write_parquet_atomic(uri, table)
    return Commit(
        **{
            "piece_id": f"{shard_id}-r{round_}",
            "shard_id": shard_id,
            "dataset": dataset,
            "round": round_,
            "data_file": uri,
            "failures_file": None,
            "n_expected": table.num_rows,
            "n_ok": table.num_rows,
            "n_failed": 0,
            "n_retryable": 0,
            "committed_at": manifest.now_utc(),
        }
    )


def write_job(output: str, commits: list[Commit]) -> str:
    """The manifest around written pieces: plan.parquet, job.json, commit records."""
    layout = Layout(output)
    shards = sorted({(c.dataset, c.shard_id) for c in commits})
    plan = [
        {
            "shard_id": shard,
            "dataset": dataset,
            "file_uri": f"{dataset}.jsonl",
            "file_key": dataset,
            "format": "jsonl",
            "first_row": 0,
            "num_rows": 1,
            "num_repeats": 1,
        }
        for dataset, shard in shards
    ]
    storage.write_parquet_atomic(layout.plan, pa.Table.from_pylist(plan, schema=PLAN_SCHEMA))
    storage.write_json_atomic(layout.job, {"fake": True})
    manifest.write_commits(layout, commits)
    return output


def fake_output(root: Path, records: list[dict[str, Any]]) -> str:
    """A committed job output holding `records`, split into pieces by their `_shard`
    (default: one shard per dataset) and `_round` (default 0), in the given order."""
    pieces: dict[tuple[str, str, int], list[dict]] = {}
    for record in records:
        shard = record.get("_shard", f"{record['dataset']}-0")
        pieces.setdefault((record["dataset"], shard, record.get("_round", 0)), []).append(record)
    output = str(root / "out")
    commits = [
        write_piece(output, dataset, shard, round_, rollouts_table(rows))
        for (dataset, shard, round_), rows in pieces.items()
    ]
    return write_job(output, commits)


def group(task: str, rewards: list[float | None], **fields: Any) -> list[dict[str, Any]]:
    return [rollout(task, i, r, **fields) for i, r in enumerate(rewards)]


def read(dest: Path) -> list[dict]:
    if dest.suffix == ".parquet":
        return pq.read_table(dest).to_pylist()
    return [json.loads(line) for line in dest.read_text().rstrip("\n").split("\n")]


def load_hf(dest: Path, tmp_path: Path):
    import datasets

    builder = "parquet" if dest.suffix == ".parquet" else "json"
    return datasets.load_dataset(
        builder, data_files=str(dest), split="train", cache_dir=str(tmp_path / "hf")
    )


# ---------------------------------------------------------------------------- SFT


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_sft_is_trl_conversational(tmp_path, suffix):
    from trl.data_utils import is_conversational

    out = fake_output(tmp_path, group("t1", [1.0, 0.0]) + group("t2", [None]))
    dest = tmp_path / f"sft{suffix}"
    report = export("sft", out, str(dest))
    assert (report.rows_written, report.tasks_seen) == (3, 2)
    data = load_hf(dest, tmp_path)
    # One of TRL's layouts per row (messages by default); TRL refuses a row with both.
    assert "messages" in data.column_names
    assert not {"prompt", "completion"} & set(data.column_names)
    example = data[0]
    assert is_conversational(example)
    assert example["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "question t1"},
        {"role": "assistant", "content": "answer t1/0"},
    ]
    assert (example["task_id"], example["rollout_index"], example["dataset"]) == ("t1", 0, "ds")
    assert data[2]["reward"] is None
    split = tmp_path / f"pc{suffix}"
    export("sft", out, str(split), format="prompt-completion")
    pc = load_hf(split, tmp_path)
    assert "messages" not in pc.column_names
    assert all(is_conversational({k: pc[0][k]}) for k in ("prompt", "completion"))
    assert pc[0]["prompt"] + pc[0]["completion"] == example["messages"]


def test_sft_threshold_and_best_of_n(tmp_path):
    records = (
        group("a", [0.2, 0.9, 0.9, None])
        + group("b", [0.1, 0.3])
        + group("c", [None, None])
        + group("d", [1.0])
    )
    out = fake_output(tmp_path, records)
    dest = tmp_path / "sft.jsonl"

    report = export("sft", out, str(dest), threshold=0.5)
    assert [(r["task_id"], r["rollout_index"]) for r in read(dest)] == [
        ("a", 1),
        ("a", 2),
        ("d", 0),
    ]
    assert report.extra["skipped_unscored"] == 3
    assert report.extra["below_threshold"] == 3

    export("sft", out, str(dest), best_of_n=True)  # a: tie 0.9/0.9 -> lowest index
    assert [(r["task_id"], r["rollout_index"]) for r in read(dest)] == [
        ("a", 1),
        ("b", 1),
        ("d", 0),
    ]

    export("sft", out, str(dest), best_of_n=True, threshold=0.5)
    assert [(r["task_id"], r["rollout_index"]) for r in read(dest)] == [("a", 1), ("d", 0)]


# ---------------------------------------------------------------------------- DPO


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_dpo_is_trl_preference(tmp_path, suffix):
    from trl.data_utils import is_conversational

    out = fake_output(tmp_path, group("t", [0.0, 1.0, 0.5]))
    dest = tmp_path / f"dpo{suffix}"
    export("dpo", out, str(dest))
    data = load_hf(dest, tmp_path)
    assert {"prompt", "chosen", "rejected"} <= set(data.column_names)
    row = data[0]
    assert is_conversational(row)
    assert all(is_conversational({k: row[k]}) for k in ("prompt", "chosen", "rejected"))
    assert row["prompt"][-1]["role"] == "user"
    assert row["chosen"] == [{"role": "assistant", "content": "answer t/1"}]
    assert row["rejected"] == [{"role": "assistant", "content": "answer t/0"}]
    assert (row["reward_chosen"], row["reward_rejected"]) == (1.0, 0.0)
    assert (row["chosen_rollout_index"], row["rejected_rollout_index"]) == (1, 0)


def test_dpo_min_gap_ties_and_skips(tmp_path):
    records = (
        group("ties", [0.0, 1.0, 0.0, 1.0])  # chosen 1, rejected 0: lowest index each
        + group("small", [0.4, 0.6])
        + group("equal", [0.5, 0.5, 0.5])
        + group("single", [1.0, None])
        + group("none", [None])
        + group("wide", [None, 0.9, 0.1])
    )
    out = fake_output(tmp_path, records)
    dest = tmp_path / "dpo.jsonl"

    report = export("dpo", out, str(dest))
    rows = {r["task_id"]: r for r in read(dest)}
    assert set(rows) == {"ties", "small", "wide"}
    assert (rows["ties"]["chosen_rollout_index"], rows["ties"]["rejected_rollout_index"]) == (1, 0)
    assert (rows["wide"]["chosen_rollout_index"], rows["wide"]["rejected_rollout_index"]) == (1, 2)
    assert report.extra["skipped_all_equal"] == 1
    assert report.extra["skipped_fewer_than_2_scored"] == 2

    report = export("dpo", out, str(dest), min_gap=0.5)
    assert {r["task_id"] for r in read(dest)} == {"ties", "wide"}
    assert report.extra["pairs"] == 2 and report.tasks_seen == 6
    assert report.extra["pair_share"] == pytest.approx(2 / 6)
    assert report.extra["skipped_gap_below_min"] == 1
    assert report.extra["skipped_all_equal"] == 1

    # A gap exactly equal to min_gap is kept.
    export("dpo", out, str(dest), min_gap=0.8)
    assert {r["task_id"] for r in read(dest)} == {"ties", "wide"}


# ---------------------------------------------------------------------------- RL


def test_rl_advantages(tmp_path):
    records = (
        group("a", [1.0, 0.0, 0.0, 0.0])
        + group("b", [1.0, 0.0, 0.0, 1.0])
        + group("one", [0.7])
        + group("flat", [0.1, 0.1, 0.1])
        + group("gap", [2.0, None, 0.0])
    )
    out = fake_output(tmp_path, records)
    dest = tmp_path / "rl.parquet"
    report = export("rl", out, str(dest))
    rows = {(r["task_id"], r["rollout_index"]): r for r in read(dest)}
    assert report.extra["skipped_unscored"] == 1 and report.rows_written == 14
    # a: mean 0.25, sample std sqrt(0.75 / 3) = 0.5
    assert rows["a", 0]["advantage"] == pytest.approx(0.75 / (0.5 + 1e-4), abs=1e-12)
    assert rows["a", 1]["advantage"] == pytest.approx(-0.25 / (0.5 + 1e-4), abs=1e-12)
    # b: mean 0.5, sample std sqrt(1 / 3)
    assert rows["b", 3]["advantage"] == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1e-4))
    assert rows["one", 0]["advantage"] == 0.0 and rows["one", 0]["group_size"] == 1
    assert all(rows["flat", i]["advantage"] == 0.0 for i in range(3))
    # gap: the null reward is left out of the group (size 2, std sqrt(2))
    assert rows["gap", 0]["group_size"] == 2 and ("gap", 1) not in rows
    assert rows["gap", 2]["advantage"] == pytest.approx(-1.0 / (math.sqrt(2) + 1e-4))
    row = rows["a", 0]
    assert row["prompt_token_ids"] == [1, 2, 3] and row["response_token_ids"] == [10, 20]
    assert row["response_logprobs"] == [-0.5, -0.25]
    assert row["sampling"]["temperature"] == 1.0 and row["model"] == "tiny"
    assert row["finish_reason"] == "stop" and row["group_size"] == 4

    export("rl", out, str(dest), scale="none")
    rows = {(r["task_id"], r["rollout_index"]): r for r in read(dest)}
    assert rows["a", 0]["advantage"] == pytest.approx(0.75)
    assert rows["gap", 0]["advantage"] == pytest.approx(1.0)
    assert rows["one", 0]["advantage"] == 0.0


def test_rl_needs_token_ids_and_leaves_no_partial_file(tmp_path):
    records = group("ok", [1.0, 0.0], _shard="s0") + group(
        "bare", [1.0, 0.0], _shard="s1", output_token_ids=None, output_logprobs=None
    )
    out = fake_output(tmp_path, records)
    dest = tmp_path / "rl.jsonl"
    dest.write_text("previous\n")
    rerun = re.escape("sampling.return_token_ids=true sampling.logprobs=true")
    with pytest.raises(ValueError, match=rerun):
        export("rl", out, str(dest))
    assert dest.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("rl.")] == ["rl.jsonl"]


# ---------------------------------------------------------------------------- grouping


def test_grouping_survives_shuffle_retry_rounds_and_shards(tmp_path):
    records = group("a", [0.0, 1.0, 0.5, 0.25]) + group("b", [0.0, 1.0, 1.0, 0.0])
    records += group("c", [0.3, 0.6], dataset="other", _shard="o0")
    random.Random(7).shuffle(records)
    for record in records:  # a's rollouts 1 and 3 came from a retry round of the shard
        if record["task_id"] == "a" and record["rollout_index"] in (1, 3):
            record["_round"] = 1
    out = fake_output(tmp_path, records)
    dest = tmp_path / "x.jsonl"

    report = export("dpo", out, str(dest))
    rows = {r["task_id"]: r for r in read(dest)}
    assert report.tasks_seen == 3
    assert (rows["a"]["chosen_rollout_index"], rows["a"]["rejected_rollout_index"]) == (1, 0)
    assert (rows["b"]["chosen_rollout_index"], rows["b"]["rejected_rollout_index"]) == (1, 0)
    assert rows["c"]["dataset"] == "other"

    export("rl", out, str(dest), datasets=["ds"])
    rl = read(dest)
    assert {r["dataset"] for r in rl} == {"ds"} and {r["group_size"] for r in rl} == {4}
    assert [r["rollout_index"] for r in rl if r["task_id"] == "a"] == [0, 1, 2, 3]

    export("sft", out, str(dest), best_of_n=True)
    assert {(r["task_id"], r["rollout_index"]) for r in read(dest)} == {
        ("a", 1),
        ("b", 1),
        ("c", 1),
    }


# ---------------------------------------------------------------------------- eval


def answers(task: str, rewards: list[float], picked: list[str | None], **fields: Any) -> list:
    return [
        rollout(task, i, r, verifier_details=json.dumps({"extracted_answer": a}), **fields)
        for i, (r, a) in enumerate(zip(rewards, picked, strict=True))
    ]


def test_pass_at_k_against_hand_table(tmp_path):
    # n = 4 everywhere; c = 0, 1, 2, 4 correct rollouts.
    records = []
    for c in (0, 1, 2, 4):
        records += answers(f"c{c}", [1.0] * c + [0.0] * (4 - c), ["x"] * 4)
    out = fake_output(tmp_path, records)
    report = export("eval", out, str(tmp_path / "eval.json"))
    found = report.extra["datasets"]["ds"]
    assert found["ks"] == [1, 2, 4]
    expected = {
        1: [0.0, 1 - math.comb(3, 1) / math.comb(4, 1), 1 - math.comb(2, 1) / math.comb(4, 1), 1],
        2: [0.0, 1 - math.comb(3, 2) / math.comb(4, 2), 1 - math.comb(2, 2) / math.comb(4, 2), 1],
        4: [0.0, 1.0, 1.0, 1.0],
    }
    assert expected[1] == [0.0, 0.25, 0.5, 1] and expected[2][2] == pytest.approx(5 / 6)
    for k, values in expected.items():
        metric = found["metrics"][f"pass@{k}"]
        mean = sum(values) / 4
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
        assert metric["value"] == pytest.approx(mean)
        assert metric["stderr"] == pytest.approx(std / 2)
        assert (metric["tasks"], metric["tasks_excluded"]) == (4, 0)
    assert found["metrics"]["mean_reward"]["value"] == pytest.approx((0 + 0.25 + 0.5 + 1) / 4)
    assert json.loads((tmp_path / "eval.json").read_text()) == report.extra
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(200, 150, 100) == 1.0


def test_majority_at_k_ties_no_answers_and_excluded(tmp_path):
    records = (
        answers("tie", [1, 1, 0, 0], ["A", "A", "B", "B"])  # @4: A 2 vs B 2 -> 0.5
        + answers("late", [0, 0, 1, 0], [None, "C", "D", None])  # @1: none -> 0
        + answers("mute", [0, 0, 0, 0], [None, None, None, None])
        + answers("short", [1, 1], ["A", "A"])  # n = 2: left out of k = 4
    )
    out = fake_output(tmp_path, records)
    metrics = export("eval", out, str(tmp_path / "e.json")).extra
    found = metrics["datasets"]["ds"]["metrics"]
    assert found["majority@1"]["value"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert found["majority@2"]["value"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert found["majority@4"]["value"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert (found["majority@4"]["tasks"], found["majority@4"]["tasks_excluded"]) == (3, 1)
    assert (found["pass@4"]["tasks"], found["pass@4"]["tasks_excluded"]) == (3, 1)
    assert found["no_answer_rate"]["value"] == pytest.approx((0 + 0.5 + 1 + 0) / 4)
    rendered = eval_table(metrics)
    assert rendered.row_count == len(found)

    explicit = export("eval", out, str(tmp_path / "e.json"), ks=[3], correct_threshold=1.0)
    only = explicit.extra["datasets"]["ds"]["metrics"]
    assert set(only) == {"mean_reward", "no_answer_rate", "pass@3", "majority@3"}
    # late's first 3: no answer, C (wrong), D (right): a tie worth 0.5.
    assert only["majority@3"]["value"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_eval_without_extracted_answers_skips_majority(tmp_path):
    records = group("a", [1.0, 0.0], verifier_details=json.dumps({"score": 1}))
    records += group("b", [0.0, 0.0, 0.0], verifier_details=None)
    out = fake_output(tmp_path, records)
    found = export("eval", out, str(tmp_path / "e.json")).extra["datasets"]["ds"]
    assert found["answers_reported"] is False
    assert found["metrics"]["no_answer_rate"] is None
    assert not any(name.startswith("majority@") for name in found["metrics"])
    assert found["ks"] == [1, 2, 3]
    assert found["metrics"]["pass@3"]["tasks_excluded"] == 1
    assert found["metrics"]["pass@1"]["value"] == pytest.approx((0.5 + 0) / 2)
    assert eval_table(export("eval", out, str(tmp_path / "e.json")).extra).row_count == 5


# ---------------------------------------------------------------------------- API and output


def test_export_rejects_bad_kinds_options_and_destinations(tmp_path):
    out = fake_output(tmp_path, group("a", [1.0, 0.0]))
    dest = str(tmp_path / "x.jsonl")
    assert set(EXPORTERS) == {"sft", "dpo", "rl", "eval", "mix", "gym"}
    assert options("dpo") == {
        "min_gap": 0.0,
        "datasets": None,
        "val_fraction": None,
        "seed": 0,
        "shuffle": False,
        "keep_reasoning": False,
    }
    bad = [
        (("kto", out, dest), {}, "unknown export kind"),
        (("sft", out, dest), {"treshold": 1}, "unknown option.*treshold"),
        (("sft", out, dest), {"threshold": "high"}, "threshold must be a number"),
        (("sft", out, dest), {"best_of_n": "yes"}, "best_of_n"),
        (("dpo", out, dest), {"min_gap": -1}, "min_gap must be >= 0"),
        (("rl", out, dest), {"scale": "batch"}, "scale must be one of"),
        (("eval", out, str(tmp_path / "e.json")), {"ks": [0]}, "positive integers"),
        (("eval", out, dest), {}, "must end in .json"),
        (("sft", out, str(tmp_path / "x.csv")), {}, "must end in .jsonl or .parquet"),
        (("sft", out, dest), {"datasets": ["nope"]}, "dataset.*nope.*it has: ds"),
    ]
    for args, kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            export(*args, **kwargs)
    assert not (tmp_path / "x.jsonl").exists()


def test_split_by_task_shuffle_several_outputs_and_dpo_gaps(tmp_path):
    records = []
    for t in range(40):
        records += group(f"t{t}", [1.0, 0.0, 0.5])
    out = fake_output(tmp_path / "a", records)
    # A validation share by task: no task on both sides, the same split every time.
    dest = tmp_path / "sft.jsonl"
    report = export("sft", out, str(dest), val_fraction=0.25, seed=3)
    train, val = read(dest), read(tmp_path / "sft.val.jsonl")
    assert len(train) + len(val) == 120 and report.extra["val_rows"] == len(val)
    assert {r["task_id"] for r in train}.isdisjoint({r["task_id"] for r in val})
    assert 10 <= len({r["task_id"] for r in val}) <= 20  # about a quarter of 40 tasks
    export("sft", out, str(tmp_path / "again.jsonl"), val_fraction=0.25, seed=3)
    assert read(tmp_path / "again.val.jsonl") == val
    # Shuffled: the same rows, in another order, the same order for the same seed.
    export("sft", out, str(tmp_path / "s1.jsonl"), shuffle=True, seed=7)
    export("sft", out, str(tmp_path / "s2.jsonl"), shuffle=True, seed=7)
    shuffled = read(tmp_path / "s1.jsonl")
    assert shuffled == read(tmp_path / "s2.jsonl") and shuffled != read(tmp_path / "again.jsonl")
    key = lambda r: (r["task_id"], r["rollout_index"])  # noqa: E731
    assert sorted(map(key, shuffled)) == sorted(map(key, train + val))
    # Two outputs in one export; DPO pairs carry their gap and the report its means.
    other = fake_output(tmp_path / "b", group("x", [0.2, 0.9]))
    report = export("dpo", [out, other], str(tmp_path / "pairs.jsonl"))
    pairs = read(tmp_path / "pairs.jsonl")
    assert len(pairs) == 41 and report.rows_written == 41
    assert sorted(round(p["reward_gap"], 6) for p in pairs) == [0.7] + [1.0] * 40
    assert report.extra["mean_reward_gap"] == pytest.approx((40 * 1.0 + 0.7) / 41)
    assert report.extra["mean_reward_chosen"] == pytest.approx((40 * 1.0 + 0.9) / 41)
    with pytest.raises(ValueError, match="mix export takes one output"):
        export("mix", [out, other], str(tmp_path / "m.jsonl"))
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        export("rl", out, str(tmp_path / "r.parquet"), val_fraction=1.5)


def test_reasoning_is_left_out_unless_kept(tmp_path):
    records = [
        rollout("t", 0, 1.0, response_text="42", reasoning_text="six times seven"),
        rollout("t", 1, 0.0, response_text="41", reasoning_text=None),
    ]
    out = fake_output(tmp_path, records)
    export("sft", out, str(tmp_path / "a.jsonl"))
    assert [r["messages"][-1]["content"] for r in read(tmp_path / "a.jsonl")] == ["42", "41"]
    export("sft", out, str(tmp_path / "b.jsonl"), keep_reasoning=True)
    kept = [r["messages"][-1]["content"] for r in read(tmp_path / "b.jsonl")]
    assert kept == ["<think>\nsix times seven\n</think>\n\n42", "41"]
    export("dpo", out, str(tmp_path / "p.jsonl"), keep_reasoning=True)
    pair = read(tmp_path / "p.jsonl")[0]
    assert (
        pair["chosen"][0]["content"].startswith("<think>\nsix")
        and pair["rejected"][0]["content"] == "41"
    )


def test_export_to_fsspec_uri(tmp_path):
    import fsspec

    out = fake_output(tmp_path, group("a", [1.0, 0.0]))
    report = export("sft", out, "memory://exports/sft.jsonl")
    fs = fsspec.filesystem("memory")
    lines = fs.cat_file("/exports/sft.jsonl").decode().splitlines()
    assert report.rows_written == len(lines) == 2
    assert fs.ls("/exports", detail=False) == ["/exports/sft.jsonl"]


def test_an_export_with_nothing_to_write_says_why_and_writes_nothing(tmp_path):
    """Seen before: an empty file and success (`export mix --threshold 1` where one
    dataset had no rewards)."""
    from rollout_ray.exports import NothingToExport

    out = fake_output(
        tmp_path,
        group("a", [0.5, 0.5])
        + group("b", [0.25, None])
        + group("u", [None, None], dataset="unscored", _shard="u0"),
    )
    both = {"ds": 1, "unscored": 1}
    expected = [
        (
            "dpo",
            {},
            "no task makes a pair: of 3 tasks, 1 have equal rewards, 0 a gap below min_gap 0, "
            "and 2 fewer than 2 rollouts with a reward",
        ),
        (
            "sft",
            {"threshold": 1},
            "0 of 6 rollouts reach threshold 1 (highest reward 0.5; 3 without a reward)",
        ),
        ("sft", {"threshold": 1, "datasets": ["unscored"]}, "none of its 2 rollouts has a reward"),
        ("rl", {"datasets": ["unscored"]}, "none of its 2 rollouts has a reward"),
        ("eval", {"datasets": ["unscored"]}, "no dataset has a rollout with a reward"),
        ("mix", {"threshold": 0.5, "weights": both}, "dataset unscored has no rewards"),
        (
            "mix",
            {"threshold": 1, "weights": both},
            "dataset ds: 0 of its rollouts reach threshold 1 (highest reward 0.5); dataset "
            "unscored has no rewards",
        ),
    ]
    empty = write_job(str(tmp_path / "empty"), [])  # a job that committed nothing
    for kind in ("sft", "dpo", "rl", "gym"):
        expected.append((kind, {"output": empty}, "the output has no committed rollouts"))
    for kind, given, reason in expected:
        name = "old.json" if kind == "eval" else "old.parquet" if kind == "rl" else "old.jsonl"
        dest = tmp_path / name
        dest.write_text("an earlier export\n")  # left as it was
        with pytest.raises(NothingToExport) as refused:
            export(kind, given.pop("output", out), str(dest), **given)
        assert f"nothing to export to {dest} (not written): " in str(refused.value), kind
        assert reason in str(refused.value), (kind, given)
        assert dest.read_text() == "an earlier export\n"


def test_json_lines_match_json_loads():
    from rollout_ray.exports.writer import json_lines

    rows = [
        {
            "text": 'say "hi" \\ \n\t\r \x1b[0m \x00 é 日本 \u2028',
            "whole": 1.0,
            "bad": float("nan"),
            "n": 3,
            "flag": True,
            "nested": [[1, 2], []],
            "messages": [{"role": "user", "content": 'x"'}],
            "small": [0.1, -2.0, float("-inf")],
        },
        {k: None for k in ["text", "whole", "bad", "n", "flag", "nested", "small"]}
        | {"messages": []},
    ]
    table = pa.Table.from_pylist(rows * 3)
    table = table.set_column(7, "small", table["small"].cast(pa.list_(pa.float32())))
    batch = table.combine_chunks().to_batches()[0].slice(2, 3)  # a slice, as the writer sees
    lines = bytes(json_lines(batch)).decode().split("\n")
    assert lines[-1] == "" and len(lines) == 4
    first = json.loads(lines[0])
    assert first == rows[0] | {"bad": None, "small": [0.1, -2.0, None]}
    assert lines[0].startswith('{"text":') and '"whole":1.0' in lines[0]
    assert json.loads(lines[1]) == rows[1]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_small_buffers_and_batches_keep_every_row_in_order(tmp_path, monkeypatch, suffix):
    from rollout_ray.exports import writer

    monkeypatch.setattr(writer, "BUFFER_ROWS", 3)
    monkeypatch.setattr(writer, "JSON_BATCH_ROWS", 2)
    records = [r for t in range(5) for r in group(f"t{t}", [0.0, 1.0], _shard=f"s{t % 2}")]
    out = fake_output(tmp_path, records)
    dest = tmp_path / f"sft{suffix}"
    assert export("sft", out, str(dest)).rows_written == 10
    rows = read(dest)
    assert sorted((r["task_id"], r["rollout_index"]) for r in rows) == sorted(
        (r["task_id"], r["rollout_index"]) for r in records
    )
    assert [r["task_id"] for r in rows[:6]] == ["t0", "t0", "t2", "t2", "t4", "t4"]


def test_eval_edge_cases_per_dataset(tmp_path):
    records = answers("a", [1.0, 0.0], ["A", "B"]) + group(
        "u", [None, None], dataset="unscored", _shard="u0"
    )
    out = fake_output(tmp_path, records)
    found = export("eval", out, str(tmp_path / "e.json"), ks=[1, 8]).extra["datasets"]
    assert found["ds"]["metrics"]["pass@8"] == {
        "value": None,
        "stderr": None,
        "tasks": 0,
        "tasks_excluded": 1,
    }
    assert found["ds"]["metrics"]["majority@1"]["value"] == 1.0
    assert found["ds"]["metrics"]["pass@1"]["stderr"] is None  # one task: no spread
    unscored = found["unscored"]
    assert (unscored["tasks"], unscored["unscored_rollouts"]) == (1, 2)
    assert unscored["metrics"]["mean_reward"]["value"] is None
    assert unscored["metrics"]["pass@1"]["tasks_excluded"] == 1


# ---------------------------------------------------------------------------- the CLI


def test_the_cli_takes_each_kinds_options_from_the_registry(tmp_path):
    from typer.testing import CliRunner

    from rollout_ray.cli import app

    output = fake_output(tmp_path, group("t0", [0.0, 1.0, 0.5]) + group("t1", [1.0, 1.0]))
    runner = CliRunner()
    listed = runner.invoke(app, ["export-kinds"])
    assert listed.exit_code == 0
    for kind in EXPORTERS:  # every kind, with every option its function takes
        line = next(x for x in listed.output.splitlines() if x.startswith(f"{kind}:"))
        assert all(f"{name}=" in line for name in options(kind))
    # A flag reaches the kind that takes it ...
    done = runner.invoke(
        app, ["export", "sft", output, str(tmp_path / "a.jsonl"), "--threshold", "1"]
    )
    assert done.exit_code == 0, done.output
    assert len(read(tmp_path / "a.jsonl")) == 3  # the three rollouts with reward 1
    # ... an option without a flag goes by -o key=value ...
    done = runner.invoke(
        app, ["export", "eval", output, str(tmp_path / "e.json"), "-o", "ks=[1,2]"]
    )
    assert done.exit_code == 0, done.output
    assert "pass@2" in (tmp_path / "e.json").read_text()
    # ... and a flag the kind does not take is refused by name, not silently dropped.
    done = runner.invoke(
        app, ["export", "dpo", output, str(tmp_path / "d.jsonl"), "--threshold", "1"]
    )
    refused = " ".join(done.output.split())  # the one handler prints it (see test_cli)
    assert done.exit_code == 2 and "threshold" in refused and "min_gap" in refused
    assert not (tmp_path / "d.jsonl").exists()
