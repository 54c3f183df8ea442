"""Planning shards without parsing rows, and reading them back exactly once."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rollout_ray.config import DatasetConfig
from rollout_ray.errors import ConfigError
from rollout_ray.inputs.reading import read_shard
from rollout_ray.inputs.shards import plan_file
from rollout_ray.inputs.sources import discover
from rollout_ray.output.work import WorkItem


def rows_of(dataset: DatasetConfig, shard_size: int, limit=None):
    out = []
    for file in discover(dataset):
        for shard in plan_file(dataset, file, shard_size, limit):
            out.append((shard, read_shard(shard)))
    return out


@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize("shard_size", [1, 3, 7, 100])
def test_jsonl_shards_cover_every_line_once(tmp_path, shard_size, trailing_newline):
    path = tmp_path / "data.jsonl"
    text = "\n".join(json.dumps({"prompt": f"p{i}"}) for i in range(20))
    path.write_text(text + ("\n" if trailing_newline else ""))
    got = rows_of(DatasetConfig(path=str(path)), shard_size)
    prompts = [row.value["prompt"] for _, rows in got for row in rows]
    assert prompts == [f"p{i}" for i in range(20)]
    assert all(shard.num_rows == len(rows) for shard, rows in got)
    assert [s.first_row for s, _ in got] == list(range(0, 20, shard_size))


def test_jsonl_limit_and_task_ids(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(10)))
    got = rows_of(DatasetConfig(path=str(path)), 4, limit=6)
    rows = [row for _, rows in got for row in rows]
    assert [r.value["prompt"] for r in rows] == [f"p{i}" for i in range(6)]
    shard = got[1][0]
    assert shard.task_id(5) == "train:5"
    assert shard.shard_id == "train/train:4"


def test_bad_lines_carry_their_position_and_reason(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "ok"}\n{not json\n\n[1, 2]\n{"prompt": "also ok"}\n')
    ((_, rows),) = rows_of(DatasetConfig(path=str(path)), 10)
    assert [r.value is not None for r in rows] == [True, False, False, False, True]
    assert [r.row_index for r in rows] == [0, 1, 2, 3, 4]  # line = row_index + 1
    assert "malformed JSON" in str(rows[1].error)
    assert rows[1].raw == "{not json"
    assert "empty line" in str(rows[2].error)
    assert "expected a JSON object, got an array" in str(rows[3].error)


def test_parquet_shards_by_row_group(tmp_path):
    path = tmp_path / "rows.parquet"
    table = pa.table({"prompt": [f"p{i}" for i in range(25)], "n": list(range(25))})
    pq.write_table(table, path, row_group_size=10)
    got = rows_of(DatasetConfig(path=str(path)), 4)
    rows = [row for _, rows in got for row in rows]
    assert [r.value["n"] for r in rows] == list(range(25))
    assert [r.row_index for r in rows] == list(range(25))
    # Row groups of 10 are cut into 4 + 4 + 2, never across groups.
    assert [s.num_rows for s, _ in got] == [4, 4, 2, 4, 4, 2, 4, 1]
    limited = rows_of(DatasetConfig(path=str(path)), 4, limit=9)
    assert sum(s.num_rows for s, _ in limited) == 9


def test_glob_discovery_keys_and_missing_input(tmp_path):
    for name in ("a.jsonl", "b.jsonl", "sub/c.jsonl"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text('{"prompt": "x"}\n')
    files = discover(DatasetConfig(path=str(tmp_path / "*.jsonl")))
    assert [f.key for f in files] == ["a", "b"]
    files = discover(DatasetConfig(path=str(tmp_path)))
    assert [f.key for f in files] == ["a", "b", "sub-c"]
    with pytest.raises(ConfigError, match="no input files match"):
        discover(DatasetConfig(path=str(tmp_path / "nothing*.jsonl")))


def test_bundled_sample_resolves():
    (file,) = discover(DatasetConfig(path="sample:quickstart"))
    assert file.key == "quickstart" and file.size > 0
    with pytest.raises(ConfigError, match=r"available: .*quickstart"):
        discover(DatasetConfig(path="sample:nope"))


def test_work_item_round_trips_through_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "x"}\n' * 3)
    dataset = DatasetConfig(path=str(path), num_repeats=4)
    (shard,) = list(plan_file(dataset, discover(dataset)[0], 10, None))
    item = WorkItem(shard, round=1, keys=[(0, -1), (2, 3)])
    again = WorkItem.from_json(item.to_json())
    assert again.shard == shard and again.keys == [(0, -1), (2, 3)]
    assert again.num_rollouts == 5  # a whole row (4 repeats) + one rollout
    assert again.piece_id == "d/d:0#r1"


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_a_grown_file_only_adds_shards(tmp_path, trailing_newline):
    from rollout_ray.config import load_config
    from rollout_ray.output.plan import build_plan

    path = tmp_path / "grow.jsonl"
    lines = [json.dumps({"prompt": f"p{i}"}) for i in range(10)]
    path.write_text("\n".join(lines[:5]) + ("\n" if trailing_newline else ""))
    config = load_config({"datasets": [{"path": str(path)}], "output": "o", "shard_size": 2})
    _, first = build_plan(config)
    with open(path, "a") as f:
        f.write(("" if trailing_newline else "\n") + "\n".join(lines[5:]) + "\n")
    _, second = build_plan(config, previous=first)
    assert second[: len(first)] == first
    rows = [r for shard in second for r in read_shard(shard)]
    assert [r.value["prompt"] for r in rows] == [f"p{i}" for i in range(10)]
    assert [r.row_index for r in rows] == list(range(10))
    assert len({s.shard_id for s in second}) == len(second)


def test_a_file_added_later_never_takes_a_planned_files_key(tmp_path):
    """`sub/a.jsonl` was planned as "sub-a"; `sub-a.jsonl`, added later, sorts first
    and took "sub-a" (its shards then shared ids with the planned ones: its rows were
    never run, and a resume reported the wrong file as changed)."""
    from rollout_ray.config import load_config
    from rollout_ray.output.plan import build_plan

    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "a.jsonl").write_text('{"prompt": "nested 0"}\n')
    (tmp_path / "in" / "top.jsonl").write_text('{"prompt": "top 0"}\n')
    config = load_config({"datasets": [{"path": str(tmp_path / "in")}], "output": "o"})
    _, first = build_plan(config)
    (tmp_path / "in" / "sub-a.jsonl").write_text('{"prompt": "root 0"}\n{"prompt": "root 1"}\n')
    _, second = build_plan(config, previous=first)
    assert second[: len(first)] == first
    assert len({s.shard_id for s in second}) == len(second)
    prompts = sorted(r.value["prompt"] for shard in second for r in read_shard(shard))
    assert prompts == ["nested 0", "root 0", "root 1", "top 0"]


def test_parquet_planning_resumes_at_a_row(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"n": list(range(25))}), path, row_group_size=10)
    dataset = DatasetConfig(path=str(path))
    (file,) = discover(dataset)
    shards = list(plan_file(dataset, file, 4, None, start_row=13))
    rows = [r.value["n"] for s in shards for r in read_shard(s)]
    assert rows == list(range(13, 25))
