"""A tiny MCP server for the agent tests, written with the official SDK (mcp 2's
MCPServer, FastMCP's successor), over stdio or streamable HTTP on loopback.

    python mcp_server.py stdio LOG
    python mcp_server.py http PORT LOG

Tools: `add` (two digits 1-9: a schema a random model's forced calls can satisfy),
`upper` (a short word), `fail` (raises: an error result), `crash` (the process exits
mid-call); MCP_TEST_TOOLS=add,fail keeps only those (a tiny model's context is short).
Every call is appended to LOG as a JSON line with the tool, its arguments, its result
and the server's pid, so tests can check which calls reached the server.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

Digit = Annotated[int, Field(ge=1, le=9)]

server = MCPServer("rollout-ray-test-tools", log_level="CRITICAL")
LOG = ""


def _log(tool: str, arguments: dict, result: object) -> None:
    line = {"tool": tool, "arguments": arguments, "result": result, "pid": os.getpid()}
    with open(LOG, "a") as f:
        f.write(json.dumps(line) + "\n")


@server.tool()
def add(a: Digit, b: Digit) -> int:
    """Add two digits."""
    _log("add", {"a": a, "b": b}, a + b)
    return a + b


@server.tool()
def upper(word: Annotated[str, Field(max_length=8)]) -> str:
    """A word in capitals."""
    _log("upper", {"word": word}, word.upper())
    return word.upper()


@server.tool()
def fail(reason: Annotated[str, Field(max_length=8)]) -> str:
    """Always fails."""
    _log("fail", {"reason": reason}, None)
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
def crash(code: Digit) -> str:
    """Ends the server's process mid-call."""
    _log("crash", {"code": code}, None)
    os._exit(3)


def main() -> None:
    global LOG
    mode, *rest = sys.argv[1:]
    kept = os.environ.get("MCP_TEST_TOOLS")
    for name in ("add", "upper", "fail", "crash"):
        if kept and name not in kept.split(","):
            server.remove_tool(name)
    if mode == "stdio":
        (LOG,) = rest
        server.run("stdio")
    else:
        port, LOG = rest
        server.run("streamable-http", host="127.0.0.1", port=int(port))


if __name__ == "__main__":
    main()
