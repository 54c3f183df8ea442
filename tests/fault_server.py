"""An OpenAI-compatible chat server for tests that misbehaves on purpose, and counts.

The prompt's first word picks the behaviour of a request's first attempts:
`ok` answers; `throttle` gets 429 with Retry-After once; `error` gets 500 twice;
`slow` answers after `slow_s` once; `drop` closes the connection mid-body once;
`dead` always gets 503; `leak` gets 400 with the caller's bearer token in the body;
`huge` answers with a token count no int32 holds; `surrogate` answers with a lone
surrogate escape in its text. A request with `tools` gets a call to the first tool
(arguments {"n": 1}) on its first two assistant turns, then an answer; a user prompt
with words `call=NAME` gets a call to each NAME in turn instead, offered or not (a
model that calls what it likes).
It records the most requests in flight, when each request started, attempts per
prompt and every request body (`bodies`), so tests can check limits and what was sent
from the server's side. POST /v1/responses records its body and echoes its input's text.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict

from aiohttp import web


class FaultServer:
    def __init__(self, api_key: str, slow_s: float = 3.0, delay_s: float = 0.05):
        self.api_key = api_key
        self.slow_s = slow_s
        self.delay_s = delay_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[float] = []
        self.attempts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.bad_auth = 0
        self.tool_requests: list = []
        self.bodies: list[tuple[str, dict]] = []  # (path, request body)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        # A request whose client gave up (a timeout) stops counting as in flight.
        runner = web.AppRunner(app, handler_cancellation=True)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def max_in_window(self, window_s: float = 60.0) -> int:
        """The most requests that started within any `window_s` span."""
        starts, best, j = sorted(self.starts), 0, 0
        for i, t in enumerate(starts):
            while starts[j] <= t - window_s:
                j += 1
            best = max(best, i - j + 1)
        return best

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(("/v1/responses", body))
        text = "echo: " + json.dumps(body.get("input"))[:200]
        message = {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        return web.json_response(
            {
                "id": "resp_1",
                "object": "response",
                "created_at": int(time.time()),
                "model": body.get("model"),
                "status": "completed",
                "output": [message],
                "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(("/v1/chat/completions", body))
        prompt = str(body["messages"][-1].get("content") or "")
        kind = (prompt.split() or [""])[0]
        self.starts.append(time.monotonic())
        self.attempts[prompt] += 1
        self.times[prompt].append(time.monotonic())
        attempt = self.attempts[prompt]
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.bad_auth += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if kind == "throttle" and attempt == 1:
                return web.json_response(
                    {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "1"}
                )
            if kind == "error" and attempt <= 2:
                return web.json_response({"error": {"message": "boom"}}, status=500)
            if kind == "dead":
                return web.json_response({"error": {"message": "unavailable"}}, status=503)
            if kind == "leak":
                token = request.headers.get("Authorization", "")
                return web.json_response(
                    {"error": {"message": f"bad request from {token}"}}, status=400
                )
            if kind == "slow" and attempt == 1:
                await asyncio.sleep(self.slow_s)
            if kind == "drop" and attempt == 1:
                response = web.StreamResponse(
                    status=200, headers={"Content-Type": "application/json"}
                )
                response.content_length = 1000
                await response.prepare(request)
                await response.write(b'{"id": "cmpl-1", "choices": [')
                request.transport.close()
                return response
            assistant_turns = sum(m.get("role") == "assistant" for m in body["messages"])
            user = next((m for m in body["messages"] if m.get("role") == "user"), {})
            named = [w[5:] for w in str(user.get("content") or "").split() if w[:5] == "call="]
            turns = len(named) if named else 2
            if body.get("tools") and body.get("tool_choice") != "none" and assistant_turns < turns:
                # An agent's turn: call the first tool (or the named one), as a model would.
                self.tool_requests.append(body.get("tool_choice"))
                name = named[assistant_turns] if named else body["tools"][0]["function"]["name"]
                call = {
                    "id": f"call_{assistant_turns}",
                    "type": "function",
                    "function": {"name": name, "arguments": '{"n": 1}'},
                }
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
                return web.json_response(
                    {
                        "id": f"cmpl-{attempt}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "tool_calls", "message": message}
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
                    }
                )
            words = len(str(prompt).split())
            if kind == "huge":
                words = 5_000_000_000
            content = f"echo: {prompt}" + (" \ud800" if kind == "surrogate" else "")
            return web.json_response(
                {
                    "id": f"cmpl-{attempt}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": words,
                        "completion_tokens": words + 1,
                        "total_tokens": 2 * words + 1,
                    },
                }
            )
        finally:
            self.in_flight -= 1
