"""Agent rollouts inside a piece: runs the turn loop (agents/loop.py) for a rollout and
makes its record or its failure.

The piece runner hands a rollout here when its dataset has an agent. Failures keep
their stage: a tool server that stays unreachable is `tool` (retried later, never a
reward of 0), a `/verify` that can't judge is `verify` (the episode's text is kept).
"""

from __future__ import annotations

import json
from typing import Any

from rollout_ray.agents.environments import Environment, Session, ToolUnavailable, open_environment
from rollout_ray.agents.loop import Episode, run_episode
from rollout_ray.chat.tools import normalise_choice
from rollout_ray.config import DatasetConfig
from rollout_ray.engines import Engine
from rollout_ray.engines.base import Conversation
from rollout_ray.errors import RowError
from rollout_ray.inputs.prompts import GYM_KEY, Prompt
from rollout_ray.json_text import to_json
from rollout_ray.output.work import WorkItem
from rollout_ray.replies import ReplyTooLarge
from rollout_ray.run.outcomes import Rollout, failure_record, generated_failure, rollout_record
from rollout_ray.verifiers.base import VerifierError


class AgentRollouts:
    """The agent side of one engine actor: an environment per dataset, made once."""

    def __init__(self, engine: Engine, secrets: tuple[str, ...] = ()):
        self.engine = engine
        self.secrets = secrets
        self._environments: dict[str, Environment] = {}

    def environment(self, dataset: DatasetConfig) -> Environment:
        env = self._environments.get(dataset.name)
        if env is None:
            assert dataset.agent is not None
            env = self._environments[dataset.name] = open_environment(dataset.agent)
        return env

    def tools_for(self, dataset: DatasetConfig, prompt: Prompt) -> list[dict[str, Any]]:
        """Every tool a row's episodes offer; a row with tools and no agent is refused.

        Raises:
            RowError: the row has tools but its dataset has no agent to run them.
        """
        if dataset.agent is None:
            if prompt.tools:
                names = ", ".join(t["function"]["name"] for t in prompt.tools[:5])
                raise RowError(
                    f"the row offers tools ({names}) but dataset {dataset.name!r} has no "
                    "agent: set `agent: {kind: gym, url: ...}`, `{kind: python, tools: "
                    "...}` or `{kind: mcp, url: ...}` to run them, or `{kind: none}` to "
                    "record calls without running them (see docs/agents.md)",
                    "prompt",
                )
            return []
        known = {t["function"]["name"] for t in prompt.tools}
        extra = [t for t in self.environment(dataset).tools if t["function"]["name"] not in known]
        return prompt.tools + extra

    async def rollout(
        self, item: WorkItem, rollout: Rollout, dataset: DatasetConfig
    ) -> dict[str, Any]:
        """The rollout's record, or its failure record (which has a `stage`)."""
        sessions: list[Session] = []
        try:
            return await self._rollout(item, rollout, dataset, sessions)
        finally:
            for session in sessions:  # e.g. an MCP session of the episode's own
                await session.close()

    async def _rollout(
        self, item: WorkItem, rollout: Rollout, dataset: DatasetConfig, sessions: list[Session]
    ) -> dict[str, Any]:
        agent = dataset.agent
        assert agent is not None
        prompt = rollout.prompt
        where = f"{GYM_KEY}.tool_choice" if prompt.responses_create_params else "tool_choice"
        choice = agent.tool_choice if agent.tool_choice is not None else prompt.tool_choice
        parallel = agent.parallel_tool_calls
        if parallel is None:
            parallel = (
                prompt.parallel_tool_calls if prompt.parallel_tool_calls is not None else True
            )
        try:
            await self.environment(dataset).start()  # an MCP server lists its tools
            tools = self.tools_for(dataset, prompt)
            conv = Conversation(
                messages=[dict(m) for m in prompt.messages],
                tools=tools,
                tool_choice=normalise_choice(choice, tools, where) if tools else "none",
                parallel_tool_calls=parallel,
                template_kwargs=dict(rollout.request.sampling.get("chat_template_kwargs") or {}),
            )
            row = gym_row(prompt)
            session = await self.environment(dataset).session(row)
            sessions.append(session)
            episode = await run_episode(
                self.engine, rollout.request, conv, agent, session, prompt.max_tool_calls
            )
        except RowError as exc:
            return self._failed(item, rollout, exc.stage, exc, True)
        except ToolUnavailable as exc:
            return self._failed(item, rollout, "tool", exc, False)
        except ReplyTooLarge as exc:  # the same reply again next time: terminal
            return self._failed(item, rollout, "tool", exc, True)
        record = rollout_record(item, rollout, episode.generation, self.engine)
        record.update(episode_columns(episode, tools))
        if episode.warnings:
            record["row_warnings"] = [*(record.get("row_warnings") or []), *episode.warnings]
        if agent.kind == "gym":
            try:
                verdict = await session.verify(row, episode.response)
            except VerifierError as exc:
                failure = generated_failure(item, record, "verify", exc, exc.terminal, self.secrets)
                return dict(failure)
            assert verdict is not None
            record.update(
                reward=verdict.reward, verifier="gym", verifier_details=to_json(verdict.details)
            )
        return record

    def _failed(
        self, item: WorkItem, rollout: Rollout, stage: str, exc: BaseException, terminal: bool
    ) -> dict[str, Any]:
        return dict(
            failure_record(item, rollout.row, rollout.index, stage, exc, terminal, self.secrets)
        )

    async def close(self) -> None:
        for env in self._environments.values():
            await env.close()
        self._environments.clear()


def gym_row(prompt: Prompt) -> dict[str, Any]:
    """The row as Gym's /seed_session and /verify take it: its fields, with
    `responses_create_params` (built from the messages for rows of other shapes)."""
    params = (
        json.loads(prompt.responses_create_params)
        if prompt.responses_create_params
        else {"input": prompt.messages}
    )
    return {**prompt.carried, GYM_KEY: params}


def episode_columns(episode: Episode, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's episode columns; what the episode had to do differently (a template
    fallback, a turn over its call allowance) joins the row's warnings."""
    return {
        "output_mask": episode.mask,
        "episode": to_json(episode.items),
        "episode_response": to_json({k: v for k, v in episode.response.items() if k != "output"}),
        "episode_tools": to_json(tools) if tools else None,
        "steps": episode.steps,
        "tool_calls": episode.tool_calls,
        "tool_errors": episode.tool_errors,
        "turn_latency_s": episode.turn_latency_s,
    }
