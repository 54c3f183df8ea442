"""Where tool calls run: a NeMo Gym resources server, Python functions, an MCP server
(agents/mcp.py), or nowhere.

One environment per engine actor (one HTTP connection pool); one session per episode
(Gym keeps an episode's state in a signed session cookie, so each session keeps its
own cookies). A tool's own failure (an exception, a 4xx/500 reply) is the call's
output, as in Gym: the model sees it and goes on. A server that can't be reached,
times out or answers 502/503/504 is retried with backoff; then the episode fails
with stage `tool` (never a reward of 0).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rollout_ray import replies
from rollout_ray.chat.tools import function_tool
from rollout_ray.config.agents import AgentConfig
from rollout_ray.errors import JobFault, RowError
from rollout_ray.retries import Backoff
from rollout_ray.verifiers.base import Verdict
from rollout_ray.verifiers.gym_verify import VerifyEndpoint, encode, post_verify, read_verdict

RETRY_STATUS = {502, 503, 504}
TOOL_BACKOFF = Backoff(base_s=0.5, cap_s=8.0)
#: A resources server's own endpoints beside its tools (NeMo Gym's SimpleResourcesServer).
GYM_ENDPOINTS = frozenset({"seed_session", "verify", "aggregate_metrics"})


class ToolUnavailable(Exception):
    """The tool server could not be reached (or timed out) after every retry."""


class Session:
    """One episode's link to its environment."""

    async def call(
        self, name: str, arguments: dict[str, Any], text: str | None = None
    ) -> tuple[str, bool]:
        """Run one call: (output text, whether the tool reported an error). `text`: the
        arguments as the model wrote them (a server gets those very bytes)."""
        raise NotImplementedError

    async def verify(self, row: dict[str, Any], response: dict[str, Any]) -> Verdict | None:
        """The environment's verdict on the episode (None: it has no verifier).

        Raises:
            VerifierError: it can't judge the episode (`terminal`: not on a later try
                either).
        """
        return None

    async def close(self) -> None:
        """Release what the episode held (e.g. an MCP session of its own)."""


class Environment:
    def __init__(self) -> None:
        self.tools: list[dict[str, Any]] = []

    async def start(self) -> None:
        """Learn `tools` before the first episode (an MCP server lists them).

        Raises:
            ToolUnavailable: the environment can't be reached (stage `tool`, retryable).
        """

    async def session(self, row: dict[str, Any]) -> Session:
        return Session()

    async def close(self) -> None:
        pass


def open_environment(agent: AgentConfig) -> Environment:
    if agent.kind == "gym":
        return GymEnvironment(agent)
    if agent.kind == "python":
        return PythonEnvironment(agent)
    if agent.kind == "mcp":
        from rollout_ray.agents.mcp import MCPEnvironment  # the mcp SDK only when used

        return MCPEnvironment(agent)
    return Environment()


# ---------------------------------------------------------------------- NeMo Gym


class GymEnvironment(Environment):
    """A NeMo Gym resources server, spoken to as Gym's simple_agent does."""

    def __init__(self, agent: AgentConfig):
        super().__init__()
        self.agent = agent
        self.url = (agent.url or "").rstrip("/")
        self.client = replies.HttpClient(agent.max_connections, agent.tool_timeout_s)
        #: Whether the server ever answered this actor: before it has, a server that
        #: can't be reached is a wrong url, not a server that is down for a while.
        self.reached = False
        self.verify_endpoint = VerifyEndpoint(
            url=self.url + "/verify",
            timeout_s=agent.verify_timeout_s,
            attempts=agent.tool_retries + 1,
            max_reply_bytes=agent.max_reply_bytes,
            backoff=TOOL_BACKOFF,
        )

    async def session(self, row: dict[str, Any]) -> Session:
        """A seeded session for one episode.

        Raises:
            JobFault: the url is the configuration's fault: nothing ever answered there
                (a wrong host or port), or it has no /seed_session (not a resources
                server). One message, not a failure per rollout retried on every run.
            RowError: /seed_session refused this row (4xx): terminal, stage tool.
            ToolUnavailable: the server answered before and can't be reached now, or
                failed on this row (5xx): stage tool, tried again on a later run.
        """
        session = GymSession(self)
        try:
            reply = await session.post(
                "/seed_session", row, self.agent.tool_timeout_s, "seed_session"
            )
        except ToolUnavailable as exc:
            if self.reached:
                raise
            raise JobFault(
                f"agent.url {self.url} can't be reached ({exc}); nothing has answered there "
                "in this job: check agent.url and that the resources server is running"
            ) from None
        status = reply.status_code
        if status in (404, 405):
            raise JobFault(
                f"agent.url {self.url} is not a NeMo Gym resources server: POST "
                f"/seed_session answered HTTP {status} ({reply.text[:200]!r}); check agent.url "
                "(a server's base URL, without a path to one of its endpoints)"
            )
        if status >= 500:
            raise ToolUnavailable(f"/seed_session answered HTTP {status}: {reply.text[:300]}")
        if status >= 400:
            raise RowError(
                f"/seed_session at {self.url} refused the row: HTTP {status}: {reply.text[:300]}",
                "tool",
            )
        return session

    async def close(self) -> None:
        await self.client.aclose()


