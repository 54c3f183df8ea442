"""End to end on real Ray and real vLLM (the tiny random model): what a user checks
in the output folder after `rollout-ray run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import job_config, read_output, write_jsonl

from rollout_ray import run_job
from rollout_ray.output.schema import ROLLOUT_FIELDS

pytestmark = pytest.mark.slow

LONG = "word " * 2000  # far past the tiny model's 512-token context

GOOD_ROWS = [
    {"prompt": "what is two plus two?", "expected_answer": "4", "id": "a"},
    {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "write a poem"},
        ],
        "id": "b",
    },
    {
        "responses_create_params": {
            "input": "the quick brown fox",
            "temperature": 0.3,
            "max_output_tokens": 3,
        },
        "expected_answer": "dog",
        "id": "c",
    },
    {"prompt": "the sea and the sky", "sampling": {"max_tokens": 5}, "id": "d"},
]
BAD_ROWS = [
    "{this is not json",
    {"text": "no known shape", "id": "e"},
    {"prompt": LONG, "id": "f"},
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    mixed = write_jsonl(
        root / "mixed.jsonl",
        [
            GOOD_ROWS[0],
            BAD_ROWS[0],
            GOOD_ROWS[1],
            BAD_ROWS[1],
            GOOD_ROWS[2],
            BAD_ROWS[2],
            GOOD_ROWS[3],
        ],
    )
    table = pa.table(
        {"prompt": [f"rollouts are sampled {i}" for i in range(5)], "level": list(range(5))}
    )
    pq.write_table(table, root / "rows.parquet", row_group_size=2)
    return {"mixed": mixed, "parquet": root / "rows.parquet"}


def mixed_job(tiny_model, inputs, output, **extra):
    return job_config(
        tiny_model,
        output,
        [
            {"name": "mixed", "path": str(inputs["mixed"]), "num_repeats": 3},
            {"name": "tabular", "path": str(inputs["parquet"])},
        ],
        sampling={
            "max_tokens": 8,
            "temperature": 0.8,
            "seed": 7,
            "logprobs": True,
            "return_token_ids": True,
        },
        shard_size=3,
        **extra,
    )


@pytest.fixture(scope="module")
def first_run(ray_session, tiny_model, inputs, tmp_path_factory):
    output = tmp_path_factory.mktemp("run1") / "out"
    with pytest.MonkeyPatch.context() as env:  # the engine actor's step trace, beside it
        env.setenv("ROLLOUT_RAY_STEP_TRACE", str(output.parent / "traces"))
        result = run_job(mixed_job(tiny_model, inputs, output))
    return output, result


def test_every_good_rollout_exactly_once(first_run):
    output, result = first_run
    records = read_output(output)
    keys = Counter((r["dataset"], r["task_id"], r["rollout_index"]) for r in records)
    assert max(keys.values()) == 1
    expected = {("mixed", f"mixed:{row}", i) for row in (0, 2, 4, 6) for i in range(3)}
    expected |= {("tabular", f"rows:{row}", 0) for row in range(5)}
    assert set(keys) == expected
    assert result.status == "finished"
    assert result.datasets["mixed"]["ok"] == 12
    assert result.datasets["mixed"]["failed"] == 9  # 3 bad rows x 3 repeats
    assert result.datasets["tabular"]["ok"] == 5


def test_bad_rows_go_to_failures_with_file_line_and_reason(first_run, inputs):
    output, _ = first_run
    failures = {f["row_index"]: f for f in read_output(output, "failures")}
    assert set(failures) == {1, 3, 5}
    for failure in failures.values():
        assert failure["source_file"] == str(inputs["mixed"])
        assert failure["terminal"] is True
        assert failure["rollout_index"] == -1
    assert "line 2: malformed JSON" in failures[1]["error"]
    assert failures[1]["raw_row"] == "{this is not json"
    assert "none of the shapes" in failures[3]["error"]
    assert "prompt is" in failures[5]["error"] and "context is 512" in failures[5]["error"]
    assert failures[5]["stage"] == "prompt"


def test_row_shapes_and_per_row_sampling(first_run):
    output, _ = first_run
    by_id = {}
    for r in read_output(output):
        by_id.setdefault(r.get("id"), []).append(r)
    poem = by_id["b"][0]
    assert poem["prompt_messages"] == GOOD_ROWS[1]["messages"]
    gym = by_id["c"]
    assert all(r["sampling"]["max_tokens"] == 3 and r["output_tokens"] <= 3 for r in gym)
    assert all(r["sampling"]["temperature"] == 0.3 for r in gym)
    assert json.loads(gym[0]["responses_create_params"])["input"] == "the quick brown fox"
    assert all(r["sampling"]["max_tokens"] == 5 and r["output_tokens"] <= 5 for r in by_id["d"])
    assert by_id["a"][0]["expected_answer"] == "4"  # carried input field
    assert all(r["sampling"]["temperature"] == 0.8 for r in by_id["a"])


def test_seeds_logprobs_and_token_ids(first_run):
    output, _ = first_run
    for r in read_output(output):
        assert r["sampling"]["seed"] == 7 + r["rollout_index"]
        assert r["output_tokens"] == len(r["output_token_ids"]) == len(r["output_logprobs"])
        assert r["prompt_tokens"] == len(r["prompt_token_ids"]) > 0
        assert all(lp <= 0 for lp in r["output_logprobs"])
        assert r["model"].endswith("tiny-model0") or "tiny-model" in r["model"]
        assert r["engine"] == "vllm" and r["attempt"] == 1
        assert r["finish_reason"] in {"stop", "length"}


def test_output_schema_is_the_record_schema(first_run):
    output, _ = first_run
    for path in Path(output, "data").rglob("*.parquet"):
        schema = pq.read_schema(path)
        for field in ROLLOUT_FIELDS:
            assert schema.field(field.name).type == field.type, field.name
    assert Path(output, "data", "dataset=mixed").is_dir()
    assert Path(output, "data", "dataset=tabular").is_dir()


def test_the_engine_ran_on_the_documented_cpu_settings(first_run):
    """What vLLM itself ran with (its effective config, in metrics.json), not what was
    asked: 32-token KV blocks with prefix caching, eager mode (docs/platform.md)."""
    output, _ = first_run
    engine = json.loads(Path(output, "metrics.json").read_text())["run"]["engine_config"]
    assert engine["block_size"] == 32, engine
    assert engine["prefix_caching"] is True and engine["enforce_eager"] is True, engine


def test_the_engine_actor_traces_its_steps(first_run):
    """ROLLOUT_RAY_STEP_TRACE reaches the engine actor on Ray (docs/debugging.md)."""
    output, _ = first_run
    (trace,) = (output.parent / "traces").glob("steps-*.tsv")
    steps = [line.split("\t") for line in trace.read_text().splitlines()]
    longest = max(r["output_tokens"] for r in read_output(output))
    assert len(steps) >= longest and all(int(in_flight) >= 1 for *_, in_flight in steps)
    starts = [float(start) for start, _, _ in steps]
    assert starts == sorted(starts)  # one line per step, in the order they ran


def test_seeded_rerun_reproduces_and_repeats_differ(first_run, tiny_model, inputs, tmp_path):
    output, _ = first_run
    run_job(mixed_job(tiny_model, inputs, tmp_path / "again"))
    first = {(r["task_id"], r["rollout_index"]): r["response_text"] for r in read_output(output)}
    second = {
        (r["task_id"], r["rollout_index"]): r["response_text"]
        for r in read_output(tmp_path / "again")
    }
    assert first == second
    repeats = [{first[(t, i)] for i in range(3)} for t in ("mixed:0", "mixed:2", "mixed:6")]
    assert any(len(texts) > 1 for texts in repeats)


def test_engine_core_in_its_own_process_gives_the_same_rollouts(
    first_run, tiny_model, inputs, tmp_path
):
    """AsyncLLM with its core in a second process (the GPU default) against the core
    stepped in the actor (the CPU default): the same records, seeded texts included."""
    output, result = first_run
    again = run_job(
        mixed_job(tiny_model, inputs, tmp_path / "proc", overrides=["engine.engine_core=process"])
    )
    stepped = {(r["task_id"], r["rollout_index"]): r for r in read_output(output)}
    process = {(r["task_id"], r["rollout_index"]): r for r in read_output(tmp_path / "proc")}
    assert stepped.keys() == process.keys()
    for key, record in stepped.items():
        for field in ("response_text", "output_token_ids", "finish_reason", "prompt_token_ids"):
            assert process[key][field] == record[field], (key, field)
    counts = ("expected", "ok", "failed", "retryable")
    for name, totals in result.datasets.items():
        assert {k: again.datasets[name][k] for k in counts} == {k: totals[k] for k in counts}


def test_local_executor_writes_what_ray_writes(first_run, tiny_model, inputs, tmp_path):
    """The same config through the local executor (`rollout-ray run`, in process, no
    Ray) and through Ray Data's actor pool: the same records, failures and totals."""
    output, _ = first_run
    config = mixed_job(tiny_model, inputs, tmp_path / "local", executor="local")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["ROLLOUT_RAY_STEP_TRACE"] = "traces"  # relative: the folder where the run is started
    done = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads((tmp_path / "local" / "metrics.json").read_text())
    assert metrics["executor"] == "local" and metrics["run"]["engine_starts"] == 1
    # The engine's step trace (docs/debugging.md): one engine, a line per step in the
    # order they ran (start, seconds, requests in flight), never more in flight than
    # the job's rollouts.
    (trace,) = (tmp_path / "traces").glob("steps-*.tsv")
    steps = [line.split("\t") for line in trace.read_text().splitlines()]
    assert all(len(step) == 3 for step in steps)
    starts = [float(start) for start, _, _ in steps]
    in_flight = [int(n) for _, _, n in steps]
    assert starts == sorted(starts) and all(float(s) >= 0 for _, s, _ in steps)
    rollouts = sum(d["expected"] for d in metrics["datasets"].values())
    assert min(in_flight) >= 1 and max(in_flight) <= rollouts
    on_ray = {(r["task_id"], r["rollout_index"]): r for r in read_output(output)}
    local = {(r["task_id"], r["rollout_index"]): r for r in read_output(tmp_path / "local")}
    assert on_ray.keys() == local.keys()
    assert len(steps) >= max(r["output_tokens"] for r in local.values())  # a step a token
    fields = ("response_text", "output_token_ids", "output_logprobs", "finish_reason")
    for key, record in on_ray.items():
        for field in (*fields, "prompt_token_ids", "sampling", "reward"):
            assert local[key][field] == record[field], (key, field)
    failures = {(f["task_id"], f["stage"], f["error"]) for f in read_output(output, "failures")}
    assert failures == {
        (f["task_id"], f["stage"], f["error"]) for f in read_output(tmp_path / "local", "failures")
    }
    totals = json.loads((output / "metrics.json").read_text())["datasets"]
    assert metrics["datasets"].keys() == totals.keys()
    for name, figures in totals.items():
        for count in ("expected", "ok", "failed", "retryable", "output_tokens"):
            assert metrics["datasets"][name][count] == figures[count], (name, count)


