"""`rollout-ray inspect` on a small hand-made output: filters, figures, terminal and HTML views."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from typing import Any

import pyarrow as pa
import pytest
from rich.console import Console

from rollout_ray import storage
from rollout_ray.errors import RolloutRayError
from rollout_ray.output import manifest
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import PLAN_SCHEMA, Commit, failures_table, rollouts_table
from rollout_ray.views.inspect_html import write_html
from rollout_ray.views.inspect_report import build_report
from rollout_ray.views.inspect_terminal import render_report
from rollout_ray.views.reading import KEEP_CHARS

SCRIPT = "<script>alert(1)</script>"
MARKUP = "[red]not markup[/red]"
LONG = "x" * 10_000

# ---------------------------------------------------------------------------- fake output


def rollout(dataset: str, task: str, index: int, reward: float | None, **extra: Any) -> dict:
    record = {
        "dataset": dataset,
        "task_id": task,
        "rollout_index": index,
        "prompt_messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {task}"},
            {"role": "assistant", "content": "earlier turn"},
        ],
        "response_text": f"answer {task}/{index}",
        "finish_reason": "stop",
        "output_tokens": 5,
        "reward": reward,
        "verifier_details": json.dumps({"extracted_answer": "B"}),
        "input": {"expected_answer": "42"} if dataset == "math" else {"gold": "G"},
    }
    record.update(extra)
    return record


def piece(output: str, dataset: str, shard: str, round_: int, rows: list, fails: list) -> Commit:
    """Write one piece's files as the pipeline lays them out; returns its commit record."""
    layout, name = Layout(output), f"part-{shard}-r{round_}.parquet"
    data = storage.join(layout.data_dir(dataset), name)
    storage.write_parquet_atomic(data, rollouts_table(rows))
    failures = storage.join(layout.failures_dir(dataset), name) if fails else None
    if fails:
        storage.write_parquet_atomic(failures, failures_table(fails))
    return Commit(
        **{
            "piece_id": f"{shard}-r{round_}",
            "shard_id": shard,
            "dataset": dataset,
            "round": round_,
            "data_file": data,
            "failures_file": failures,
            "n_ok": len(rows),
            "n_failed": len(fails),
            "n_retryable": sum(not f["terminal"] for f in fails),
            "committed_at": manifest.now_utc(),
        }
    )


def failure(task: str, index: int, stage: str, error: str, terminal: bool) -> dict:
    where = {"dataset": "code", "task_id": task, "rollout_index": index, "row_index": 3}
    return {**where, "stage": stage, "error_class": error, "error": "boom", "terminal": terminal}


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    """Two datasets; `code` has a second shard with a retry round and failures."""
    out = str(tmp_path_factory.mktemp("inspect") / "out")
    math_rows = [rollout("math", "m-1", i, 1.0) for i in range(4)]
    math_rows += [rollout("math", "m-2", 0, 0.0, response_text=SCRIPT)]
    math_rows += [rollout("math", "m-2", 1, 0.0, response_text=LONG)]
    math_rows += [rollout("math", "m-2", 2, 0.0), rollout("math", "m-2", 3, 0.0)]
    math_rows[-1]["finish_reason"] = "length"
    math_rows += [rollout("math", "m-3", i, r) for i, r in enumerate([0.0, 1.0, 0.5, None])]
    math_rows += [rollout("math", "m-10", i, r) for i, r in enumerate([0.25, 0.75])]
    code_rows = [rollout("code", "c-1", i, 0.2) for i in range(2)]
    code_rows += [rollout("code", "c-2", 0, -0.5, response_text=MARKUP)]
    code_rows += [rollout("code", "c-2", 1, 1.5)]
    code_rows += [rollout("code", "c-3", i, None) for i in range(2)]
    retry = [rollout("code", "c-4", 1, 0.9, output_tokens=15)]
    round0 = [failure("c-4", 1, "engine", "Timeout", False)]
    round0 += [failure("c-9", -1, "verify", "VerifierError", True)]
    pieces = [
        piece(out, "math", "math-0", 0, math_rows, []),
        piece(out, "code", "code-0", 0, code_rows, []),
        piece(out, "code", "code-1", 0, [rollout("code", "c-4", 0, 0.0)], round0),
        piece(out, "code", "code-1", 1, retry, [failure("c-4", 1, "engine", "Timeout", False)]),
    ]
    layout = Layout(out)
    shard = {"file_uri": "x.jsonl", "file_key": "x", "format": "jsonl", "first_row": 0}
    shard |= {"num_rows": 1, "num_repeats": 1}
    plan = [{"shard_id": p.shard_id, "dataset": p.dataset, **shard} for p in pieces]
    plan = [p for i, p in enumerate(plan) if p not in plan[:i]]
    storage.write_parquet_atomic(layout.plan, pa.Table.from_pylist(plan, schema=PLAN_SCHEMA))
    verifier = {"kind": "exact_match", "answer_field": "gold"}
    storage.write_json_atomic(layout.job, {"config": {"datasets": [{"verifier": verifier}]}})
    manifest.write_commits(layout, pieces)
    return out


