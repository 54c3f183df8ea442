"""An output's promises, checked from its files: what `rollout-ray status --check` and the
test suite (after every end-to-end job) verify.

- every file a commit record names exists, and holds the rows the record counts;
- each (dataset, task_id, rollout_index) has at most one committed rollout;
- the committed rollouts, read as exports read them, are exactly the committed count;
- no data or failures file lies under the output that no commit names (such files
  are lost attempts; a finished run removes them, so one left means a run did not end
  cleanly or something else wrote there): reported apart, as a note, since a job that
  is running has them in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.parquet as pq

from rollout_ray import storage
from rollout_ray.output import manifest
from rollout_ray.output.manifest import Layout
from rollout_ray.output.results import committed_pieces, read_rollouts


@dataclass
class Check:
    """What `check_output` found: broken promises, notes, and the counts behind them."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    committed: int = 0  # rollouts the commit records count as stored
    read: int = 0  # rollouts read back as exports read them

    @property
    def ok(self) -> bool:
        return not self.problems


def check_output(output: str) -> Check:
    """Check a job's output against its commit records (see the module docstring).

    Raises:
        RolloutRayError: there is no job at `output`.
    """
    layout = Layout(output)
    found = Check()
    pieces = committed_pieces(layout.output)
    for piece in pieces:
        found.committed += piece.n_ok
        for kind, expected in (("data", piece.n_ok), ("failures", None)):
            uri = piece.file(kind)
            if uri is None:
                if kind == "data" and piece.n_ok:
                    found.problems.append(f"{piece.piece_id}: {piece.n_ok} rollouts, no file")
                continue
            if not storage.exists(uri):
                found.problems.append(f"{piece.piece_id}: its {kind} file {uri} is missing")
                continue
            if expected is not None:
                rows = _rows(uri)
                if rows != expected:
                    found.problems.append(
                        f"{piece.piece_id}: {uri} holds {rows} rollouts, its commit {expected}"
                    )
    if found.problems:
        return found
    table = read_rollouts(layout.output, columns=["dataset", "task_id", "rollout_index"])
    found.read = table.num_rows
    if found.read != found.committed:
        found.problems.append(f"{found.read} rollouts read back, {found.committed} committed")
    keys = set(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    if len(keys) != table.num_rows:
        found.problems.append(f"{table.num_rows - len(keys)} rollouts are committed twice")
    named = {storage.canonical(f) for f in manifest.committed_files(pieces)}
    for folder in ("data", "failures"):
        for uri in storage.list_files(layout.path(folder), ".parquet"):
            if uri not in named:
                found.notes.append(f"{uri}: no commit names it (a lost attempt's file)")
    return found


def _rows(uri: str) -> int:
    fs, path = storage.split_uri(uri)
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows
