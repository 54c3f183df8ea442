"""Tools from an MCP server, through the official `mcp` SDK: stdio or streamable HTTP.

The server's tools are listed once (`tools/list`, every page) and offered to the model
with their JSON schemas; each call is a `tools/call` through the SDK's client, and its
content is the call's output (text parts joined; structured content as JSON when there
is no text). A result the server marks `isError`, or a JSON-RPC error for the call
(unknown tool, bad arguments), is an error output the model sees, as Gym's agent gives
a tool's 4xx/500 body. A server that can't be started or reached, a closed connection
or a call past `tool_timeout_s` is retried (`tool_retries`, with backoff, connecting
again); then the episode fails with stage `tool`, retryable. A failed start is
remembered for `tool_timeout_s`, so a dead server costs each rollout nothing more.

Session lifetime (`agent.session`): `engine` (the default) keeps one MCP session per
engine actor, shared by all its episodes. An MCP session is a long-lived, stateful
connection that multiplexes concurrent requests (the SDK's `Client` is built to be
entered once and used for many calls), and for stdio it is a process: one per episode
would start hundreds of processes for a batch of episodes and list the tools each time.
`episode` gives each episode its own session, for servers that keep state per session
(what Gym's session cookie does over HTTP); the tools are still listed once.

The SDK runs on anyio task groups, which must be exited by the task that entered them:
each connection lives in a task of its own, and episodes only send requests through it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from rollout_ray.agents.environments import Environment, Session, ToolUnavailable
from rollout_ray.config.agents import AgentConfig

#: JSON-RPC codes that mean the connection failed, not the tool (mcp_types.jsonrpc).
_CONNECTION_CLOSED, _REQUEST_TIMEOUT = -32000, -32001
_MAX_PAGES = 100


class _Connection:
    """One MCP client session, kept open by a task of its own until `close`."""

    def __init__(self, agent: AgentConfig):
        self.agent = agent
        self.client: Any = None
        self.dead: BaseException | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def _target(self) -> Any:
        from mcp import StdioServerParameters

        if self.agent.url:
            return self.agent.url
        command = list(self.agent.command or [])
        return StdioServerParameters(command=command[0], args=command[1:], env=self.agent.env)

    async def open(self) -> None:
        """Connect (start the server, for stdio) and shake hands.

        Raises:
            ToolUnavailable: the server can't be started or reached, or did not answer
                within `tool_timeout_s`.
        """
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._keep(ready), name="mcp-session")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.agent.tool_timeout_s)
        except asyncio.TimeoutError:
            await self.close()
            raise ToolUnavailable(
                f"{self.where()} did not answer within {self.agent.tool_timeout_s:g} s "
                "(agent.tool_timeout_s)"
            ) from None
        except Exception as exc:
            await self.close()
            raise ToolUnavailable(f"{self.where()} can't be reached: {_reason(exc)}") from None

    async def _keep(self, ready: asyncio.Future[None]) -> None:
        from mcp import Client

        try:
            async with Client(self._target(), read_timeout_seconds=self.agent.tool_timeout_s) as c:
                self.client = c
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:  # the server went away; callers see `dead`
            self.dead = exc
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self.client = None
            if self.dead is None:
                self.dead = RuntimeError("the MCP session was closed")

    @property
    def alive(self) -> bool:
        return self.client is not None and self.dead is None

    def broken(self, reason: BaseException | str) -> None:
        """A call found the connection gone: the next call connects again."""
        if self.dead is None:
            self.dead = reason if isinstance(reason, BaseException) else RuntimeError(reason)
        self._stop.set()

    def where(self) -> str:
        return describe(self.agent)

    async def close(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.agent.tool_timeout_s)
            except BaseException:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


class MCPEnvironment(Environment):
    """An MCP server's tools, for every episode of one engine actor."""

    def __init__(self, agent: AgentConfig):
        super().__init__()
        self.agent = agent
        self._shared: _Connection | None = None
        self._listed = False
        self._failure: tuple[float, str] | None = None
        self._lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        """List the server's tools, once: through the shared session (`engine`), or a
        session opened for it and closed (`episode`).

        Raises:
            ToolUnavailable: the server can't be reached; remembered for `tool_timeout_s`.
        """
        if self._listed:
            return
        if self.agent.session == "engine":
            await self.connection()
            return
        async with self._guard():
            if self._listed:
                return
            self._check_failure()
            try:
                lister = await self._open_with_retries()
                try:
                    self.tools = await list_tools(lister)
                finally:
                    await lister.close()
            except ToolUnavailable as exc:
                self._failure = (time.monotonic(), str(exc))
                raise
            self._listed = True

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:  # made on the loop that uses it
            self._lock = asyncio.Lock()
            self._slots = asyncio.Semaphore(self.agent.max_connections)
        return self._lock

    def slots(self) -> asyncio.Semaphore:
        """Calls in flight at once (`max_connections`)."""
        self._guard()
        assert self._slots is not None
        return self._slots

    def _check_failure(self) -> None:
        """Fail fast while a failed start is recent: a dead server costs each rollout
        nothing, and is tried again after `tool_timeout_s`."""
        if self._failure and time.monotonic() - self._failure[0] < self.agent.tool_timeout_s:
            raise ToolUnavailable(self._failure[1])

    async def connection(self) -> _Connection:
        """The shared session, connected (again, if it died).

        Raises:
            ToolUnavailable: it can't be (re)opened; remembered for `tool_timeout_s`.
        """
        async with self._guard():
            shared = self._shared
            if shared is not None and shared.alive and self._listed:
                return shared
            self._check_failure()
            if shared is not None:
                await shared.close()
            try:
                self._shared = await self._open_with_retries()
                if not self._listed:
                    self.tools = await list_tools(self._shared)
                    self._listed = True
            except ToolUnavailable as exc:
                self._failure = (time.monotonic(), str(exc))
                raise
            self._failure = None
            return self._shared

    async def _open_with_retries(self) -> _Connection:
        attempts = self.agent.tool_retries + 1
        last = ""
        for attempt in range(attempts):
            connection = _Connection(self.agent)
            try:
                await connection.open()
                return connection
            except ToolUnavailable as exc:
                last = str(exc)
            if attempt + 1 < attempts:
                await _backoff(attempt)
        raise ToolUnavailable(f"{last} ({attempts} attempts)")

    async def session(self, row: dict[str, Any]) -> Session:
        await self.start()
        if self.agent.session == "engine":
            return MCPSession(self, None)
        own = await self._open_with_retries()
        return MCPSession(self, own)

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()
            self._shared = None


