"""The cheap, in-process verifiers: exact_match, regex, json_schema (mcqa: mcqa.py)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import regex

from rollout_ray.config import (
    ExactMatchVerifier,
    JsonSchemaVerifier,
    RegexVerifier,
)
from rollout_ray.verifiers.base import Verdict, Verifier, VerifierError

#: A pattern from a row (not from the config) gets this long on one response: patterns
#: run on model output, and a catastrophic one would otherwise hold the process.
ROW_PATTERN_TIMEOUT_S = 1.0

# ----------------------------------------------------------------------------- helpers

#: Characters dropped from both ends: quotes and markdown emphasis models wrap answers in.
_EDGE_QUOTES = " \t\r\n\"'`“”‘’«»*"
#: Dropped from the end only: "Paris." and "Paris" are the same answer.
_TRAILING = ".,;:!?"
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{\s*(.*?)\s*\}", re.S)
_ANSWER_COLON = re.compile(r"answer\s*:", re.I)


def response_text(record: dict[str, Any]) -> str:
    """The response, or "" when the engine produced none (that is a wrong answer, not an error)."""
    text = record.get("response_text")
    return text if isinstance(text, str) else ""


def reference(record: dict[str, Any], field: str) -> Any:
    """The row's reference answer; without one the rollout can't be judged at all."""
    value = record.get(field)
    if value is None:
        raise VerifierError(f"record has no reference answer field {field!r}", terminal=True)
    return value


def last_boxed(text: str) -> str | None:
    r"""Inner text of the last \boxed{...}, counting braces so \frac{1}{2} stays whole."""
    start = text.rfind("\\boxed")
    while start >= 0:
        j = start + len("\\boxed")
        while j < len(text) and text[j].isspace():
            j += 1
        if j < len(text) and text[j] == "{":
            depth = 0
            for k in range(j, len(text)):
                if text[k] == "{":
                    depth += 1
                elif text[k] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[j + 1 : k].strip()
        # Unclosed or `\boxed` without a brace: an earlier, complete one may still count.
        start = text.rfind("\\boxed", 0, start)
    return None


def strip_text_wrappers(text: str) -> str:
    r"""`\text{C}` -> `C` (repeatedly), so LaTeX-dressed answers compare as plain text."""
    while match := _TEXT_WRAPPER.fullmatch(text.strip()):
        text = match.group(1)
    return text.strip()


def normalize(text: Any, case_sensitive: bool = False) -> str:
    """Compare answers, not formatting: whitespace, case, quotes, a trailing period."""
    if isinstance(text, float) and text.is_integer():
        text = int(text)  # a reference read back as 42.0 still means "42"
    text = " ".join(str(text).split())
    if not case_sensitive:
        text = text.casefold()
    previous = None
    while previous != text:
        previous = text
        text = text.strip(_EDGE_QUOTES).rstrip(_TRAILING)
    return text


def extract(text: str, mode: str) -> str | None:
    """The part of the response an exact_match config compares; None when it isn't there."""
    if mode == "full":
        return text
    if mode == "last_line":
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else None
    if mode == "boxed":
        boxed = last_boxed(text)
        return None if boxed is None else strip_text_wrappers(boxed)
    if mode == "answer_colon":
        matches = list(_ANSWER_COLON.finditer(text))
        if not matches:
            return None
        rest = text[matches[-1].end() :].strip()
        return rest.splitlines()[0] if rest else ""
    raise VerifierError(f"unknown extract mode {mode!r}", terminal=True)


# ----------------------------------------------------------------------------- exact_match


class ExactMatch(Verifier):
    """Reward 1 when the extracted part equals the reference (a list means: any of them)."""

    name = "exact_match"

    def __init__(self, config: ExactMatchVerifier):
        self.config = config

    async def verify(self, record: dict[str, Any]) -> Verdict:
        ref = reference(record, self.config.answer_field)
        refs = ref if isinstance(ref, (list, tuple)) else [ref]
        got = extract(response_text(record), self.config.extract)
        if got is None:
            return Verdict(0.0, {"extracted_answer": None})
        cs = self.config.case_sensitive
        ok = normalize(got, cs) in {normalize(r, cs) for r in refs}
        return Verdict(1.0 if ok else 0.0, {"extracted_answer": got.strip()})


# ----------------------------------------------------------------------------- regex