# ---------------------------------------------------------------------------- figures


def ids(examples: list) -> list[tuple[str, int]]:
    return [(e.task_id, e.rollout_index) for e in examples]


def test_totals_histogram_and_unscored(output):
    report = build_report(output)
    totals = {d.dataset: d for d in report.datasets}
    assert (totals["math"].rollouts, totals["math"].tasks, totals["math"].scored) == (14, 4, 13)
    assert (totals["code"].rollouts, totals["code"].tasks, totals["code"].scored) == (8, 4, 6)
    assert totals["math"].mean_reward == pytest.approx(6.5 / 13)
    assert totals["code"].mean_reward == pytest.approx(2.3 / 6)
    assert totals["code"].mean_output_tokens == pytest.approx((7 * 5 + 15) / 8)
    assert totals["math"].finish_reasons == {"length": 1, "stop": 13}
    assert report.matched == report.rollouts == 22 and report.unscored == 3
    hist = {k: v for k, v in report.histogram.items() if v}
    assert hist == {
        "<0": 1,
        "0.0-0.1": 6,
        "0.2-0.3": 3,
        "0.5-0.6": 1,
        "0.7-0.8": 1,
        "0.9-1.0": 6,
        ">1": 1,
    }
    assert sum(report.histogram.values()) + report.unscored == 22
    # One histogram per dataset; together they are the whole one.
    assert set(report.histograms) == {"code", "math"}
    assert {k: v for k, v in report.histograms["code"].items() if v} == {
        "<0": 1,
        "0.0-0.1": 1,
        "0.2-0.3": 2,
        "0.9-1.0": 1,
        ">1": 1,
    }
    for label, count in report.histogram.items():
        assert count == sum(h[label] for h in report.histograms.values())
    assert len(report.scatter) == 19
    json.dumps(report.as_dict(), allow_nan=False)


def test_per_task_stats_and_signal(output):
    report = build_report(output)
    tasks = {t.task_id: t for t in report.tasks}
    m3 = tasks["m-3"]
    assert (m3.rollouts, m3.scored, m3.mean, m3.min, m3.max) == (4, 3, 0.5, 0.0, 1.0)
    assert m3.std == pytest.approx(0.5)  # sample std of 0, 1, 0.5
    assert tasks["m-10"].std == pytest.approx(math.sqrt(0.125))
    assert tasks["c-4"].mean == pytest.approx(0.45) and tasks["c-4"].rollouts == 2
    assert tasks["c-3"].scored == 0 and tasks["c-3"].mean is None
    order = [t.task_id for t in report.tasks]
    # Ties by dataset, then task id in natural order: m-3 before m-10.
    assert order == ["m-2", "c-1", "c-4", "c-2", "m-3", "m-10", "m-1", "c-3"]
    assert report.signal == {
        "tasks": 8,
        "scored_tasks": 7,
        "single_rollout": 0,
        "all_equal": 3,
        "all_zero": 1,
        "all_one": 1,
    }
    means = {k: v for k, v in report.task_mean_histogram.items() if v}
    assert means == {"0.0-0.1": 1, "0.2-0.3": 1, "0.4-0.5": 1, "0.5-0.6": 3, "0.9-1.0": 1}


