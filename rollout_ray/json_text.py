"""JSON text of any value a row can hold, valid for any JSON reader.

Python's `json.dumps` writes `NaN` and `Infinity`, which no other JSON reader takes
(DuckDB, JavaScript, `jq`), and `default=str` wrote a Parquet binary value as its
Python repr (`b'\\x00...'`). Here: infinities are `1e999` / `-1e999` (JSON numbers
that every reader, Python's included, reads back as infinity); NaN, which no JSON
number means, is `null`; bytes are their UTF-8 text, or base64 when they are not
text; dates and other values are their `str`. Each change that loses the value's
kind is said in `notes`, for the record's `row_warnings`.

A leaf module: prompts (inputs), verifiers and the record schema (output) all write
JSON text this one way.
"""

from __future__ import annotations

import base64
import json
import json.encoder
import math
from typing import Any


def dumps(value: Any, notes: list[str] | None = None, field: str = "") -> str:
    """`value` as JSON text. `notes` collects what was changed (named by `field`)."""
    said: list[str] = [] if notes is None else notes

    def default(other: Any) -> Any:
        if isinstance(other, bytes | bytearray | memoryview):
            data = bytes(other)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                said.append(f"{field or 'a value'}: binary data stored as base64 text")
                return base64.b64encode(data).decode("ascii")
        return str(other)

    try:  # the usual case, at C speed
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=default)
    except ValueError:  # a NaN or an infinity somewhere inside
        pass

    def floatstr(number: float, *_: Any) -> str:
        if math.isnan(number):
            said.append(f"{field or 'a value'}: NaN is not JSON, stored as null")
            return "null"
        if math.isinf(number):
            return "1e999" if number > 0 else "-1e999"
        return float.__repr__(number)

    encoder = json.JSONEncoder(ensure_ascii=False, default=default)
    chunks = json.encoder._make_iterencode(  # type: ignore[attr-defined]
        {},
        encoder.default,
        json.encoder.py_encode_basestring,
        None,
        floatstr,
        encoder.key_separator,
        encoder.item_separator,
        False,
        False,
        True,
    )
    return "".join(chunks(value, 0))


def to_json(value: Any) -> str:
    """JSON text of any value a row can hold, valid for any reader (see `dumps`), as
    valid UTF-8 (`clean_text`)."""
    return clean_text(dumps(value))


def clean_text(text: str) -> str:
    """`text` as valid UTF-8: lone surrogates (from a JSON escape such as \\ud800) become
    U+FFFD, which Arrow and every tokenizer accept."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
