"""How deep a row may nest objects and arrays: one limit, checked when a row is read.

Python parses, pickles, encodes and walks JSON recursively, so how deep a value can
go depends on the process's recursion limit and on how much stack is already in use:
a row nested 1,500 levels deep was accepted by an engine actor (which raised its
limit) and refused in process, and a row nested 5,000 levels deep that the run
accepted stopped `export gym` and `verify` (default limit) with a RecursionError.
One limit, far below what any stage's default recursion limit can handle and far
above what real rows use (tool schemas nest a dozen levels), makes every stage agree:
a row deeper than MAX_DEPTH is that row's failure, naming the field, whatever the
executor; a row within it can be run, verified and exported.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

#: Most levels of objects and arrays inside one another in a row, the row itself
#: counted as one (`{"a": {"b": [1]}}` is 3 levels deep).
MAX_DEPTH = 100


def too_deep(row: dict[str, Any]) -> str | None:
    """Why `row` is refused for nesting deeper than MAX_DEPTH, naming its field; None
    when it is within the limit. Walks without recursion, so any depth is measured."""
    for key, value in row.items():
        stack = [(value, 2)] if isinstance(value, (dict, list)) else []
        while stack:
            item, depth = stack.pop()
            if depth > MAX_DEPTH:
                return reason(key)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return None


def may_be_too_deep(line: bytes) -> bool:
    """A quick bound (no parse): a line with at most MAX_DEPTH brackets can't nest
    deeper than MAX_DEPTH."""
    return line.count(b"{") + line.count(b"[") > MAX_DEPTH


def too_deep_text(text: str) -> str:
    """The reason for a JSON text too deep for the parser itself, naming the top-level
    field where the nesting passes MAX_DEPTH when it can be found."""
    depth, key, last, start = 0, None, None, 0
    in_string = escaped = False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 1:
                    last = text[start:i]
        elif char == '"':
            in_string, start = True, i + 1
        elif char == ":" and depth == 1:
            key = last
        elif char in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                break
        elif char in "}]":
            depth -= 1
    if key is None:
        return reason(None)
    try:
        return reason(json.loads(f'"{key}"'))
    except ValueError:
        return reason(key)


def reason(field: str | None) -> str:
    what = f"field {field!r} nests" if field is not None else "the row nests"
    return (
        f"{what} objects and arrays more than {MAX_DEPTH} levels deep; rows may nest at most "
        f"{MAX_DEPTH} levels (the row counted), so that every stage (run, verify, export) "
        "handles them alike"
    )


@contextlib.contextmanager
def deep_parsing() -> Iterator[None]:
    """Parse and re-encode a whole file whose rows may be too deep (a `.json` array
    is parsed at once): each too-deep row is then refused alone when read, instead
    of the file. The recursion limit is raised only for the block."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)
