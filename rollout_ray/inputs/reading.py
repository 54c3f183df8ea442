"""Reading one shard: check that its file is the one planned, then parse its rows.

Parsing never raises for a row: whatever is wrong with a line (bad JSON, not an
object, nested deeper than rows may (see `nesting`), a number too long to convert)
becomes that row's error, and text that can still be used is repaired with a warning
instead of refused (invalid UTF-8 bytes, lone surrogate escapes).
"""

from __future__ import annotations

import json
import re
from typing import Any

from rollout_ray import storage
from rollout_ray.errors import InputChanged, RowError, UnreadableInput
from rollout_ray.inputs.nesting import may_be_too_deep, too_deep, too_deep_text
from rollout_ray.inputs.sources import Shard, SourceRow

#: Starts the line a staged copy ends with when the rest of its source could not be
#: read (see `staging`): JSON text never starts with a NUL byte.
UNREADABLE = b"\x00rollout-ray: unreadable input\x00"


def read_shard(shard: Shard) -> list[SourceRow]:
    """The shard's rows, parsed; a row that can't be parsed carries its error instead.

    Raises:
        InputChanged: the file is not the one planned (changed, truncated, gone), or
            holds fewer rows where the shard was planned: its rows can't be trusted.
        OSError: storage failed after retries (the rows may be fine later).
    """
    check_unchanged(shard)
    rows = _read_jsonl(shard) if shard.format == "jsonl" else _read_parquet(shard)
    if len(rows) != shard.num_rows:
        raise InputChanged(
            f"{shard.source} has {len(rows)} rows where the plan has {shard.num_rows} "
            f"(rows {shard.first_row + 1}-{shard.first_row + shard.num_rows}): it changed "
            "after the job was planned. Restore it, or run with --force-new-config to plan "
            "it again (committed rollouts are kept)."
        )
    return rows


def check_unchanged(shard: Shard) -> None:
    """Raise InputChanged unless the file is the one the shard was planned on.

    A JSONL file that only grew keeps its planned rows (appending is how inputs grow
    in watch mode); any other change in size or version, or a missing file, does not.
    Plans written before stamps were recorded are not checked.
    """
    if shard.file_size is None:
        return
    fs, path = storage.split_uri(shard.file_uri)
    try:
        info = storage.retrying(lambda: fs.info(path), f"stat {shard.file_uri}")
    except FileNotFoundError:
        raise InputChanged(
            f"{shard.source} is gone; the job planned {shard.num_rows} rows from it. Restore "
            "it, or run with --force-new-config to go on without it."
        ) from None
    size, version = int(info["size"]), storage.version_stamp(info)
    if size == shard.file_size and version == shard.file_version:
        return
    if shard.format == "jsonl" and size > shard.file_size:
        return
    raise InputChanged(
        f"{shard.source} changed after the job was planned (size {shard.file_size} -> "
        f"{size} bytes, version {shard.file_version} -> {version}); its planned rows no "
        "longer match. Restore it, or run with --force-new-config to plan it again "
        "(committed rollouts are kept)."
    )


def _read_jsonl(shard: Shard) -> list[SourceRow]:
    fs, path = storage.split_uri(shard.file_uri)
    assert shard.byte_start is not None and shard.byte_end is not None

    def read() -> bytes:
        with fs.open(path, "rb") as f:
            f.seek(shard.byte_start)
            return f.read(shard.byte_end - shard.byte_start)

    data = storage.retrying(read, f"read {shard.file_uri}")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows = []
    staged = shard.source_uri is not None
    for i, line in enumerate(lines[: shard.num_rows]):
        row_index = shard.first_row + i
        if staged and line.startswith(UNREADABLE):
            rows.append(unreadable_row(line, row_index))
        else:
            rows.append(parse_jsonl_line(line, row_index))
    return rows


def unreadable_line(reason: str, partial: bytes) -> bytes:
    """The line a staged copy ends with when the rest of its source can't be read:
    read back as that row's failure (`unreadable_row`), so the loss is on record."""
    head = partial[:2000].decode("utf-8", errors="replace")
    return UNREADABLE + json.dumps({"error": reason, "raw": head}).encode() + b"\n"


def unreadable_row(line: bytes, row_index: int) -> SourceRow:
    detail = json.loads(line[len(UNREADABLE) :])
    return SourceRow(row_index, None, UnreadableInput(detail["error"]), detail["raw"] or None)


#: A JSON escape of a UTF-16 surrogate: the only way a lone one gets into parsed text.
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def parse_jsonl_line(line: bytes, row_index: int) -> SourceRow:
    """One JSONL line as a row. Never raises: whatever is wrong with the line is the
    row's error. Text is repaired rather than refused where the row is still usable:
    invalid UTF-8 bytes and lone surrogate escapes become U+FFFD, with a warning."""
    warnings = []
    try:
        text = line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as exc:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        warnings.append(f"invalid UTF-8 bytes (first at byte {exc.start}) replaced with U+FFFD")
    if text[:1] == "\ufeff":  # a byte-order mark, as some Windows tools write
        text = text[1:]
        warnings.append("a leading byte-order mark (U+FEFF) dropped")
    if not text.strip():
        return SourceRow(row_index, None, RowError("empty line"), text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return SourceRow(row_index, None, RowError(f"malformed JSON: {exc}"), text)
    except RecursionError:
        return SourceRow(row_index, None, RowError(too_deep_text(text)), text[:2000])
    except Exception as exc:  # e.g. an integer of more digits than Python converts
        return SourceRow(row_index, None, RowError(f"unreadable JSON: {exc}"), text[:2000])
    if not isinstance(value, dict):
        reason = f"expected a JSON object, got {_json_kind(value)}"
        return SourceRow(row_index, None, RowError(reason), text)
    deep = too_deep(value) if may_be_too_deep(line) else None
    if deep is not None:
        return SourceRow(row_index, None, RowError(deep), text[:2000])
    if _SURROGATE_ESCAPE.search(line):
        value, repaired = _repair_text(value)
        if repaired:
            warnings.append("lone UTF-16 surrogate escapes replaced with U+FFFD")
    return SourceRow(row_index, value, None, None, warnings or None)


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _repair_text(value: Any) -> tuple[Any, bool]:
    """`value` with lone surrogates in its strings (keys too) replaced; whether any was."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value, False
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), True
    if isinstance(value, list):
        items = [_repair_text(v) for v in value]
        return [v for v, _ in items], any(r for _, r in items)
    if isinstance(value, dict):
        out, repaired = {}, False
        for key, item in value.items():
            key, r1 = _repair_text(key)
            out[key], r2 = _repair_text(item)
            repaired = repaired or r1 or r2
        return out, repaired
    return value, False


def _read_parquet(shard: Shard) -> list[SourceRow]:
    table = storage.read_parquet(shard.file_uri, row_group=shard.row_group)
    table = table.slice(shard.row_group_offset or 0, shard.num_rows)
    return [SourceRow(shard.first_row + i, row) for i, row in enumerate(table.to_pylist())]
