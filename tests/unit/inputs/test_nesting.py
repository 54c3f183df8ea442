"""One nesting limit for rows, however deep the row (Parquet's own readers refuse a
schema nested more than 100 levels, so Parquet rows are within it)."""

from __future__ import annotations

from rollout_ray.inputs.nesting import MAX_DEPTH
from rollout_ray.inputs.reading import parse_jsonl_line


def nested_text(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_a_row_at_the_limit_is_read_and_one_past_it_is_refused_naming_the_field():
    at = parse_jsonl_line(f'{{"prompt": "p", "tools": {nested_text(MAX_DEPTH - 1)}}}'.encode(), 0)
    assert at.error is None and at.value is not None
    past = parse_jsonl_line(f'{{"prompt": "p", "tools": {nested_text(MAX_DEPTH)}}}'.encode(), 0)
    assert past.value is None and past.error is not None
    assert str(past.error).startswith("field 'tools' nests objects and arrays more than")


def test_a_row_too_deep_for_the_parser_still_names_its_field():
    # Past Python's own recursion limit: json.loads gives up; the field is found by a
    # scan of the text (with an escaped quote in a key before it).
    line = f'{{"a\\"b": "x", "deep \\u00e9": {nested_text(50_000)}}}'.encode()
    row = parse_jsonl_line(line, 3)
    assert row.value is None
    assert str(row.error).startswith("field 'deep é' nests objects and arrays")