def test_lowest_examples_are_ordered_and_readable(output):
    report = build_report(output, lowest=5)
    # One per task before any task's second: m-2's four zeros would fill the list.
    assert ids(report.lowest) == [("c-2", 0), ("c-4", 0), ("m-2", 0), ("m-3", 0), ("c-1", 0)]
    assert [e.reward for e in report.lowest] == [-0.5, 0.0, 0.0, 0.0, 0.2]
    alone = build_report(output, task="m-2", lowest=5).lowest  # one task: its repeats
    assert ids(alone) == [("m-2", 0), ("m-2", 1), ("m-2", 2), ("m-2", 3)]
    first, script, long = report.lowest[0], report.lowest[2], alone[1]
    assert first.expected_answer == "G" and first.extracted_answer == "B"  # the verifier's field
    assert script.prompt == "question m-2" and script.expected_answer == "42"
    assert script.response == SCRIPT and script.finish_reason == "stop"
    assert long.response.startswith("x" * KEEP_CHARS) and "more chars" in long.response
    assert ids(build_report(output, lowest=2).lowest) == [("c-2", 0), ("c-4", 0)]


def test_filters(output):
    code = build_report(output, datasets=["code"])
    assert [d.dataset for d in code.datasets] == ["code"] and code.matched == 8
    assert {t.dataset for t in code.tasks} == {"code"}
    ranged = build_report(output, min_reward=0.5, max_reward=0.9, sample=10)
    assert ranged.matched == 3
    assert ids(ranged.lowest) == [("m-3", 2), ("m-10", 1), ("c-4", 1)]
    assert sorted(e.reward for e in ranged.samples) == [0.5, 0.75, 0.9]
    assert len(ranged.scatter) == 3 and ranged.unscored == 3  # whole-task views stay whole
    assert build_report(output, min_reward=1.0).matched == 6
    prefix = build_report(output, task="m-1")  # a prefix: m-1 and m-10
    assert {t.task_id for t in prefix.tasks} == {"m-1", "m-10"} and prefix.matched == 6
    exact = build_report(output, task="m-10", sample=10)
    assert exact.matched == 2 and ids(exact.samples) == [("m-10", 0), ("m-10", 1)]
    with pytest.raises(ValueError, match="nope"):
        build_report(output, datasets=["nope"])
    with pytest.raises(ValueError):
        build_report(output, min_reward=1, max_reward=0)


def test_counts_agree_between_the_headline_and_the_tables(output):
    """`inspect --dataset math --max-reward 0`: the headline's count is the tables' and
    histograms' count; the reward range's count is said apart, as the examples' source
    (seen before: the headline said 5 matching while every table showed 14)."""
    report = build_report(output, datasets=["math"], max_reward=0.0)
    math_ = report.datasets[0]
    assert report.rollouts == math_.rollouts == 14
    assert sum(report.histograms["math"].values()) + report.unscored == 14
    assert report.matched == math_.in_range == 5  # m-2 x4, m-3 #0
    console = Console(record=True, width=80)
    render_report(console, report)
    text = console.export_text()
    words = " ".join(text.split())
    assert "14 matching rollouts (datasets=['math'])" in words
    assert "5 of them in the reward range (max_reward=0.0)" in words
    assert "reward histogram, math" in text and "reward histogram, code" not in text


def test_the_terminal_report_fits_80_columns(output):
    console = Console(record=True, width=80)
    render_report(console, build_report(output, lowest=5, sample=3))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text.replace("chars)", "")  # only cut texts say they are cut
    tasks = [line.split()[1] for line in text.splitlines() if line.startswith("math ")]
    assert tasks.index("m-3") < tasks.index("m-10")


def test_sample_is_bounded_and_reproducible(output):
    first, again = build_report(output, sample=4), build_report(output, sample=4)
    assert len(first.samples) == 4 and len(set(ids(first.samples))) == 4
    assert ids(first.samples) == ids(again.samples)
    assert len(build_report(output, sample=100).samples) == 22
    assert build_report(output, sample=0, lowest=0).samples == []