def test_unseeded_runs_sample_afresh(ray_session, tiny_model, tmp_path):
    """Without sampling.seed, a second run over the same rows samples new rollouts (the
    engine's own seed is drawn at each start, not vLLM's fixed 0)."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"tell me {i}"} for i in range(8)])
    texts = []
    for name in ("a", "b"):
        config = job_config(tiny_model, tmp_path / name, [{"path": str(data)}])
        assert config.sampling.seed is None
        run_job(config)
        rows = sorted(read_output(tmp_path / name), key=lambda r: r["task_id"])
        texts.append([r["output_token_ids"] or r["response_text"] for r in rows])
    assert len(texts[0]) == 8
    same = sum(a == b for a, b in zip(*texts, strict=True))
    assert same < 4, f"{same} of 8 rollouts repeated the first run's"


def test_limit_and_command_line_beats_row(ray_session, tiny_model, tmp_path):
    rows = [
        {"prompt": f"the sea {i}", "sampling": {"max_tokens": 6, "temperature": 0.1}}
        for i in range(10)
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = job_config(
        tiny_model,
        tmp_path / "out",
        [{"name": "rows", "path": str(path), "num_repeats": 2}],
        overrides=["datasets.0.limit=4", "sampling.max_tokens=2"],
    )
    result = run_job(config)
    records = read_output(tmp_path / "out")
    assert sorted({r["row_index"] for r in records}) == [0, 1, 2, 3]
    assert len(records) == 8
    # The command line's max_tokens beats the row's; the row's temperature stays.
    assert all(r["output_tokens"] <= 2 and r["sampling"]["max_tokens"] == 2 for r in records)
    assert all(r["sampling"]["temperature"] == 0.1 for r in records)
    assert result.datasets["rows"]["expected"] == 8


def test_sampling_parameters_reach_the_engine(ray_session, tiny_model, tmp_path):
    """What the engine did, not what the record echoes: temperature 0 gives one answer
    per prompt, 1.5 gives many, top_k 1 at 1.5 gives the greedy answer, and a row's own
    temperature beats its dataset's."""
    prompts = [{"prompt": f"the quick brown fox {i}"} for i in range(3)]
    path = write_jsonl(tmp_path / "p.jsonl", prompts)
    rowwise = write_jsonl(
        tmp_path / "r.jsonl", [{**p, "sampling": {"temperature": 0}} for p in prompts]
    )

    def dataset(name: str, data: Path, **sampling) -> dict:
        return {"name": name, "path": str(data), "num_repeats": 4, "sampling": sampling}

    config = job_config(
        tiny_model,
        tmp_path / "out",
        [
            dataset("greedy", path, temperature=0),
            dataset("hot", path, temperature=1.5),
            dataset("topk1", path, temperature=1.5, top_k=1),
            dataset("row", rowwise, temperature=1.5),
        ],
        sampling={"max_tokens": 8},
    )
    run_job(config)
    texts: dict[tuple[str, int], set[str]] = {}
    for r in read_output(tmp_path / "out"):
        texts.setdefault((r["dataset"], r["row_index"]), set()).add(r["response_text"])
    for row in range(3):
        assert len(texts[("greedy", row)]) == 1
        assert len(texts[("hot", row)]) > 1
        assert texts[("topk1", row)] == texts[("greedy", row)]
        assert texts[("row", row)] == texts[("greedy", row)]
