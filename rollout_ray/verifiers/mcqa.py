"""mcqa: the choice letter found exactly as NeMo Gym's mcqa resources server finds it.

Eval numbers are only comparable with Gym's if the same text gets the same reward, so
this follows Gym's `/verify` rule for rule (resources_servers/mcqa, nemo-gym 0.4.0):
the grading mode is the config's, else the row's `grading_mode`, else
strict_single_letter_boxed; the allowed letters are the options' keys (no options: no
letter can be right); strict mode reads the FIRST `\\boxed{}` and wants one capital
letter inside with no other letters (`\\boxed{\\text{B}}` scores 0, as in Gym); a row's
`template_metadata.output_regex` is tried first, its last match taken. A test checks
our rewards against the real Gym server's over the same texts.
"""

from __future__ import annotations

import re
from typing import Any

import regex

from rollout_ray.config import MCQAVerifier
from rollout_ray.verifiers.base import Verdict, Verifier, VerifierError

#: A pattern from a row (not from the config) gets this long on one response.
ROW_PATTERN_TIMEOUT_S = 1.0
MODES = (
    "strict_single_letter_boxed",
    "lenient_boxed",
    "lenient_answer_colon",
    "lenient_answer_colon_md",
)

_STRICT_BOXED = re.compile(r"\\boxed\{\s*[^A-Za-z]*([A-Z])[^A-Za-z]*\s*\}")
_BOXED_CONTENT = re.compile(r"\\boxed\{\s*(.*?)\s*\}", re.S)
_TEXT_WRAP = re.compile(r"\\text\{\s*(.*?)\s*\}", re.S)
_ANSWER_COLON = re.compile(r"(?i)answer\s*:\s*(.+)")
_ANSWER_COLON_MD = re.compile(
    r"(?i)[*_]{0,2}Answer[*_]{0,2}\s*:[*_\s]{0,2}\s*([A-Z])(?![a-zA-Z0-9])"
)
#: Letters of other scripts models answer with, read as A-D (as Gym reads them).
_FOREIGN_LETTERS = {"أ": " A", "ب": " B", "ج": " C", "د": " D", "অ": " A", "ব": " B"}
_FOREIGN_LETTERS.update({"ড": " C", "ঢ": " D", "Ａ": " A", "Ｂ": " B", "Ｃ": " C", "Ｄ": " D"})


def _options(raw: Any) -> list[tuple[str, str]]:
    """(key, text) pairs from Gym's [{'A': text}, ...] (or one {'A': text, ...})."""
    items: list[tuple[Any, Any]] = []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list | tuple):
        items = [kv for entry in raw if isinstance(entry, dict) for kv in entry.items()]
    return [(k, str(v)) for k, v in items if isinstance(k, str) and v is not None]


def _allowed(options: list[tuple[str, str]]) -> set[str]:
    return {k.upper() for k, _ in options if len(k) == 1 and k.isalpha()}


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def _strip_text(text: str) -> str:
    while True:
        match = _TEXT_WRAP.fullmatch(text)
        if not match:
            return text
        text = match.group(1)


def _strict(text: str, allowed: set[str]) -> str | None:
    match = _STRICT_BOXED.search(text)
    letter = match.group(1).upper() if match else None
    return letter if letter in allowed else None


def _boxed_option_text(text: str, options: list[tuple[str, str]], allowed: set[str]) -> str | None:
    boxed = _BOXED_CONTENT.search(text)
    if not boxed:
        return None
    candidates = [_squash(boxed.group(1)), _squash(_strip_text(boxed.group(1)))]
    found = {
        k.upper()
        for k, v in options
        if len(k) == 1 and k.upper() in allowed and _squash(v)
        for c in candidates
        if _squash(v) in c
    }
    return found.pop() if len(found) == 1 else None


def _answer_colon(text: str, options: list[tuple[str, str]], allowed: set[str]) -> str | None:
    match = _ANSWER_COLON.search(text)
    if not match:
        return None
    candidate = _strip_text(match.group(1)).strip()
    if len(candidate) == 1 and candidate.isalpha() and candidate.upper() in allowed:
        return candidate.upper()
    wanted = _squash(candidate)
    return next(
        (k.upper() for k, v in options if k.upper() in allowed and _squash(v) == wanted), None
    )


def _row_regex(
    text: str, metadata: Any, options: list[tuple[str, str]], allowed: set[str]
) -> str | None:
    """The row's own output_regex (a pattern or a list), its LAST match, as Gym reads it."""
    if not isinstance(metadata, dict) or not metadata.get("output_regex"):
        return None
    patterns = metadata["output_regex"]
    for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
        try:
            matches = regex.findall(pattern, text, regex.IGNORECASE, timeout=ROW_PATTERN_TIMEOUT_S)
        except (regex.error, TypeError):
            continue
        except TimeoutError:
            raise VerifierError(
                f"the row's output_regex {str(pattern)[:100]!r} took over "
                f"{ROW_PATTERN_TIMEOUT_S:g}s on this response",
                terminal=True,
            ) from None
        if not matches:
            continue
        last = matches[-1]
        last = next((g for g in last if g), "") if isinstance(last, tuple) else last
        captured = str(last).strip()
        for foreign, latin in _FOREIGN_LETTERS.items():
            captured = captured.replace(foreign, latin)
        captured = captured.strip().upper()
        if len(captured) == 1 and captured.isalpha():
            return captured  # Gym trusts the row's regex over the options
        wanted = _squash(captured)
        for k, v in options:
            if k.upper() in allowed and _squash(v) == wanted:
                return k.upper()
    return None


class MCQA(Verifier):
    name = "mcqa"

    def __init__(self, config: MCQAVerifier):
        self.config = config

    async def verify(self, record: dict[str, Any]) -> Verdict:
        gold_value = record.get(self.config.answer_field)
        if gold_value is None:
            raise VerifierError(
                f"record has no reference answer field {self.config.answer_field!r}",
                terminal=True,
            )
        gold = str(gold_value).strip().upper()
        options = _options(record.get(self.config.options_field))
        allowed = _allowed(options)
        mode = self.config.grading_mode or record.get("grading_mode") or MODES[0]
        if mode not in MODES:
            raise VerifierError(
                f"the row's grading_mode {str(mode)[:60]!r} is not one of {', '.join(MODES)}",
                terminal=True,
            )
        text = record.get("response_text")
        text = text.strip() if isinstance(text, str) else ""
        pred = None
        if text:
            pred = _row_regex(text, record.get("template_metadata"), options, allowed)
            if pred is None and mode in ("strict_single_letter_boxed", "lenient_boxed"):
                pred = _strict(text, allowed)
                if pred is None and mode == "lenient_boxed":
                    pred = _boxed_option_text(text, options, allowed)
            elif pred is None and mode == "lenient_answer_colon":
                pred = _answer_colon(text, options, allowed)
            elif pred is None and mode == "lenient_answer_colon_md":
                match = _ANSWER_COLON_MD.search(text)
                letter = match.group(1).strip().upper() if match else None
                pred = letter if letter in allowed else None
        reward = 1.0 if pred is not None and gold and pred == gold else 0.0
        return Verdict(reward, {"extracted_answer": pred, "expected_answer": gold})
