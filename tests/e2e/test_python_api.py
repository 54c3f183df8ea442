"""The Python API as a notebook or a training loop uses it: run, read, export, again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import write_jsonl

import rollout_ray
from rollout_ray.errors import ConfigError

pytestmark = pytest.mark.slow


def test_collect_read_export_collect_again(ray_session, tmp_path):
    data = write_jsonl(
        tmp_path / "in.jsonl", [{"prompt": f"q {i}", "answer": i} for i in range(20)]
    )
    base = {
        "model": "sim",
        "engine": {"kind": "simulated", "output_tokens": 5},
        "datasets": [{"path": str(data), "num_repeats": 2}],
        "metrics_port": 0,
    }
    for round_ in (1, 2):  # collect -> (train) -> collect, each round its own output
        output = tmp_path / f"round-{round_}"
        result = rollout_ray.run(base, "sampling.temperature=0.5", output=str(output), limit=8)
        assert result.status == "finished" and result.output == str(output)
        table = rollout_ray.read_rollouts(output)
        assert table.num_rows == 16  # 8 rows x 2
        assert set(table.column("dataset").to_pylist()) == {"in"}
        assert all(s["temperature"] == 0.5 for s in table.column("sampling").to_pylist())
        ds = rollout_ray.read_rollouts(output, columns=["task_id"], ray_dataset=True)
        assert ds.count() == 16
        report = rollout_ray.export("sft", str(output), str(tmp_path / f"sft-{round_}.jsonl"))
        assert report.rows_written == 16
        lines = (tmp_path / f"sft-{round_}.jsonl").read_text().splitlines()
        assert json.loads(lines[0])["messages"][-1]["role"] == "assistant"
        assert rollout_ray.read_failures(output).num_rows == 0
    # Keywords with __ for dots, and the same refusals as the CLI.
    with pytest.raises(ConfigError, match="temprature"):
        rollout_ray.run(base, output=str(tmp_path / "x"), sampling__temprature=0.2)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_run_stopped_from_python_commits_what_it_finished(request, tmp_path, executor):
    """`stop` (as a notebook's interrupt or a training loop would): the running piece
    commits the rollouts it finished, RunInterrupted says what the output holds, and
    the next call, in the same process, does exactly the rest. One piece of 300 slow
    rollouts, in process and on the Ray this process is connected to."""
    import threading

    if executor == "ray":
        request.getfixturevalue("ray_session")

    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q {i}"} for i in range(100)])
    config = {
        "model": "sim",
        # 8 at a time, 0.3 s each: about 11 s for the piece.
        "engine": {"kind": "simulated", "latency_s": 0.3, "max_num_seqs": 8},
        "datasets": [{"path": str(data), "num_repeats": 3}],
        "shard_size": 100,
        "output": str(tmp_path / "out"),
        "metrics_port": 0,
        "executor": executor,
    }
    stop = threading.Event()
    seen: list[int] = []

    def stop_midway(progress):
        seen.append(progress["run"]["done"])
        if progress["run"]["done"] >= 30:
            stop.set()

    from rollout_ray.run.pipeline import run_job

    job = rollout_ray.load_config(config)
    with pytest.raises(rollout_ray.RunInterrupted) as stopped:
        run_job(job, on_progress=stop_midway, stop=stop)
    kept = rollout_ray.read_rollouts(tmp_path / "out").num_rows
    result = stopped.value.result
    assert result.status == "interrupted"
    assert kept == result.datasets["in"]["ok"] >= 30
    assert kept < 300  # stopped midway, not at the end
    assert rollout_ray.read_failures(tmp_path / "out").num_rows == 300 - kept  # interrupted
    finished = rollout_ray.run(config)
    assert finished.status == "finished"
    assert finished.progress["run"]["todo"] == 300 - kept  # exactly the rest
    table = rollout_ray.read_rollouts(tmp_path / "out", columns=["task_id", "rollout_index"])
    keys = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert len(keys) == len(set(keys)) == 300


#: A notebook's session: Ray connected the user's way (a plain `ray.init()`, or by a
#: Ray Data read), then jobs and reads in turn. Prints the rows read back after each.
_SESSION = """
import json, sys
import ray
import rollout_ray

tmp, connect = sys.argv[1], sys.argv[2]
if connect == "ray.init":
    ray.init(num_cpus=2, include_dashboard=False)
with open(f"{tmp}/in.jsonl", "w") as f:
    f.writelines(json.dumps({"prompt": f"q {i}"}) + "\\n" for i in range(6))
job = {
    "model": "sim",
    "engine": {"kind": "simulated", "output_tokens": 4},
    "datasets": [{"path": f"{tmp}/in.jsonl", "num_repeats": 2}],
    "metrics_port": 0,
}
for name in ("a", "b"):
    result = rollout_ray.run(job, output=f"{tmp}/{name}")
    rows = rollout_ray.read_rollouts(f"{tmp}/{name}", ray_dataset=True).count()
    print(name, result.status, result.metrics["executor"], rows, flush=True)
"""


@pytest.mark.parametrize("connect", ["ray.init", "read_rollouts"])
def test_jobs_run_in_a_process_already_connected_to_ray(tmp_path, connect):
    """A process the user connected to Ray (`ray.init()`, or a Ray Data read that
    started Ray) runs job after job on that Ray. Seen hanging at "ReadPendingPieces:
    0/1" when the piece stream's block size was set only by our own ray.init."""
    script = tmp_path / "session.py"
    script.write_text(_SESSION)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), connect],
        capture_output=True,
        text=True,
        timeout=600,  # a liveness bound: the bug this guards hung for good
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split() for line in done.stdout.splitlines() if line[:2] in ("a ", "b ")]
    # In a fresh process the first job runs in process; once Ray is connected (by the
    # user, or by the first job's ray_dataset read), jobs run on it.
    first_executor = "ray" if connect == "ray.init" else "local"
    assert lines == [["a", "finished", first_executor, "12"], ["b", "finished", "ray", "12"]]


