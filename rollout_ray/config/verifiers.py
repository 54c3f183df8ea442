"""Verifier config blocks, one per built-in kind, tagged by `kind`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError

from rollout_ray.config.blocks import _Strict, added_later
from rollout_ray.errors import ConfigError

#: What one rollout's verification may take at most beyond its own timeouts: a worker
#: process to start (math), backoff between retries (http).
STARTUP_ALLOWANCE_S = 120.0


class _Timed(_Strict):
    #: "module:Class" of the Verifier that judges with this block, imported when built.
    #: A new kind: its block (with this) and one line in VerifierConfig below.
    implementation: ClassVar[str] = ""

    timeout_s: float = Field(
        30.0,
        gt=0,
        description="Give up on one rollout after this long: it fails (retryable up to "
        "max_attempts) and the job goes on.",
    )

    @property
    def deadline_s(self) -> float:
        """The longest one rollout's verification can take, retries included."""
        return self.timeout_s


class _VerifierBase(_Timed):
    answer_field: str = Field(
        "expected_answer", description="Row field holding the reference answer."
    )


class ExactMatchVerifier(_VerifierBase):
    """Reward 1 when the (extracted) response equals the reference after normalising
    case, whitespace and surrounding punctuation."""

    implementation: ClassVar[str] = "rollout_ray.verifiers.builtin:ExactMatch"

    kind: Literal["exact_match"] = Field("exact_match", description="Selects this block.")
    extract: Literal["full", "last_line", "boxed", "answer_colon"] = Field(
        "full",
        description="What part of the response is compared: all of it, its last line, "
        "the last \\boxed{...}, or the text after the last 'Answer:'.",
    )
    case_sensitive: bool = Field(False, description="Compare case too.")


class MCQAVerifier(_VerifierBase):
    """Multiple choice, graded as NeMo Gym's mcqa server does (same text, same reward):
    the choice letter (e.g. in the first \\boxed{}) against `answer_field`."""

    implementation: ClassVar[str] = "rollout_ray.verifiers.mcqa:MCQA"

    kind: Literal["mcqa"] = Field("mcqa", description="Selects this block.")
    options_field: str = Field(
        "options", description="Row field with the options: [{'A': text}, ...] or {'A': text}."
    )
    grading_mode: (
        Literal[
            "strict_single_letter_boxed",
            "lenient_boxed",
            "lenient_answer_colon",
            "lenient_answer_colon_md",
        ]
        | None
    ) = Field(
        None,
        description="How the letter is found (Gym's modes); default: the row's "
        "`grading_mode`, else strict_single_letter_boxed, as Gym's server decides.",
    )


class MathVerifier(_VerifierBase):
    """Answer equivalence through the math-verify library (e.g. 1/2 == 0.5 == \\frac12)."""

    implementation: ClassVar[str] = "rollout_ray.verifiers.math:MathVerify"

    kind: Literal["math"] = Field("math", description="Selects this block.")
    timeout_s: float = Field(10.0, gt=0, description="Give up on one answer after this long.")
    reward_restated: bool = Field(
        False,
        description="Score an answer that only restates an expression from the prompt "
        "(`3 + 18` for 'What is 3 + 18?', expected 21) as math-verify and NeMo Gym's math "
        "server do. Off: such an answer gets 0, with `restated_prompt: true` in the details.",
        # Outputs verified before this field existed scored restated answers: they resume
        # with `reward_restated: true`; the default (off) is a change a resume names.
        json_schema_extra=added_later(True),
    )

    @property
    def deadline_s(self) -> float:
        return self.timeout_s + STARTUP_ALLOWANCE_S


class RegexVerifier(_Timed):
    """Reward 1 when `pattern` is found in the response; with `answer_field`, when its
    first group equals that field."""

    implementation: ClassVar[str] = "rollout_ray.verifiers.builtin:RegexSearch"

    kind: Literal["regex"] = Field("regex", description="Selects this block.")
    pattern: str = Field(..., description="Python regular expression.")
    answer_field: str | None = Field(None, description="Compare the first group to this field.")
    ignore_case: bool = Field(False, description="Match case-insensitively.")


class JsonSchemaVerifier(_Timed):
    """Reward 1 when the response parses as JSON (a ```json fence is allowed) and
    validates against the schema."""

    implementation: ClassVar[str] = "rollout_ray.verifiers.builtin:JsonSchemaValidate"

    kind: Literal["json_schema"] = Field("json_schema", description="Selects this block.")
    json_schema: dict[str, Any] | None = Field(
        None, alias="schema", description="The JSON Schema, inline."
    )
    schema_field: str | None = Field(None, description="Or: row field holding each row's schema.")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PythonVerifier(_Timed):
    """Any function named by import path, `module:function(record) -> float | dict`."""

    implementation: ClassVar[str] = "rollout_ray.verifiers.python_fn:PythonFunction"

    kind: Literal["python"] = Field("python", description="Selects this block.")
    timeout_s: float = Field(
        60.0,
        gt=0,
        description="Give up on one call after this long: the rollout fails (retryable up "
        "to max_attempts); a call still running is abandoned on its thread.",
    )
    function: str = Field(
        ...,
        description="`package.module:function`, importable where the job starts (a module "
        "in the current folder, or on PYTHONPATH): checked before anything runs.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments.")


class HttpVerifier(_Timed):
    """POST to a verifier service in NeMo Gym's /verify shape; reply `reward` + fields."""

    implementation: ClassVar[str] = "rollout_ray.verifiers.http:HttpVerify"

    kind: Literal["http"] = Field("http", description="Selects this block.")
    url: str = Field(..., description="The /verify endpoint.")
    concurrency: int = Field(32, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(3, ge=0, description="Retries on timeouts, 429 and 5xx.")

    @property
    def deadline_s(self) -> float:
        # Each attempt, plus the wait between them (a Retry-After is capped at 30 s).
        return (self.max_retries + 1) * self.timeout_s + self.max_retries * 30.0

    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    api_key_env: str | None = Field(
        None, description="Environment variable with a bearer token (never written out)."
    )
    max_reply_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="The largest reply body read (counted as decoded); a larger one "
        "fails the rollout at verify (terminal) instead of filling memory and the record.",
    )
    allow_insecure_http: bool = Field(
        False,
        description="Send the token (api_key_env, or a credential header) over plain "
        "http:// to a host other than this machine (refused otherwise: anyone on the path "
        "could read it), as engine.allow_insecure_http does for the openai engine.",
    )


VerifierConfig = Annotated[
    ExactMatchVerifier
    | MCQAVerifier
    | MathVerifier
    | RegexVerifier
    | JsonSchemaVerifier
    | PythonVerifier
    | HttpVerifier,
    Field(discriminator="kind"),
]


def parse_verifier(text: str) -> VerifierConfig:
    """A verifier config from YAML/JSON text, or from a file given as `@path`.

    Raises:
        ConfigError: not a valid verifier; the message says what is allowed.
    """
    from pydantic import TypeAdapter

    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise ConfigError(f"verifier file {path} does not exist")
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"verifier is not valid YAML: {exc}") from None
    try:
        return TypeAdapter(VerifierConfig).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "verifier"
        raise ConfigError(f"verifier {where}: {first['msg']}") from None