class GymSession(Session):
    def __init__(self, env: GymEnvironment):
        self.env = env
        self.cookies: dict[str, str] = {}

    async def post(
        self, path: str, body: Any, timeout: float, what: str, text: str | None = None
    ) -> replies.Reply:
        """POST with this session's cookies, retried on an unreachable server.

        Raises:
            ToolUnavailable: the server could not be reached, after every retry.
            ReplyTooLarge: the reply is over agent.max_reply_bytes (not retried).
        """
        env = self.env
        attempts = env.agent.tool_retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                # The session's own cookies, as a header (the client keeps none), so no
                # episode joins another's session.
                headers = {**self._cookie_header(), "Content-Type": "application/json"}
                reply = await env.client.post(
                    env.url + path,
                    env.agent.max_reply_bytes,
                    f"{what} at {env.url}{path}",
                    content=(text if text is not None else json.dumps(body)).encode(),
                    headers=headers,
                    timeout=timeout,
                )
            except replies.TimedOut:
                last = f"no answer within {timeout:g} s (agent.tool_timeout_s)"
            except (replies.Unreachable, replies.Unusable) as exc:
                last = str(exc)
            else:
                env.reached = True
                self.cookies.update(reply.cookies)
                if reply.status_code not in RETRY_STATUS:
                    return reply
                last = f"HTTP {reply.status_code}: {reply.text[:200]}"
            if attempt + 1 < attempts:
                await TOOL_BACKOFF.wait(attempt)
        raise ToolUnavailable(f"{what} at {env.url}{path} failed {attempts} times; last: {last}")

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    async def call(
        self, name: str, arguments: dict[str, Any], text: str | None = None
    ) -> tuple[str, bool]:
        if name in GYM_ENDPOINTS:  # a row may offer a "tool" named after one
            return json.dumps({"error": f"{name!r} is the server's own endpoint, not a tool"}), True
        path = "/" + urllib.parse.quote(name, safe="")
        reply = await self.post(path, arguments, self.env.agent.tool_timeout_s, name, text)
        return reply.text, reply.status_code >= 400

    async def verify(self, row: dict[str, Any], response: dict[str, Any]) -> Verdict:
        body = {**row, "response": response}
        reply = await post_verify(
            self.env.client, self.env.verify_endpoint, encode(body), self._cookie_header()
        )
        self.cookies.update(reply.cookies)
        return read_verdict(body, reply, self.env.verify_endpoint)


# ---------------------------------------------------------------------- Python


class PythonEnvironment(Environment):
    """Tools as Python functions; each call runs off the event loop, with a timeout."""

    def __init__(self, agent: AgentConfig):
        super().__init__()
        self.agent = agent
        self.functions = load_functions(agent.tools or "")
        self.tools = [function_tool(fn) for fn in self.functions.values()]
        # Tools mostly wait (I/O, subprocesses): asyncio's default pool (cores + 4
        # threads) would queue hundreds of episodes' calls behind a few slow ones.
        self.pool = ThreadPoolExecutor(max_workers=agent.max_connections, thread_name_prefix="tool")

    async def session(self, row: dict[str, Any]) -> Session:
        return PythonSession(self)

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class PythonSession(Session):
    def __init__(self, env: PythonEnvironment):
        self.env = env

    async def call(
        self, name: str, arguments: dict[str, Any], text: str | None = None
    ) -> tuple[str, bool]:
        fn = self.env.functions.get(name)
        if fn is None:
            return json.dumps({"error": f"unknown tool {name!r}"}), True
        timeout = self.env.agent.tool_timeout_s
        try:
            if asyncio.iscoroutinefunction(fn):
                result = await asyncio.wait_for(fn(**arguments), timeout)
            else:
                # A thread can't be stopped: one that overruns keeps running, unseen.
                call = functools.partial(fn, **arguments)
                running = asyncio.get_running_loop().run_in_executor(self.env.pool, call)
                result = await asyncio.wait_for(running, timeout)
        except TimeoutError:
            raise ToolUnavailable(f"tool {name} gave no result within {timeout:g} s") from None
        except Exception as exc:  # the tool's own error: the model sees it, as in Gym
            return json.dumps({"error": f"{type(exc).__name__}: {exc}"}), True
        if isinstance(result, str):
            return result, False
        return json.dumps(result, default=str, ensure_ascii=False), False


def load_functions(spec: str) -> dict[str, Callable[..., Any]]:
    """`module:object` to {name: function}; the object is a list, dict or one function.

    Raises:
        JobFault: the module or object can't be imported (every episode would fail).
    """
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise JobFault(f"agent.tools {spec!r} can't be imported: {reason}") from None
    if callable(obj) and not isinstance(obj, type):
        items = [obj]
    elif isinstance(obj, dict):
        return {str(k): v for k, v in obj.items() if callable(v)}
    else:
        items = list(obj) if isinstance(obj, list | tuple) else []
    functions = {fn.__name__: fn for fn in items if callable(fn)}
    if not functions:
        raise JobFault(f"agent.tools {spec!r} holds no functions (a list, dict or a function)")
    return functions