NOTEBOOK_CELL = """
import rollout_ray
result = rollout_ray.run(
    {"model": "m", "engine": {"kind": "simulated"}, "executor": "ray", "metrics_port": 0,
     "datasets": [{"path": DATA}], "output": OUT}
)
print(result.status)
"""


def test_a_notebook_cell_shows_no_library_chatter(tmp_path):
    """What a notebook cell shows of a run on Ray with the dashboard off: the result,
    and none of Ray's notices. Seen before: "Token authentication is enabled", "Failed
    to start the dashboard" with its log's last lines (the dashboard was off), Ray
    Data's "Progress bars disabled" and "Dataset ... execution finished" (INFO)."""
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q {i}"} for i in range(4)])
    cell = NOTEBOOK_CELL.replace("DATA", repr(str(data))).replace("OUT", repr(str(tmp_path)))
    env = {
        **os.environ,
        "ROLLOUT_RAY_DASHBOARD": "0",
        # Ray gives its API server no time to start: the path that printed the notice.
        "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "0",
    }
    ran = subprocess.run(
        [sys.executable, "-c", cell], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "finished"
    said = ran.stderr
    for chatter in ("dashboard", "INFO ", "Progress bars", "Token authentication"):
        assert chatter not in said, said
    assert "Warning" not in said and "Traceback" not in said, said


def test_library_warnings_are_hidden_and_the_users_own_are_not(monkeypatch):
    import warnings

    from rollout_ray.logs import quiet_libraries

    monkeypatch.delenv("ROLLOUT_RAY_VERBOSE", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        for module in ("vllm.engine.arg_utils", "transformers.utils", "__main__"):
            warnings.warn_explicit("old", FutureWarning, "f.py", 1, module=module)
    assert [w.filename for w in seen] == ["f.py"]  # the notebook's own (__main__) only
