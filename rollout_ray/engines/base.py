"""What every engine does: check a prompt, generate one rollout, and say how it failed.

An engine serves one actor. Rollouts are submitted concurrently (one coroutine each);
the engine batches them as it sees fit, so the worker never waits on a batch boundary.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from rollout_ray.errors import EngineFailed, RowError


@dataclass
class GenerationRequest:
    request_id: str
    messages: list[dict[str, str]]
    #: Resolved sampling parameters (see SamplingConfig); `seed` already per rollout.
    sampling: dict[str, Any]
    #: Set by `Engine.prepare` for engines that tokenize locally.
    prompt_token_ids: list[int] | None = None
    #: Facts about the row an engine may use (e.g. {"gym": True} for Gym rows).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    prompt_token_ids: list[int] | None = None
    output_token_ids: list[int] | None = None
    output_logprobs: list[float] | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: A turn of an episode: the calls the model made (its text without their markup).
    tool_calls: list[ToolCall] | None = None
    #: Thinking split from the answer by a reasoning parser (`text` is the answer).
    reasoning_text: str | None = None


@dataclass
class ToolCall:
    call_id: str
    name: str
    #: As the model wrote them: JSON text, perhaps invalid (the agent reports that).
    arguments: str


@dataclass
class Conversation:
    """An episode as the engine sees it, turn after turn.

    `messages` are chat-completions messages (assistant `tool_calls`, `tool` replies).
    Engines that tokenize keep the episode's tokens in `token_ids`, extended each turn
    and never re-rendered, so the next turn's prompt is exactly what the model saw and
    wrote (the KV cache of every earlier turn is reused, and RL trains on these ids);
    `mask` marks the model's own tokens, `logprobs` their log-probabilities (0.0 on
    tokens it did not generate).
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    token_ids: list[int] | None = None
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_len: int = 0
    #: How many of `messages` `token_ids` already holds.
    rendered: int = 0
    #: Text the chat template puts after the model's last turn that its tokens lack.
    glue: str = ""
    #: Extra chat-template arguments (sampling.chat_template_kwargs).
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Calls the episode may still make (max_tool_calls); None: no budget. A forced
    #: turn's grammar allows no more, so every call the model writes is one that runs.
    calls_left: int | None = None
    #: What an engine had to do differently to run the episode (a template that
    #: rejected it, so it was rendered as plain text); kept in the record.
    warnings: list[str] = field(default_factory=list)


class EngineDead(Exception):
    """The engine can't serve any more requests; the actor must be replaced."""


class FatalEngineError(EngineFailed):
    """Nothing will succeed with this engine (a bad API key, an unknown model): the
    job stops with this message instead of failing every row."""


class Engine(abc.ABC):
    """One model replica inside one actor."""

    #: Name stored in each record's `engine` column.
    name: str = "engine"
    #: Which checkpoint is loaded, stored in each record's `model_version` column.
    model_version: str | None = None
    #: Whether a process that exits right after its run (the CLI) may skip close():
    #: nothing of the engine outlives the process and close() saves nothing. False for
    #: an engine with a process of its own to stop.
    freed_by_exit: bool = True

    @property
    @abc.abstractmethod
    def model_label(self) -> str:
        """What each record's `model` column holds."""

    def prepare(self, messages: list[dict[str, str]], sampling: dict[str, Any]) -> list[int] | None:
        """Check (and tokenize) a prompt before generation.

        Returns:
            The prompt's token ids, for engines that tokenize locally; None otherwise.

        Raises:
            RowError: the prompt can't be served (e.g. longer than the context); terminal.
        """
        return None

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate one rollout.

        Raises:
            EngineDead: the engine is gone; nothing more will succeed in this actor.
            Exception: anything else fails this rollout only, and may pass on retry.
        """

    async def turn(self, conversation: Conversation, request: GenerationRequest) -> Generation:
        """One model turn of an episode: the conversation so far in, text and tool
        calls out (the engine extends `conversation`'s token state, if it keeps one).

        Raises:
            RowError: this engine can't run tools (stage `generate`), or the episode no
                longer fits the context.
        """
        raise RowError(f"the {self.name} engine does not run agents", "generate")

    async def finish(self, conversation: Conversation) -> None:  # noqa: B027 - no tokens
        """The episode ended after its calls ran: put their outputs into the token record
        (as the next turn's prompt would have them, without a generation prompt), so
        that the tokens hold every output the items hold."""

    def checkpoint_changed(self) -> bool:
        """Whether the model's folder now holds another checkpoint (watch_model)."""
        return False

    def reload(self) -> None:  # noqa: B027 - only engines that load checkpoints reload
        """Load the model again; called only when no request is in flight."""

    def describe(self) -> dict[str, Any]:
        """The engine's effective settings as it runs (metrics.json `run.engine_config`):
        what a benchmark or a puzzled user compares, beyond what the config asked for."""
        return {}

    def stats(self) -> dict[str, float]:
        """Live engine figures for metrics (requests running, waiting, ...)."""
        return {}

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Release the engine's resources."""
