"""No row, field or verifier stops a job, and no job is wedged: hostile inputs through
real jobs (real Ray; the simulated engine for volume, the tiny vLLM model once), each
line's rollouts accounted for exactly once in data or failures."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import job_config, read_output, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from messy_rows import lines, rollout_keys, write_lines

from rollout_ray import run_job
from rollout_ray.config import load_config
from rollout_ray.output.schema import decode_rows, rollouts_table
from rollout_ray.run.piece_files import parquet_bytes

pytestmark = pytest.mark.slow

REPEATS = 2


def simulated_job(path: Path, output: Path, **extra):
    dataset = {"name": "messy", "path": str(path), "num_repeats": REPEATS}
    dataset.update(extra.pop("dataset", {}))
    return load_config(
        {
            "model": "sim",
            "engine": {"kind": "simulated", "output_tokens": 4},
            "datasets": [dataset],
            "output": str(output),
            "shard_size": 16,
            "metrics_port": 0,
            **extra,
        }
    )


def assert_each_line_once(output: Path, n_lines: int) -> None:
    keys = rollout_keys(output, REPEATS)
    expected = {(row, i) for row in range(n_lines) for i in range(REPEATS)}
    assert set(keys) == expected, sorted(set(keys) ^ expected)[:10]
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:10]


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=st.lists(lines, min_size=10, max_size=40))
def test_any_line_goes_to_data_or_failures_and_the_job_finishes(
    ray_session, tmp_path_factory, content
):
    root = tmp_path_factory.mktemp("fuzz")
    path = write_lines(root / "in.jsonl", content)
    result = run_job(simulated_job(path, root / "out"))
    assert result.status == "finished"
    assert_each_line_once(root / "out", len(content))
    counts = result.datasets["messy"]
    assert counts["retryable"] == 0 and counts["ok"] + counts["failed"] == len(content) * REPEATS
    # What was written reads back: every rollout file decodes, and the carried fields
    # are the row's own values.
    for file in sorted((root / "out" / "data").rglob("*.parquet")):
        for row in decode_rows(pq.read_table(file)):
            assert row["prompt_messages"] and row["response_text"]


@settings(max_examples=1, deadline=None, database=None, derandomize=True)
@given(content=st.lists(lines, min_size=40, max_size=40))
def test_messy_lines_through_the_real_engine(ray_session, tiny_model, tmp_path_factory, content):
    root = tmp_path_factory.mktemp("fuzz-vllm")
    path = write_lines(root / "in.jsonl", content)
    config = job_config(
        tiny_model,
        root / "out",
        [{"name": "messy", "path": str(path), "num_repeats": REPEATS}],
        shard_size=20,
    )
    result = run_job(config)
    assert result.status == "finished"
    assert_each_line_once(root / "out", len(content))


def test_hostile_rows_fail_alone_with_a_reason_that_names_the_field(ray_session, tmp_path):
    rows = [
        {"prompt": "fine", "prescriptions": {}, "big": 2**70, "when": None},
        {"messages": [{"role": ["user"], "content": "hi"}]},
        {"responses_create_params": {"input": "hi", "metadata": [1, 2]}},
        {"prompt": "fine too", "prescriptions": {"a": [{"x": 1}, {"y": "z"}]}, "big": "text"},
        {"prompt": "x", "sampling": {"seed": 2**70}},
        {"messages": [{"role": "user", "content": [{"image": "..."}]}]},
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = run_job(simulated_job(path, tmp_path / "out"))
    assert result.status == "finished"
    assert_each_line_once(tmp_path / "out", len(rows))
    ok = {r["row_index"]: r for r in read_output(tmp_path / "out")}
    failed = {f["row_index"]: f for f in read_output(tmp_path / "out", "failures")}
    assert sorted(ok) == [0, 2, 3] and sorted(failed) == [1, 4, 5]
    assert failed[1]["error"].startswith("rows.jsonl line 2: messages[0].role is ['user']; allowed")
    assert "sampling.seed" in failed[4]["error"] and failed[4]["stage"] == "parse"
    assert "messages[0].content has a part without text" in failed[5]["error"]
    assert all(f["terminal"] for f in failed.values())
    # Carried fields are stored as the row had them, and read back as such.
    records = {}
    for file in (tmp_path / "out" / "data").rglob("*.parquet"):
        for row in decode_rows(pq.read_table(file)):
            records[row["row_index"]] = row
    assert records[0]["prescriptions"] == {} and records[0]["big"] == 2**70
    assert records[3]["prescriptions"] == {"a": [{"x": 1}, {"y": "z"}]}
    assert records[3]["big"] == "text"


def test_carried_fields_round_trip_any_json_value():
    values = [
        {},
        [],
        {"a": {}},
        [{"A": 1}, {"B": "x"}],
        2**64,
        -(2**63),
        float("inf"),
        "text",
        "42",
        42,
        True,
        None,
        3.5,
        [[[[[]]]]],
    ]
    records = [
        {"dataset": "d", "task_id": f"t{i}", "rollout_index": 0, "input": {"v": v, "w": f"{i}"}}
        for i, v in enumerate(values)
    ]
    # Written as pieces are: in several files, each mixing kinds its own way.
    files = [parquet_bytes(rollouts_table(records[i : i + 3])) for i in range(0, 14, 3)]
    tables = [pq.read_table(io.BytesIO(f)) for f in files]
    # Every file has the same schema, so the output reads as one table anywhere.
    assert len({t.schema for t in tables}) == 1
    back = decode_rows(pa.concat_tables(tables))
    assert [r["v"] for r in back] == values  # "42" stays a string, 42 a number
    assert [r["w"] for r in back] == [str(i) for i in range(len(values))]
    assert back[7]["carried_json"] is None and back[9]["carried_json"] == ["v"]


def test_carried_names_that_look_like_stored_names_keep_their_own():
    """A row's `task_id` is stored as `input.task_id`; a field of its own named
    `input.task_id` then took that column (the row's value lost), and `input.text`
    (as json_normalize names nested fields) came back as `text`."""
    from rollout_ray.output.schema import record_from_row

    carried = {"task_id": "A", "input.task_id": "B", "input.text": "flat", "x": 1}
    record = {"dataset": "d", "task_id": "d:0", "rollout_index": 0, "input": carried}
    (row,) = decode_rows(pq.read_table(io.BytesIO(parquet_bytes(rollouts_table([record])))))
    assert row["task_id"] == "d:0" and row["input.task_id"] == "A"
    assert record_from_row(row)["input"] == carried


def test_prompt_template_that_raises_is_the_rows_failure(ray_session, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"q": "a"}, {"q": 5}, {"q": "c"}])
    config = simulated_job(path, tmp_path / "out", dataset={"prompt_template": "Q: {q:>3s}"})
    result = run_job(config)
    assert result.status == "finished"
    (failure,) = read_output(tmp_path / "out", "failures")
    assert failure["row_index"] == 1 and failure["terminal"]
    assert (
        "prompt_template 'Q: {q:>3s}' can't be filled from this row: ValueError"
        in (failure["error"])
    )
    assert sorted(r["row_index"] for r in read_output(tmp_path / "out")) == [0, 0, 2, 2]


def test_a_json_array_that_is_not_valid_json_is_one_failure_and_the_job_goes_on(tmp_path):
    """A .json array cut short is parsed whole, so none of its rows can be read: one
    failure record says so, naming the file, and the dataset's other files run (it
    stopped the whole job with exit 2)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "cut.json").write_text('[{"prompt": "a"},\n{"prompt": "b"},\n{"prompt": "c"')
    write_jsonl(inputs / "good.jsonl", [{"prompt": f"row {i}"} for i in range(3)])
    result = run_job(simulated_job(inputs, tmp_path / "out", executor="local"))
    assert result.status == "finished"
    (failure,) = read_output(tmp_path / "out", "failures")
    assert failure["terminal"] and failure["row_index"] == 0
    assert f"{inputs / 'cut.json'} is not valid JSON" in failure["error"]
    assert Path(failure["source_file"]).name == "cut.json"
    rows = sorted(r["row_index"] for r in read_output(tmp_path / "out"))
    assert rows == sorted([0, 1, 2] * REPEATS)


