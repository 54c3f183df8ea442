"""Faults that used to stop or wedge a job: a record that can't be written, a verifier
that hangs or kills its process, datasets removed or renamed under
--force-new-config, an input truncated between runs. Each ends as failure records (or
a message, for a fault of the job itself) and a job that reaches "complete"."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fault_server import FaultServer
from helpers import has_commits, read_output, wait_until, write_jsonl
from messy_rows import rollout_keys

from rollout_ray import run_job
from rollout_ray.config import load_config
from rollout_ray.errors import ResumeRefused
from rollout_ray.views.status import _verdict, job_status

pytestmark = pytest.mark.slow


def simulated(datasets: list[dict], output: Path, **extra):
    return load_config(
        {
            "model": "sim",
            "engine": {"kind": "simulated", "output_tokens": 4},
            "datasets": datasets,
            "output": str(output),
            "shard_size": 4,
            "metrics_port": 0,
            **extra,
        }
    )


def test_a_record_that_cant_be_written_fails_alone_and_the_rerun_is_complete(
    ray_session, tmp_path, monkeypatch
):
    server = FaultServer(api_key="k" * 16, delay_s=0.01).start()
    monkeypatch.setenv("FAULT_KEY", "k" * 16)
    kinds = ["ok"] * 6 + ["huge", "ok", "surrogate", "ok"]
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"{k} {i}"} for i, k in enumerate(kinds)])
    config = load_config(
        {
            "model": "fault-model",
            "engine": {"kind": "openai", "base_url": server.url, "api_key_env": "FAULT_KEY"},
            "datasets": [{"name": "w", "path": str(data)}],
            "output": str(tmp_path / "out"),
            "shard_size": 5,
            "metrics_port": 0,
        }
    )
    first = run_job(config)
    assert first.status == "finished"
    (failure,) = read_output(tmp_path / "out", "failures")
    assert (failure["row_index"], failure["stage"], failure["terminal"]) == (6, "write", True)
    assert "field 'prompt_tokens' can't be stored" in failure["error"]
    assert failure["response_text"] == "echo: huge 6"  # what was generated is kept
    texts = {r["row_index"]: r["response_text"] for r in read_output(tmp_path / "out")}
    assert sorted(texts) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert texts[8] == "echo: surrogate 8 \ufffd"  # repaired, not refused
    report = job_status(str(tmp_path / "out"))
    assert report["complete"] and _verdict(report) == "complete"
    again = run_job(config)  # nothing is generated again: the piece was committed
    assert again.progress["run"]["todo"] == 0
    assert server.attempts["huge 6"] == 1


def test_verifiers_that_hang_or_kill_their_process_give_failures(ray_session, tmp_path):
    rows = [{"prompt": f"q {i}", "expected_answer": "x"} for i in range(8)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)

    def verifier(function: str, **extra) -> dict:
        return {"kind": "python", "function": f"verifier_fixtures:{function}", **extra}

    config = simulated(
        [
            {
                "name": "hang",
                "path": str(data),
                "verifier": verifier("hangs_on", kwargs={"rows": [2]}, timeout_s=1.5),
            },
            {
                "name": "crash",
                "path": str(data),
                "verifier": verifier("kills_its_process_on", kwargs={"rows": [5]}),
            },
        ],
        tmp_path / "out",
        max_attempts=2,
        verifier_cpus=0,
    )
    result = run_job(config)
    assert result.status == "finished"
    failures = read_output(tmp_path / "out", "failures")
    hung = [f for f in failures if f["dataset"] == "hang"]
    # Row 2 timed out on both attempts (retryable, then out of attempts); nothing else.
    assert {(f["row_index"], f["attempt"]) for f in hung} == {(2, 1), (2, 2)}
    assert all("did not return within 1.5s" in f["error"] for f in hung)
    crashed = [f for f in failures if f["dataset"] == "crash"]
    # The verifier's process died on row 5: the batch was split until row 5 stood
    # alone, and only row 5 failed (terminal: it killed the verifier twice).
    assert [(f["row_index"], f["terminal"]) for f in crashed] == [(5, True)]
    assert "verifier's process died" in crashed[0]["error"]
    ok = {(r["dataset"], r["row_index"]) for r in read_output(tmp_path / "out")}
    assert ok == {("hang", i) for i in range(8) if i != 2} | {
        ("crash", i) for i in range(8) if i != 5
    }
    report = job_status(str(tmp_path / "out"))
    assert report["complete"] and report["exhausted"] == 1
    assert "max_attempts=3" in _verdict(report)


def test_force_new_config_after_datasets_are_removed_or_renamed(ray_session, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a {i}"} for i in range(8)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b {i}"} for i in range(8)])
    flaky = {"kind": "python", "function": "verifier_fixtures:flaky_first_attempt"}
    first = simulated(
        [{"name": "a", "path": str(a)}, {"name": "b", "path": str(b), "verifier": flaky}],
        tmp_path / "out",
        max_attempts=1,
    )
    run_job(first)  # b's rows 0 and 1 are left failed-retryable, out of attempts
    renamed = simulated(
        [{"name": "a", "path": str(a)}, {"name": "b2", "path": str(b)}],
        tmp_path / "out",
        max_attempts=3,
    )
    with pytest.raises(ResumeRefused, match="datasets"):
        run_job(renamed)
    result = run_job(renamed, force_new_config=True)
    assert result.status == "finished"
    assert run_job(renamed).progress["run"]["todo"] == 0  # and again: nothing left
    records = read_output(tmp_path / "out")
    by_dataset: dict[str, set] = {}
    for r in records:
        by_dataset.setdefault(r["dataset"], set()).add(r["row_index"])
    # b's committed work stays readable where it was; b2 is b's file planned anew.
    assert by_dataset == {"a": set(range(8)), "b": set(range(2, 8)), "b2": set(range(8))}
    assert job_status(str(tmp_path / "out"))["complete"]
    removed = simulated([{"name": "a", "path": str(a)}], tmp_path / "out")
    assert run_job(removed, force_new_config=True).status == "finished"
    assert job_status(str(tmp_path / "out"))["complete"]


def test_an_input_changed_between_runs_is_refused_then_replanned(ray_session, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"row {i}"} for i in range(12)])
    first = simulated([{"name": "t", "path": str(data), "limit": 8}], tmp_path / "out")
    run_job(first)  # rows 0-7 committed
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:6]) + "".join(f'{{"prompt": "new {i}"}}\n' for i in range(4)))
    config = simulated([{"name": "t", "path": str(data)}], tmp_path / "out")
    with pytest.raises(ResumeRefused, match=r"in\.jsonl changed since the job was planned"):
        run_job(config)
    result = run_job(config, force_new_config=True)
    assert result.status == "finished"
    # Committed rows are kept as they were; the rows of the file as it is now that no
    # committed shard covers (8 and 9) are planned; nothing twice, nothing lost.
    keys = rollout_keys(tmp_path / "out", 1)
    assert set(keys) == {(i, 0) for i in range(10)} and max(keys.values()) == 1
    texts = {
        r["row_index"]: r["prompt_messages"][-1]["content"] for r in read_output(tmp_path / "out")
    }
    assert texts[7] == "row 7" and texts[8] == "new 2" and texts[9] == "new 3"
    assert job_status(str(tmp_path / "out"))["complete"]
    assert run_job(config).progress["run"]["todo"] == 0


def test_an_input_that_changes_while_the_job_runs_stops_it_with_a_message(tmp_path):
    """The driver, as a user runs it: a one-paragraph message, no traceback."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"row {i}"} for i in range(400)])
    config = {
        "model": "sim",
        "engine": {
            "kind": "simulated",
            "output_tokens": 4,
            "latency_s": 0.5,
            "shards_in_flight": 2,
        },
        "datasets": [{"name": "t", "path": str(data)}],
        "output": str(tmp_path / "out"),
        "shard_size": 10,
        "metrics_port": 0,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "ROLLOUT_RAY_DASHBOARD": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    wait_until(lambda: has_commits(tmp_path / "out"), 300, "the first commit", every=0.1)
    data.write_text(data.read_text()[: len(data.read_text()) // 2])  # truncated mid-run
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]  # the job stopped on a fault: 1, not usage's 2
    assert "in.jsonl changed after the job was planned" in err
    assert "Traceback" not in err and "--force-new-config" in err


def test_force_new_config_after_an_input_file_is_deleted(ray_session, tmp_path):
    from rollout_ray.output.plan import prepare_output

    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "a.jsonl", [{"prompt": f"a {i}"} for i in range(4)])
    write_jsonl(inbox / "b.jsonl", [{"prompt": f"b {i}"} for i in range(8)])
    config = simulated([{"name": "d", "path": str(inbox / "*.jsonl")}], tmp_path / "out")
    prepare_output(config)  # planned (as a run that stopped before b's shards ran)
    (inbox / "b.jsonl").unlink()
    with pytest.raises(ResumeRefused, match=r"b\.jsonl is gone"):
        run_job(config)
    assert run_job(config, force_new_config=True).status == "finished"
    assert job_status(str(tmp_path / "out"))["complete"]
    # The gone files' unfinished shards are dropped, not read again and again.
    tasks = sorted(r["task_id"] for r in read_output(tmp_path / "out"))
    assert tasks == [f"a:{i}" for i in range(4)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _endpoint_job(url: str, data: Path, output: Path, **extra) -> dict:
    return {
        "model": "m",
        "engine": {
            "kind": "openai",
            "base_url": url,
            "api_key_env": None,
            "max_retries": 0,
            "backoff_base_s": 0.01,
        },
        "datasets": [{"path": str(data), "num_repeats": 2}],
        "output": str(output),
        "executor": "local",
        "max_attempts": 1,
        "metrics_port": 0,
        **extra,
    }


def test_a_run_whose_every_rollout_failed_for_one_cause_is_a_job_fault(tmp_path):
    """Seen before the check: an endpoint that is down gave exit 0, "finished", and
    no rollouts."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"ok {i}"} for i in range(4)])
    down = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(_endpoint_job(down, data, tmp_path / "a")))
    done = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(tmp_path / "job.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 1, done.stderr
    error = " ".join(done.stderr.split())
    assert "all 8 rollouts this run tried failed for the same cause" in error
    assert re.search(r"same cause, .*: generate: API(Timeout|Connection)Error: ", error)
    assert "max_attempts=2" in error  # what helps once the endpoint is back
    assert "this run:" in done.stdout  # the summary is still shown
    assert len(read_output(tmp_path / "a", "failures")) == 8

    # The same through the library: a JobFault carrying the run's result.
    from rollout_ray.run.verdict import EveryRolloutFailed

    server = FaultServer(api_key="unused-key", delay_s=0.01).start()
    rows = [{"prompt": f"dead {i}"} for i in range(3)]
    config = load_config(
        _endpoint_job(server.url, write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "b")
    )
    with pytest.raises(EveryRolloutFailed, match="503") as raised:
        run_job(config)
    assert raised.value.result.status == "finished"
    # Rows that fail alone while others succeed are the rows' failures: the run is fine.
    rows += [{"prompt": "ok 3"}]
    mixed = _endpoint_job(server.url, write_jsonl(tmp_path / "m.jsonl", rows), tmp_path / "c")
    result = run_job(load_config(mixed))
    assert result.status == "finished" and result.datasets["m"]["ok"] == 2
