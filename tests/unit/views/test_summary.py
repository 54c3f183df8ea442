"""The end-of-job summary shows the verifier's own numeric fields, not only the reward."""

from __future__ import annotations

from rich.console import Console

from rollout_ray.output.aggregates import piece_stats, summarize
from rollout_ray.run.pipeline import JobResult
from rollout_ray.views.summary import print_summary


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


def _counts(ok: int, expected: int, rewards: list[float] | None) -> dict:
    stats = summarize(piece_stats([{"reward": r} for r in rewards])) if rewards else {}
    return {
        "ok": ok,
        "expected": expected,
        "failed": expected - ok,
        "prompt_tokens": 12_345,
        "output_tokens": 67_890,
        "stats": stats,
    }


def _sweep_rows() -> list[dict]:
    rows = []
    for t in (0.2, 0.8):
        for p in (0.9, 1.0):
            rows.append(
                {
                    "dataset": "arithmetic",
                    "setting": {"temperature": t, "top_p": p},
                    "rollouts": 256,
                    "failed": 0,
                    "mean_reward": 0.25,
                    "reward_std": 0.4,
                    "pass_at": {"1": 0.25, "2": 0.4, "4": 0.5},
                    "output_tokens": 4096,
                    "tokens_per_rollout": 16.0,
                    "latency_s": 1.25,
                }
            )
    return rows


def test_the_summary_fits_80_columns_and_cuts_no_name():
    """Seen before: at 80 columns `arit…`, `temp…`, `mean±s…` (every column squeezed)."""
    variants = [f"arithmetic.temperature-{t}.top_p-{p}" for t in (0.2, 0.8) for p in (0.9, 1.0)]
    datasets = {name: _counts(256, 256, [0.0, 1.0, 1.0]) for name in variants}
    datasets["mcqa"] = _counts(120, 128, [0.0, 0.5])
    datasets["empty"] = _counts(0, 0, None)
    progress = {"datasets": datasets, "run": {"done": 1144, "output_tokens": 9}}
    metrics = {"sweep": _sweep_rows()}
    result = JobResult("outputs/sweep", "finished", 75.0, progress, metrics)
    console = Console(record=True, width=80)
    print_summary(console, result)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text
    words = set(text.replace(":", " ").replace(",", " ").split())
    for name in [*variants, "mcqa", "temperature", "top_p", "pass@4"]:
        assert name in words, f"{name} is cut:\n{text}"
    # A dataset that turned out empty is listed, and said to be.
    assert "no rows: empty" in text
    # A narrow table is still a table: the sweep's settings side by side.
    assert "temperature   top_p   reward   pass@1" in text


def test_output_that_is_not_a_terminal_is_never_wrapped(tmp_path):
    """A log file gets each message and table row on one line (rich wrapped them at 80);
    COLUMNS, where set, still shapes tables."""
    import os
    import subprocess
    import sys

    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "expected_answer": "a"}}\n' for i in range(3)))
    name = "a-dataset-whose-name-is-long-enough-to-fill-most-of-a-line-" + "x" * 30
    output = tmp_path / ("an-output-folder-with-a-long-name-" + "y" * 60)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    args = ["run", "model=m", "engine.kind=simulated", f"datasets.0.path={data}"]
    args += [f"datasets.0.name={name}", f"output={output}", "metrics_port=0"]
    args += ["datasets.0.verifier={kind: exact_match}"]
    ran = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert f"output: {output}" in lines
    row = next(line for line in lines if line.startswith(name))
    assert row.split()[1:3] == ["3/3", "0"]  # the row whole, its figures beside the name


def test_show_prints_the_verifier_details_whole_at_80_columns(tmp_path):
    """`run --show` at 80 columns: the verifier's details were a panel subtitle, cut at
    the panel's edge."""
    from rollout_ray import storage
    from rollout_ray.output.schema import Commit, rollouts_table
    from rollout_ray.views.console import show_piece

    details = '{"extracted_answer": "42", "expected_answer": "42", "parsed": ["42", "42.0"]}'
    record = {
        "dataset": "arithmetic",
        "task_id": "sample:arithmetic:12",
        "rollout_index": 0,
        "prompt_messages": [{"role": "user", "content": "What is 6 * 7? Reply with a number."}],
        "response_text": "42",
        "finish_reason": "stop",
        "output_tokens": 2,
        "reward": 1.0,
        "verifier_details": details,
    }
    data = str(tmp_path / "part.parquet")
    storage.write_parquet_atomic(data, rollouts_table([record]))
    commit = Commit(
        piece_id="p",
        shard_id="s",
        dataset="arithmetic",
        round=0,
        data_file=data,
        failures_file=None,
        n_ok=1,
        n_failed=0,
        n_retryable=0,
        committed_at="2026-01-01T00:00:00+00:00",
    )
    console = Console(record=True, width=80)
    show_piece(console, commit)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    inside = "".join(line.strip("│ ") for line in text.splitlines())
    assert details.replace(" ", "") in inside.replace(" ", "")
    assert "stop, 2 tokens, reward 1.000" in text


def test_a_dataset_with_no_rows_is_in_the_summary_and_the_status(tmp_path):
    """A path that matched an empty file: the run went on with the other dataset, and
    neither the summary nor `status` named the empty one (seen before the fix)."""
    import subprocess
    import sys

    (tmp_path / "one.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "empty.jsonl").write_text("")
    datasets = "datasets=[{path: one.jsonl}, {path: empty.jsonl}]"
    cli = [sys.executable, "-m", "rollout_ray.cli"]
    ran = subprocess.run(
        [*cli, "run", "model=m", "engine.kind=simulated", datasets, "output=out", "metrics_port=0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "no rows: empty" in ran.stdout
    assert any(line.split()[:2] == ["empty", "0/0"] for line in ran.stdout.splitlines())
    status = subprocess.run([*cli, "status", "out"], capture_output=True, text=True, cwd=tmp_path)
    assert any(line.split()[:2] == ["empty", "0/0"] for line in status.stdout.splitlines())


def test_a_log_file_keeps_messages_on_one_line_and_box_text_whole(monkeypatch):
    """With COLUMNS=80 and output to a file: a message stays one line (grep finds it
    whole), and a box (`--show`, `inspect`) still wraps its text inside it rather than
    cutting it at its edge (seen when soft wrapping applied to everything)."""
    import io

    from rich.panel import Panel

    from rollout_ray.views.terminal import SafeConsole

    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    console = SafeConsole(file=out)
    message = "a message " + "word " * 30 + "end"
    console.print(message)
    console.print(Panel("prompt: " + "seven " * 20 + "last", expand=False))
    lines = out.getvalue().splitlines()
    assert lines[0] == message
    assert max(len(line) for line in lines[1:]) <= 80
    inside = " ".join(line.strip("│╭╮╰╯─ ") for line in lines[1:]).split()
    assert inside == ["prompt:", *["seven"] * 20, "last"]