def test_failures_grouped_by_stage_and_class(output):
    failures = build_report(output).failures
    assert failures == [
        {"dataset": "code", "stage": "engine", "error_class": "Timeout", "count": 1, "retried": 1},
        {
            "dataset": "code",
            "stage": "verify",
            "error_class": "VerifierError",
            "count": 1,
            "retried": 0,
        },
    ]
    assert build_report(output, datasets=["math"]).failures == []
    assert [f["stage"] for f in build_report(output, task="c-4").failures] == ["engine"]


def test_nothing_matches(output, tmp_path):
    report = build_report(output, task="zzz")
    assert report.matched == 0 and report.tasks == [] and report.datasets == []
    assert sum(report.task_mean_histogram.values()) == 0 and report.scatter == []
    console = Console(record=True, width=120)
    render_report(console, report)
    assert "0 matching rollouts" in console.export_text()
    write_html(report, str(tmp_path / "empty.html"))
    assert "No matching rollouts" in (tmp_path / "empty.html").read_text()


def test_no_job(tmp_path):
    with pytest.raises(RolloutRayError):
        build_report(str(tmp_path))


# ---------------------------------------------------------------------------- views


def test_render_report_in_terminal(output):
    console = Console(record=True, width=120)
    render_report(console, build_report(output, lowest=5, sample=3))
    render_report(console, build_report(output, task="m-2", lowest=5))  # the long response
    text = console.export_text()
    for figure in ("math", "code", "0.500", "0.383", "0.9-1.0", "all-equal", "Timeout"):
        assert figure in text
    assert "m-3" in text and "no reward" in text and "length: 1" in text
    assert MARKUP in text  # user text is printed, never read as markup
    assert SCRIPT in text and "chars)" in text and "x" * 401 not in text


class Checker(HTMLParser):
    """Fails on unbalanced tags; collects tags and attributes."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "line"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


def test_html_page(output, tmp_path):
    path = tmp_path / "report.html"
    write_html(build_report(output, lowest=5, sample=3), str(path))
    page = path.read_text(encoding="utf-8")
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []  # every element closed
    assert "http://" not in page and "https://" not in page
    for _, attrs in checker.tags:
        for name in ("src", "href"):
            assert not re.match(r"\s*(\w+:)?//", attrs.get(name) or ""), attrs
    assert [t for t, _ in checker.tags].count("script") == 1  # only the inline sort script
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for section in ("totals", "histogram", "tasks", "scatter", "lowest", "samples", "failures"):
        assert f'id="{section}"' in page
    # A reward histogram per dataset (2), per-task means, the scatter plot.
    assert page.count("<svg") == 4 and page.count('class="dot"') == 19
    assert "VerifierError" in page and "m-10" in page and 'class="sortable"' in page


def test_html_to_fsspec_uri(output):
    uri = "memory://inspect-test/report.html"
    write_html(build_report(output), uri)
    assert storage.read_bytes(uri).startswith(b"<!DOCTYPE html>")


def test_write_the_selection_to_jsonl(output, tmp_path):
    from rollout_ray.views.selection import write_selection

    dest = tmp_path / "low.jsonl"
    count = write_selection(output, str(dest), ["math"], max_reward=0.3)
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert count == len(rows) == 6  # m-2 x4, m-3 #0, m-10 #0; unscored m-3 #3 left out
    assert {(r["task_id"], r["rollout_index"]) for r in rows} == {
        ("m-2", 0),
        ("m-2", 1),
        ("m-2", 2),
        ("m-2", 3),
        ("m-3", 0),
        ("m-10", 0),
    }
    assert all(r["expected_answer"] == "42" for r in rows)  # the row's own fields
    assert write_selection(output, str(tmp_path / "t.jsonl"), task="c-2") == 2
    assert write_selection(output, str(tmp_path / "none.jsonl"), min_reward=5) == 0
    assert (tmp_path / "none.jsonl").read_text() == ""
    with pytest.raises(ValueError, match=r"\.jsonl"):
        write_selection(output, str(tmp_path / "x.csv"))
