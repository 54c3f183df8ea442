"""What every verifier does: turn one finished rollout into a reward and details.

A verifier sees the rollout as a flat record: the core fields (`response_text`,
`prompt_messages`, `finish_reason`, ...), the input row's carried fields at the top
level (`expected_answer`, `options`, ...), and for NeMo Gym rows the parsed
`responses_create_params`. It returns a `Verdict`; raising means "could not verify",
which becomes a failure record for that rollout, never a reward of 0.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    reward: float
    #: Extra fields stored beside the reward (e.g. `extracted_answer`).
    details: dict[str, Any] = field(default_factory=dict)


class VerifierError(Exception):
    """The verifier could not judge this rollout (not: the answer is wrong)."""

    def __init__(self, message: str, terminal: bool = True):
        super().__init__(message)
        self.terminal = terminal


class Verifier(abc.ABC):
    """One configured verifier; `verify` may be called concurrently."""

    #: The config's `kind`, stored in each record's `verifier` column.
    name: str = "verifier"

    @abc.abstractmethod
    async def verify(self, record: dict[str, Any]) -> Verdict:
        """Judge one rollout.

        Raises:
            VerifierError: it can't be judged; `terminal=False` if a retry may succeed.
        """

    async def warm(self) -> None:  # noqa: B027 - most verifiers start instantly
        """Start now what the first `verify` would (worker processes), so that the
        first rollouts don't wait for it; called while the engine loads."""

    async def close(self) -> None:  # noqa: B027 - most verifiers hold nothing
        """Release connections and pools."""