class MCPSession(Session):
    """One episode's calls: through the shared session, or its own (`own`)."""

    def __init__(self, env: MCPEnvironment, own: _Connection | None):
        self.env = env
        self.own = own

    async def _connection(self) -> _Connection:
        if self.own is None:
            return await self.env.connection()
        if not self.own.alive:
            await self.own.close()
            self.own = await self.env._open_with_retries()
        return self.own

    async def call(
        self, name: str, arguments: dict[str, Any], text: str | None = None
    ) -> tuple[str, bool]:
        """`text` is unused: MCP's SDK sends the parsed arguments as its own JSON."""
        from mcp import MCPError

        agent = self.env.agent
        attempts = agent.tool_retries + 1
        last = ""
        for attempt in range(attempts):
            connection = await self._connection()
            try:
                async with self.env.slots():
                    result = await asyncio.wait_for(
                        connection.client.call_tool(name, arguments), agent.tool_timeout_s
                    )
            except asyncio.TimeoutError:
                last = f"no answer within {agent.tool_timeout_s:g} s (agent.tool_timeout_s)"
            except MCPError as exc:
                if exc.code not in (_CONNECTION_CLOSED, _REQUEST_TIMEOUT):
                    return json.dumps({"error": f"MCP error {exc.code}: {exc.message}"}), True
                last = f"MCP error {exc.code}: {exc.message}"
                if exc.code == _CONNECTION_CLOSED:
                    connection.broken(last)
            except Exception as exc:  # the transport failed under the call
                last = _reason(exc)
                connection.broken(exc)
            else:
                return tool_output(result), bool(result.is_error)
            if attempt + 1 < attempts:
                await _backoff(attempt)
        where = describe(agent)
        raise ToolUnavailable(f"{name} on {where} failed {attempts} times; last: {last}")

    async def close(self) -> None:
        if self.own is not None:
            await self.own.close()
            self.own = None


def describe(agent: AgentConfig) -> str:
    if agent.url:
        return f"the MCP server at {agent.url}"
    return f"the MCP server `{' '.join(agent.command or [])}`"


async def list_tools(connection: _Connection) -> list[dict[str, Any]]:
    """Every tool the server lists, in chat-completions shape with its JSON schema.

    Raises:
        ToolUnavailable: the listing failed.
    """
    tools: list[dict[str, Any]] = []
    cursor = None
    try:
        for _ in range(_MAX_PAGES):
            page = await asyncio.wait_for(
                connection.client.list_tools(cursor=cursor), connection.agent.tool_timeout_s
            )
            for tool in page.tools:
                function: dict[str, Any] = {
                    "name": tool.name,
                    "description": tool.description or "",
                    "parameters": tool.input_schema or {"type": "object", "properties": {}},
                }
                tools.append({"type": "function", "function": function})
            cursor = page.next_cursor
            if not cursor:
                break
    except Exception as exc:
        raise ToolUnavailable(
            f"{connection.where()} did not list its tools: {_reason(exc)}"
        ) from None
    return tools


def tool_output(result: Any) -> str:
    """A call's result as the text the model sees: its text parts, else its structured
    content as JSON, else its content blocks as JSON (images, resources)."""
    texts = [block.text for block in result.content if getattr(block, "type", "") == "text"]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    blocks = [block.model_dump(mode="json", exclude_none=True) for block in result.content]
    return json.dumps(blocks, ensure_ascii=False)


def _reason(exc: BaseException) -> str:
    """An exception, or the first leaf of an exception group, in one line."""
    while getattr(exc, "exceptions", None):  # an exception group (anyio's task groups)
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))
