"""One spelling of every location: however an output is named (relative, `./`, a
trailing `/`, absolute, `file://`), commits, listings, sweeps and readers agree on its
files, and a committed file is never taken for an orphan."""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import write_jsonl

from rollout_ray import read_rollouts, run_job, storage
from rollout_ray.config import load_config
from rollout_ray.output import manifest
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import Commit, commits_table


@pytest.mark.parametrize(
    "spelling",
    [
        "outputs/x",
        "./outputs/x",
        "outputs/x/",
        "outputs//x",
        "{cwd}/outputs/x",
        "file://{cwd}/outputs/x",
    ],
)
def test_every_spelling_of_a_local_output_is_one_location(spelling, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = spelling.format(cwd=tmp_path)
    assert Layout(named).output == str(tmp_path / "outputs" / "x")
    assert storage.canonical(named) == str(tmp_path / "outputs" / "x")


def test_object_store_spellings():
    assert storage.canonical("s3a://bucket/out/") == "s3://bucket/out"
    assert storage.canonical("S3://bucket/out") == "s3://bucket/out"
    assert Layout("s3://bucket/out/").path("data") == "s3://bucket/out/data"


@pytest.mark.parametrize("spelling", ["outputs/job", "./outputs/job/", "file://{cwd}/outputs/job"])
def test_a_job_run_and_read_through_relative_spellings_keeps_every_rollout(
    spelling, tmp_path, monkeypatch
):
    """The bug this guards: commits named `outputs/<job>/data/...` while listings gave
    absolute paths, so the end-of-run sweep deleted every committed file."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}"} for i in range(12)])
    output = spelling.format(cwd=tmp_path)
    config = {
        "model": "sim",
        "engine": {"kind": "simulated", "output_tokens": 3},
        "datasets": [{"name": "d", "path": "rows.jsonl", "num_repeats": 2}],
        "output": output,
        "shard_size": 4,
        "metrics": False,
    }
    run_job(load_config(config))
    run_job(load_config(config))  # a second run (resume: nothing left) sweeps again
    assert read_rollouts("outputs/job").num_rows == 24
    assert read_rollouts(str(tmp_path / "outputs" / "job")).num_rows == 24
    # Commits name files relative to the output: moved elsewhere, it still reads.
    shutil.move(tmp_path / "outputs" / "job", tmp_path / "moved")
    assert read_rollouts("moved").num_rows == 24


def test_commits_of_older_versions_still_resolve(tmp_path, monkeypatch):
    """Older records named files by absolute path, or relative to the job's working
    directory; both read back, and a sweep keeps them."""
    monkeypatch.chdir(tmp_path)
    layout = Layout("out")
    absolute = str(tmp_path / "out" / "data" / "dataset=d" / "part-a.parquet")
    relative = os.path.join("out", "failures", "dataset=d", "part-b.parquet")
    for uri in (absolute, relative):
        storage.write_bytes_atomic(uri, b"x")
    old = Commit("p#r0", "p", "d", 0, data_file=absolute, failures_file=relative)
    storage.write_parquet_atomic(storage.join(layout.commits, "0.parquet"), commits_table([old]))
    [record] = manifest.read_commits(layout)
    assert record.files == (absolute, str(tmp_path / relative))
    orphan = storage.join(layout.data_dir("d"), "part-c.parquet")
    storage.write_bytes_atomic(orphan, b"x")
    assert manifest.sweep_orphans(layout, manifest.committed_files([record]), lambda: None) == 1
    assert os.path.exists(absolute) and os.path.exists(relative) and not os.path.exists(orphan)
