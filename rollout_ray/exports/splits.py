"""Train/validation splits and shuffling for the sft, dpo and rl exports.

The split is by task: a task's rows all go to one side (no prompt is trained on and
validated on), chosen by a hash of (seed, dataset, task_id), so the same seed splits
the same way in every run and on every output. The validation file sits beside the
destination: `sft.jsonl` -> `sft.val.jsonl`.
"""

from __future__ import annotations

import hashlib
from types import TracebackType

import numpy as np
import pyarrow as pa

from rollout_ray.exports.writer import TableWriter, check_number


def val_path(dest: str) -> str:
    """`x/sft.jsonl` -> `x/sft.val.jsonl` (the last extension kept)."""
    head, dot, ext = dest.rpartition(".")
    return f"{head}.val.{ext}" if dot and "/" not in ext else f"{dest}.val"


def in_validation(table: pa.Table, fraction: float, seed: int) -> np.ndarray:
    """Per row: whether its task falls in the validation share."""
    keys = zip(table["dataset"].to_pylist(), table["task_id"].to_pylist(), strict=True)
    cut = int(fraction * 2**64)
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(f"{seed}\0{d}\0{t}".encode(), digest_size=8).digest(), "big"
            )
            < cut
            for d, t in keys
        ],
        dtype=bool,
    )


class SplitWriter:
    """A TableWriter for the training rows and, with a validation fraction, one for the
    validation rows; with `shuffle`, rows are held until the end and written in a
    seeded random order (the selected rows must fit in memory)."""

    def __init__(
        self,
        dest: str,
        schema: pa.Schema,
        val_fraction: float | None = None,
        seed: int = 0,
        shuffle: bool = False,
    ):
        if val_fraction is not None:
            val_fraction = check_number("val_fraction", val_fraction, minimum=0.0)
            if not 0 < val_fraction < 1:
                raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be a whole number, got {seed!r}")
        if not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be true or false, got {shuffle!r}")
        self.fraction, self.seed, self.shuffle = val_fraction, seed, shuffle
        self.train = TableWriter(dest, schema)
        self.val = TableWriter(val_path(dest), schema) if val_fraction else None
        self._held: list[pa.Table] = []

    @property
    def rows(self) -> int:
        return self.train.rows

    @property
    def val_rows(self) -> int:
        return self.val.rows if self.val is not None else 0

    def __enter__(self) -> SplitWriter:
        self.train.__enter__()
        if self.val is not None:
            self.val.__enter__()
        return self

    def write(self, table: pa.Table) -> None:
        if self.shuffle:
            self._held.append(table)
        else:
            self._route(table)

    def _route(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self.val is None or self.fraction is None:
            self.train.write(table)
            return
        val = in_validation(table, self.fraction, self.seed)
        self.val.write(table.filter(pa.array(val)))
        self.train.write(table.filter(pa.array(~val)))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self._held:
                table = pa.concat_tables(self._held)
                order = np.random.default_rng(self.seed).permutation(table.num_rows)
                self._route(table.take(pa.array(order)))
        finally:
            self._held = []
            # Both files, even one of them empty, when the split has rows; else neither.
            rows = self.train.pending + (self.val.pending if self.val is not None else 0)
            self.train.keep_empty = rows > 0
            if self.val is not None:
                self.val.keep_empty = rows > 0
                self.val.__exit__(exc_type, exc, tb)
            self.train.__exit__(exc_type, exc, tb)

    def report(self) -> dict[str, object]:
        extra: dict[str, object] = {}
        if self.val is not None:
            extra.update(val_rows=self.val_rows, val_dest=self.val.dest, val_fraction=self.fraction)
        if self.shuffle:
            extra["shuffled_with_seed"] = self.seed
        return extra
