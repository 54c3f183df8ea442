"""The agent block: how a dataset's rollouts become multi-turn episodes with tools.

Without an agent, a rollout is one model turn. With one, the model's tool calls are
run (by a NeMo Gym resources server, Python functions, an MCP server, or not at all)
and their outputs fed back until the model answers without a call or a limit is reached.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rollout_ray.config.blocks import RESUME_FREE, _Strict, added_later


class AgentConfig(_Strict):
    """Runs each rollout as an episode: model turn, tool calls, tool outputs, again."""

    kind: Literal["gym", "python", "mcp", "none"] = Field(
        ...,
        description="gym: tools and reward from a NeMo Gym resources server (its "
        "/seed_session, /{tool}, /verify); python: tools are Python functions; mcp: tools "
        "listed and run by an MCP server (stdio `command` or streamable-HTTP `url`); none: "
        "tools reach the model and its calls are recorded, not run (one turn).",
    )
    url: str | None = Field(
        None,
        description="gym: the resources server's base URL, e.g. http://127.0.0.1:8000; "
        "mcp: the server's streamable-HTTP endpoint, e.g. http://127.0.0.1:8000/mcp.",
    )
    command: list[str] | None = Field(
        None,
        description="mcp: start the server as this command over stdio, e.g. "
        "[python, my_server.py]; one process per engine actor (or per episode, `session`).",
        json_schema_extra=added_later(None),
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="mcp: environment for a stdio server, over the MCP SDK's minimal one "
        "(PATH, HOME, ...); stored in job.json as written: no secrets here.",
        json_schema_extra=added_later({}),
    )
    session: Literal["engine", "episode"] = Field(
        "engine",
        description="mcp: one server session per engine actor, shared by its episodes "
        "(calls multiplexed; tools listed once), or one per episode, for servers that "
        "keep state per session (a stdio server is then a process per episode).",
        json_schema_extra=added_later("engine"),
    )
    tools: str | None = Field(
        None,
        description="python: `module:object` naming a list (or dict) of functions; each "
        "function's schema comes from its type hints and docstring.",
    )
    tool_choice: Any = Field(
        None,
        description="auto, required, none, or a function name; default: the row's "
        "(responses_create_params.tool_choice), else auto. required and a name are "
        "enforced with structured outputs on vLLM, so any model complies.",
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Allow several calls per turn; default: the row's, else true."
    )
    max_steps: int = Field(8, ge=1, description="Most model turns per episode.")
    max_tool_calls: int | None = Field(
        None,
        ge=0,
        description="Most tool calls per episode (the row's max_tool_calls wins); then one "
        "more turn answers without tools. A forced turn (required or a name) can't write "
        "more calls than are left; an auto turn's calls all run, as Gym's simple_agent runs "
        "them (a turn over the budget is noted in row_warnings).",
    )
    max_total_tokens: int | None = Field(
        None,
        ge=1,
        description="Budget of generated tokens over the whole episode; when spent the "
        "episode ends with finish_reason length.",
    )
    tool_timeout_s: float = Field(
        30.0, gt=0, description="Seconds one tool call may take.", json_schema_extra=RESUME_FREE
    )
    tool_retries: int = Field(
        3,
        ge=0,
        description="Retries (with backoff) of a tool call whose server is down, times out "
        "or answers 5xx with no body; then the rollout fails with stage `tool`.",
        json_schema_extra=RESUME_FREE,
    )
    verify_timeout_s: float = Field(
        60.0, gt=0, description="gym: seconds /verify may take.", json_schema_extra=RESUME_FREE
    )
    max_reply_bytes: int = Field(
        1 << 20,
        ge=1024,
        description="gym: the largest reply body read from the resources server (a tool's "
        "output, /seed_session, /verify), counted as decoded; a larger one fails the "
        "rollout (stage tool or verify) instead of filling memory and the record.",
        json_schema_extra=RESUME_FREE,
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="gym: HTTP connections per engine actor to the resources server; "
        "python: threads running tool calls at once; mcp: tool calls in flight per engine "
        "actor.",
        json_schema_extra=RESUME_FREE,
    )

    @model_validator(mode="after")
    def _kind_needs(self) -> AgentConfig:
        if self.kind == "gym" and not self.url:
            raise ValueError("agent kind gym needs `url`: the resources server's base URL")
        if self.kind == "python" and not self.tools:
            raise ValueError("agent kind python needs `tools`: module:object of functions")
        if self.kind == "mcp" and bool(self.url) == bool(self.command):
            raise ValueError(
                "agent kind mcp needs one of `command` (a stdio server, e.g. [python, "
                "server.py]) or `url` (a streamable-HTTP endpoint, e.g. http://host:8000/mcp)"
            )
        choice = self.tool_choice
        if choice is not None and not isinstance(choice, str | dict):
            raise ValueError("tool_choice must be auto, required, none or a function name")
        return self