def test_hugging_face_save_to_disk_and_arrow_files_are_read_as_rows(ray_session, tmp_path):
    """A `datasets` folder from save_to_disk (its .arrow files are Arrow IPC streams, its
    state.json and dataset_info.json metadata) and a lone Arrow IPC file."""
    import datasets
    import pyarrow as pa
    import pyarrow.ipc as ipc

    rows = [{"prompt": f"row {i}", "expected_answer": str(i), "n": i} for i in range(30)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    table = pa.Table.from_pylist(rows[:12])
    with ipc.new_file(str(tmp_path / "one.arrow"), table.schema) as writer:  # file format
        writer.write_table(table)
    for path, count in ((tmp_path / "hf", 30), (tmp_path / "one.arrow", 12)):
        config = simulated_job(path, tmp_path / f"out-{path.name}", shard_size=7)
        result = run_job(config)
        assert result.status == "finished" and result.datasets["messy"]["failed"] == 0
        records = read_output(tmp_path / f"out-{path.name}")
        found = {(r["row_index"], r["prompt_messages"][-1]["content"], r["n"]) for r in records}
        assert found == {(i, f"row {i}", str(i)) for i in range(count)}
        assert len(records) == count * REPEATS
        assert run_job(config).progress["run"]["todo"] == 0  # the staged copy is reused


def _compress(codec: str, data: bytes) -> bytes:
    import bz2
    import lzma

    import zstandard

    return {
        "gz": gzip.compress,
        "bz2": lambda d: bz2.compress(d, compresslevel=1),  # 100 kB blocks
        "xz": lzma.compress,
        "zst": zstandard.ZstdCompressor().compress,
    }[codec](data)


@pytest.mark.parametrize("damage", ["cut", "corrupt"])
@pytest.mark.parametrize("codec", ["gz", "bz2", "xz", "zst"])
def test_a_compressed_input_cut_short_or_corrupt_keeps_its_rows_and_records_the_rest(
    tmp_path, codec, damage
):
    """A file of two compressed streams (as bgzip, pigz and pzstd write them), damaged
    in the second. Seen failing before the fix: zstd cut short -> rows silently gone,
    status complete; gz/bz2/xz -> the job stopped (the CLI printed a bare "Aborted.")."""
    import random

    rand = random.Random(codec)
    rows = [{"prompt": f"row {i}", "noise": rand.randbytes(60).hex()} for i in range(4000)]
    lines = [json.dumps(r) + "\n" for r in rows]
    first = _compress(codec, "".join(lines[:1500]).encode())
    second = _compress(codec, "".join(lines[1500:]).encode())
    middle = len(second) * 6 // 10
    if damage == "cut":
        second = second[:middle]
    else:  # bytes overwritten (a bad disk sector, a botched copy)
        second = second[:middle] + bytes(64) + second[middle + 64 :]
    path = tmp_path / f"in.jsonl.{codec}"
    path.write_bytes(first + second)
    config = simulated_job(path, tmp_path / "out", dataset={"num_repeats": 1}, executor="local")
    result = run_job(config)
    assert result.status == "finished"
    data, failures = read_output(tmp_path / "out"), read_output(tmp_path / "out", "failures")
    # One failure record, stage `read`, for the first row not kept, naming the file and
    # where it broke; every row before it is kept, as it was.
    assert [f["stage"] for f in failures] == ["read"], failures
    broke = failures[0]["row_index"]
    assert sorted(r["row_index"] for r in data) == list(range(broke))
    assert all(r["noise"] == rows[r["row_index"]]["noise"] for r in data)
    error = failures[0]["error"]
    assert str(path) in error and "compressed byte" in error
    assert f"past row {broke}:" in error and "rest of the file" in error
    if damage == "cut":  # what was read before the cut is right: all of it is kept
        assert "cut short" in error and 1500 < broke < len(rows)
    else:  # damage is noticed after it happens: the damaged stream's rows are not used
        assert "corrupt" in error and broke == 1500
    assert result.datasets["messy"]["failed"] == 1


def test_compressed_and_json_array_inputs_are_read_as_rows(ray_session, tmp_path):
    rows = [{"prompt": f"row {i}", "expected_answer": str(i)} for i in range(40)]
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl.gz").write_bytes(gzip.compress(text))
    import zstandard

    (inputs / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    (inputs / "c.json").write_text(json.dumps(rows, indent=2))
    (inputs / "d.json").write_bytes(text)  # JSON Lines named .json, as HF often does
    config = simulated_job(inputs, tmp_path / "out", shard_size=7)
    result = run_job(config)
    assert result.status == "finished" and result.datasets["messy"]["failed"] == 0
    records = read_output(tmp_path / "out")
    assert len(records) == 4 * 40 * REPEATS
    by_file = {}
    for r in records:
        by_file.setdefault(r["source_file"], set()).add(
            (r["row_index"], r["prompt_messages"][-1]["content"], r["expected_answer"])
        )
    wanted = {(i, f"row {i}", str(i)) for i in range(40)}
    assert sorted(Path(f).name for f in by_file) == [
        "a.jsonl.gz",
        "b.jsonl.zst",
        "c.json",
        "d.json",
    ]
    assert all(found == wanted for found in by_file.values())
    # A resume with the inputs unchanged reuses the staged copies and has nothing to do.
    again = run_job(config)
    assert again.progress["run"]["todo"] == 0


def _strict_json(text: str):
    """JSON as every reader takes it: NaN and Infinity are not JSON (DuckDB, JavaScript)."""

    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_repairs_are_listed_and_carried_values_are_json_any_reader_takes(tmp_path):
    """Seen before: a BOM dropped from line 1 without a row warning; carried NaN and
    Infinity stored as `NaN`/`Infinity` (Python's, no other reader's JSON); Parquet
    binary values stored as their Python repr (`b'...'`)."""
    lines = [
        b'\xef\xbb\xbf{"prompt": "after a BOM", "x": 1}',
        b'{"prompt": "numbers", "x": NaN, "y": Infinity, "z": [-Infinity, 1.5]}',
    ]
    jsonl = write_lines(tmp_path / "in.jsonl", lines)
    blobs = pa.table(
        {"prompt": ["text bytes", "raw bytes"], "blob": [b"caf\xc3\xa9", b"\x00\xff\x10"]}
    )
    parquet = tmp_path / "in.parquet"
    pq.write_table(blobs, parquet)
    config = simulated_job(jsonl, tmp_path / "out", executor="local")
    config = load_config(
        {
            **config.model_dump(exclude_none=True),
            "datasets": [{"name": "j", "path": str(jsonl)}, {"name": "p", "path": str(parquet)}],
        }
    )
    assert run_job(config).status == "finished"
    rows = {}
    for file in (tmp_path / "out" / "data").rglob("*.parquet"):
        table = pq.read_table(file)
        for raw, row in zip(table.to_pylist(), decode_rows(table), strict=True):
            for name in raw.get("carried_json") or ():
                _strict_json(raw[name])  # every stored JSON text is JSON
            rows[(row["dataset"], row["row_index"])] = row
    bom = rows[("j", 0)]
    assert bom["row_warnings"] == ["a leading byte-order mark (U+FEFF) dropped"]
    numbers = rows[("j", 1)]
    assert numbers["x"] is None and numbers["y"] == float("inf")
    assert numbers["z"] == [float("-inf"), 1.5]
    assert numbers["row_warnings"] == ["x: NaN is not JSON, stored as null"]
    assert rows[("p", 0)]["blob"] == "café" and not rows[("p", 0)]["row_warnings"]
    assert rows[("p", 1)]["blob"] == "AP8Q"  # base64 of the raw bytes, and said so
    assert rows[("p", 1)]["row_warnings"] == ["blob: binary data stored as base64 text"]
