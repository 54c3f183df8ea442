"""Hostile JSONL lines for the no-row-stops-a-job tests (and benchmarks/fuzz.py).

Strategies (hypothesis) for what users and public datasets bring: any JSON value in
any field, empty containers, mixed types, nesting up to 1,000 levels, integers past
64 bits and past Python's 4,300-digit conversion limit, NaN and infinities, any
unicode, lone surrogate escapes, invalid UTF-8 bytes, missing and extra fields, and
the three row shapes with wrong types inside. A line is bytes without a newline.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from hypothesis import strategies as st

ROLES = ["system", "user", "assistant", "developer", "tool"]
SAMPLING_KEYS = ["temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "bogus"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from([*ROLES, "robot"]) | json_values,
                "content": st.text(max_size=30) | json_values,
            }
        ),
        json_values,
    ),
    max_size=3,
)
extras = {
    "expected_answer": json_values,
    "metadata": json_values,
    "sampling": st.dictionaries(st.sampled_from(SAMPLING_KEYS), json_values, max_size=3)
    | json_values,
    "prescriptions": st.just({}) | json_values,
}
rows = st.one_of(
    st.fixed_dictionaries({"prompt": st.text(max_size=40) | json_values}, optional=extras),
    st.fixed_dictionaries({"messages": messages | json_values}, optional=extras),
    st.fixed_dictionaries(
        {
            "responses_create_params": st.fixed_dictionaries(
                {},
                optional={
                    "input": st.text(max_size=30) | messages | json_values,
                    "instructions": json_values,
                    "temperature": json_values,
                    "max_output_tokens": json_values,
                    "metadata": json_values,
                },
            )
            | json_values
        },
        optional=extras,
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),  # no known shape
)


def _dumps(value) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except ValueError:  # an integer of more digits than Python prints
        return b'{"prompt": "unprintable"}'


@st.composite
def deep_row(draw) -> bytes:
    depth = draw(st.integers(0, 1_000))
    kind = draw(st.sampled_from(["list", "dict"]))
    nest = "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth
    return b'{"prompt": "deep", "nest": ' + nest.encode() + b"}"


@st.composite
def corrupted(draw, base=rows) -> bytes:
    """A row with invalid UTF-8 bytes or a lone surrogate escape put inside it."""
    line = _dumps(draw(base))
    at = draw(st.integers(0, len(line)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\\ud800", b"\\udfff"]))
    return line[:at] + junk + line[at:]


special = st.sampled_from(
    [
        b'{"prompt": "big", "n": ' + b"9" * 5_000 + b"}",  # past Python's digit limit
        b'{"prompt": "nan", "x": NaN, "y": -Infinity}',
        b'{"prescriptions": {}, "prompt": "empty object"}',
        b'{"messages": [{"role": ["user"], "content": "hi"}]}',
        b'{"responses_create_params": {"input": "hi", "metadata": [1, 2]}}',
        b'{"prompt": "surrogate \\ud800 here"}',
        b"\xef\xbb\xbf" + b'{"prompt": "after a byte-order mark"}',
        b"",
        b"   ",
        b"[1, 2, 3]",
        b'"just a string"',
        b"{not json",
    ]
)
garbage = st.text(
    alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40
).map(lambda t: t.encode())
lines = st.one_of(
    rows.map(_dumps),
    rows.map(_dumps),
    rows.map(_dumps),
    deep_row(),
    corrupted(),
    special,
    garbage,
)


def write_lines(path: Path, content: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in content))
    return path


def rollout_keys(output: Path | str, repeats: int) -> Counter:
    """(row, rollout) of every stored rollout and every failure, a whole-row failure
    counting once per repeat: each input line's rollouts must appear exactly once."""
    from helpers import read_output

    keys: Counter = Counter()
    for record in read_output(output):
        keys[(record["row_index"], record["rollout_index"])] += 1
    for failure in read_output(output, "failures"):
        index = failure["rollout_index"]
        for i in range(repeats) if index < 0 else [index]:
            keys[(failure["row_index"], i)] += 1
    return keys