class RegexSearch(Verifier):
    """Reward 1 when the pattern is found (or its first group equals the reference)."""

    name = "regex"

    def __init__(self, config: RegexVerifier):
        self.config = config
        # The `regex` engine (re's syntax) because it can stop a search: a pattern that
        # backtracks catastrophically on some response fails that rollout, not the job.
        try:  # a bad pattern is a config error: fail before any rollout is judged
            flags = regex.IGNORECASE if config.ignore_case else 0
            self.pattern = regex.compile(config.pattern, flags)
        except regex.error as e:
            raise VerifierError(f"invalid regex {config.pattern!r}: {e}", terminal=True) from e

    async def verify(self, record: dict[str, Any]) -> Verdict:
        try:
            match = self.pattern.search(response_text(record), timeout=self.config.timeout_s)
        except TimeoutError:
            raise VerifierError(
                f"regex {self.config.pattern!r} took over {self.config.timeout_s:g}s "
                "on this response",
                terminal=True,
            ) from None
        if self.config.answer_field is None:
            found = match.group(0) if match else None
            return Verdict(1.0 if match else 0.0, {"match": found})
        ref = reference(record, self.config.answer_field)
        if match is None:
            return Verdict(0.0, {"match": None})
        got = match.group(1) if self.pattern.groups else match.group(0)
        ok = got is not None and normalize(got) == normalize(ref)
        return Verdict(1.0 if ok else 0.0, {"match": got})


# ----------------------------------------------------------------------------- json_schema

_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.S | re.I)


def parse_json_response(text: str) -> Any:
    """JSON from a ```json fence, the whole text, or the first {...}/[...] in it.

    Raises:
        ValueError: none of those parse.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    first_error: Exception | None = None
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError as e:
            first_error = first_error or e
    decoder = json.JSONDecoder()
    starts = sorted(i for i in (text.find("{"), text.find("[")) if i >= 0)
    for start in starts:
        try:
            return decoder.raw_decode(text, start)[0]
        except ValueError:
            continue
    raise ValueError(str(first_error))


def _refuse_retrieval(uri: str) -> Any:
    """The registry's only way to fetch a schema it doesn't hold: refuse.

    Schemas come from rows, and rows are untrusted: without a registry, jsonschema
    fetches a remote `$ref` over the network (any URL, a cloud metadata endpoint
    included) from inside the cluster. Only references within the schema itself (and
    the JSON Schema meta-schemas, which jsonschema ships) resolve.
    """
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)


@lru_cache(maxsize=1)
def _local_registry() -> Any:
    from referencing import Registry

    return Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A checked validator per distinct schema; rows often share a handful of schemas."""
    from jsonschema import exceptions, validators

    schema = json.loads(schema_json)
    if not isinstance(schema, (dict, bool)):
        raise VerifierError("the JSON schema is not an object", terminal=True)
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as e:
        raise VerifierError(f"invalid JSON schema: {e.message}", terminal=True) from e
    return cls(schema, registry=_local_registry())


def _schema_key(schema: Any) -> str:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise VerifierError(f"the JSON schema is not JSON: {e}", terminal=True) from e
    return json.dumps(schema, sort_keys=True)


class JsonSchemaValidate(Verifier):
    """Reward 1 when the response is JSON that validates; why it doesn't goes in details."""

    name = "json_schema"

    def __init__(self, config: JsonSchemaVerifier):
        self.config = config
        if config.json_schema is None and config.schema_field is None:
            raise VerifierError("json_schema needs `schema` or `schema_field`", terminal=True)
        # Checked now: a broken inline schema should stop the job before any rollout.
        self._inline = (
            None if config.json_schema is None else _validator(_schema_key(config.json_schema))
        )

    async def verify(self, record: dict[str, Any]) -> Verdict:
        field = self.config.schema_field
        schema = record.get(field) if field else None
        if schema is not None:
            validator = _validator(_schema_key(schema))
        elif self._inline is not None:
            validator = self._inline
        else:
            raise VerifierError(f"record has no JSON schema field {field!r}", terminal=True)
        try:
            data = parse_json_response(response_text(record))
        except ValueError as e:
            return Verdict(0.0, {"error": f"not JSON: {e}"})
        from jsonschema import exceptions
        from referencing.exceptions import Unresolvable

        try:
            error = exceptions.best_match(validator.iter_errors(data))
        except Unresolvable as e:
            raise VerifierError(
                f"the JSON schema refers to {getattr(e, 'ref', '?')!r}, which is not in the "
                "schema: only references inside the schema resolve (nothing is fetched)",
                terminal=True,
            ) from None
        if error is None:
            return Verdict(1.0, {})
        where = f" at {error.json_path}" if error.absolute_path else ""
        return Verdict(0.0, {"error": f"{error.message}{where}"})
