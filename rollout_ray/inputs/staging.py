"""Inputs that byte ranges can't cut, made plain JSONL once, under the job's output.

A compressed JSONL file (.jsonl.gz, .jsonl.zst, ...) can't be read from the middle, and
a `.json` file holding one array has no line per row. Rather than decompress from the
start for every shard (quadratic in the file's size) or make the whole file one piece
of work, such a file is streamed once, at plan time, into `OUTPUT/_staged/DATASET/
KEY.jsonl`, and planned and read like any JSONL file. A sidecar records which version
of the user's file the copy was made from, so a resume reuses it and a changed file is
staged again. Costs: one pass over the file and its uncompressed size in the output.

A `.json` file that is not an array is taken as JSON Lines (as Hugging Face often
names them) and read in place when uncompressed. Arrow IPC files (`.arrow`, what
Hugging Face `datasets` writes with `save_to_disk`) are staged as Parquet.

A compressed file cut short or corrupt is staged up to its last complete row; a last
line then stands for the rest (`reading.unreadable_line`): it is read as that row's
failure (stage `read`), naming the file, the compressed byte where it broke and the
rows before it, so the job goes on and the loss is on record. How many rows were lost
can't be known: one failure record stands for all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace

from rollout_ray import storage
from rollout_ray.errors import ConfigError
from rollout_ray.inputs.decompress import BrokenStream, decompressed
from rollout_ray.inputs.nesting import deep_parsing
from rollout_ray.inputs.reading import unreadable_line
from rollout_ray.inputs.sources import InputFile

log = logging.getLogger(__name__)

COPY_BLOCK = 16 << 20
#: Rows per row group of a staged Arrow file: shards are cut at row groups.
ARROW_ROW_GROUP = 4096


def prepare(
    dataset: str, file: InputFile, output: str, restage: bool = True
) -> tuple[InputFile | None, str | None]:
    """The file to plan for `file`, and the user's URI when that is a staged copy.

    A copy made from another version of the file is made again only with `restage`
    (a new plan, or --force-new-config); otherwise (None, None): a running job's rows
    must not change under it.

    Raises:
        ConfigError: a `.json` file that is neither a JSON array nor JSON Lines.
    """
    kind = file.format
    if kind == "json":
        kind = "array" if _starts_with_bracket(file) else "jsonl"
        if kind == "jsonl" and file.compression is None:
            return _as(file, file.uri, file.size, file.version), None
    elif kind != "arrow" and file.compression is None:
        return file, None
    fmt = "parquet" if kind == "arrow" else "jsonl"
    stage = {"arrow": _stage_arrow, "array": _stage_array}.get(kind, _stage_lines)
    dest = storage.join(output, "_staged", dataset, f"{file.key}.{fmt}")
    marker = dest + ".source.json"
    wanted = {"uri": file.uri, "size": file.size, "version": file.version}
    exists = storage.exists(dest)
    current = exists and _read_marker(marker) == wanted
    if exists and not current and not restage:
        return None, None
    if not current:
        log.info("staging %s as %s at %s", file.uri, fmt, dest)
        stage(file, dest)
        storage.write_json_atomic(marker, wanted)
    fs, path = storage.split_uri(dest)
    info = storage.retrying(lambda: fs.info(path), f"stat {dest}")
    staged = _as(file, dest, int(info["size"]), storage.version_stamp(info))
    return (replace(staged, format=fmt), file.uri)


def _as(file: InputFile, uri: str, size: int, version: str) -> InputFile:
    return InputFile(uri, file.key, "jsonl", size, version, None)


def _read_marker(uri: str) -> dict | None:
    try:
        return storage.read_json(uri)
    except (FileNotFoundError, ValueError):
        return None


def _blocks(file: InputFile) -> Iterator[bytes]:
    """The file's bytes, decompressed, block by block.

    Raises:
        BrokenStream: after the last good block, when compressed data is cut short or
            corrupt.
    """
    if file.compression is not None:
        yield from decompressed(file.uri, file.compression)
        return
    fs, path = storage.split_uri(file.uri)
    with fs.open(path, "rb") as f:
        while block := f.read(COPY_BLOCK):
            yield block


def _starts_with_bracket(file: InputFile) -> bool:
    """Whether the file's first character (after whitespace and a BOM) is '['."""
    head = b""
    try:
        for block in _blocks(file):
            head += block
            if len(head) >= 4096:
                break
    except BrokenStream:
        pass  # staging the file says where it broke
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return text[:1] == b"["


def _stage_lines(file: InputFile, dest: str) -> None:
    """Decompress a JSONL file, block by block (memory stays at one block and the
    longest line). If it breaks, the rows that can be trusted are kept and a last line
    records where (see the module's docstring); corrupt data is copied a second time,
    up to the end of the last stream before the damage."""
    try:
        _copy_lines(file, dest)
    except _Untrusted as untrusted:
        _copy_lines(file, dest, untrusted.broken)


class _Untrusted(Exception):
    def __init__(self, broken: BrokenStream):
        self.broken = broken


def _copy_lines(file: InputFile, dest: str, stop: BrokenStream | None = None) -> None:
    """Copy the file's lines; with `stop`, only its first `stop.keep` bytes, then
    the line that records why."""
    rows = copied = 0
    tail: list[bytes] = []  # the line being read, not yet complete
    with storage.open_atomic(dest) as out:
        try:
            for block in _blocks(file):
                if stop is not None and stop.keep is not None:
                    block = block[: stop.keep - copied]
                    if not block:
                        raise stop
                copied += len(block)
                cut = block.rfind(b"\n") + 1
                if not cut:
                    tail.append(block)
                    continue
                out.writelines(tail)
                out.write(block[:cut])
                rows += block.count(b"\n", 0, cut)
                tail = [block[cut:]]
        except BrokenStream as exc:
            if exc.keep is not None and exc.keep < copied:
                raise _Untrusted(exc) from None  # nothing written is kept
            reason = (
                f"{file.uri} could not be read past row {rows}: {exc.reason}; this row and "
                "the rest of the file are lost (the rows before it are kept)"
            )
            log.warning("%s", reason)
            out.write(unreadable_line(reason, b"".join(tail)))
            return
        out.writelines(tail)


def _stage_array(file: InputFile, dest: str) -> None:
    """A JSON array, one element per line. The array is parsed whole: `.json` arrays
    are the small-dataset format (large ones are JSONL, which is streamed). One that
    can't be read or parsed is staged as one failure record: the job goes on."""
    try:
        data = b"".join(_blocks(file))
    except BrokenStream as exc:
        return _unreadable_array(dest, f"{file.uri} could not be read: {exc.reason}", b"")
    try:
        with deep_parsing():  # a row too deep is refused alone when read, not the file
            rows = json.loads(data.decode("utf-8-sig", errors="replace"))
    except (ValueError, RecursionError) as exc:
        return _unreadable_array(
            dest,
            f"{file.uri} is not valid JSON ({exc}); a .json input is one JSON array of row "
            "objects, or JSON Lines (one object per line; name it .jsonl)",
            data,
        )
    if not isinstance(rows, list):
        raise ConfigError(f"{file.uri} is a JSON {type(rows).__name__}, not an array of rows")
    with storage.open_atomic(dest) as out, deep_parsing():
        for row in rows:
            # ASCII escapes keep any lone surrogate as an escape, repaired when read.
            out.write(json.dumps(row).encode() + b"\n")


def _unreadable_array(dest: str, reason: str, data: bytes) -> None:
    reason += ". A .json array is parsed whole, so none of its rows could be read"
    log.warning("%s", reason)
    with storage.open_atomic(dest) as out:
        out.write(unreadable_line(reason, data))


def _stage_arrow(file: InputFile, dest: str) -> None:
    """An Arrow IPC file (stream or file format: Hugging Face's `.arrow` files are
    streams) copied to Parquet, planned by row groups like any Parquet input. Batch by
    batch: memory stays at one record batch."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    fs, path = storage.split_uri(file.uri)
    with fs.open(path, "rb") as src:
        try:
            reader = ipc.open_stream(src)
        except Exception:
            src.seek(0)
            try:
                reader = ipc.open_file(src)
            except Exception as exc:
                raise ConfigError(f"{file.uri} is not an Arrow IPC file: {exc}") from None
        batches = (
            (reader.get_batch(i) for i in range(reader.num_record_batches))
            if isinstance(reader, ipc.RecordBatchFileReader)
            else reader
        )
        with storage.open_atomic(dest) as out:
            writer = pq.ParquetWriter(out, reader.schema, compression="zstd")
            for batch in batches:
                writer.write_batch(batch, row_group_size=ARROW_ROW_GROUP)
            writer.close()
