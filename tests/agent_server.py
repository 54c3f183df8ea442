"""A resources server speaking NeMo Gym's protocol that misbehaves on purpose, and counts.

POST /seed_session takes the row and sets a session cookie; POST /add {"n": int} adds
to the session's total; POST /verify rewards 1.0 when the total equals the row's
`expected_total`. The row's `fault` picks what goes wrong in its sessions:
`flaky`: /add answers 503 twice, then works; `slow`: the first /add takes `slow_s`;
`error`: /add answers 500 with an error body (a tool error the model sees);
`down`: /add always 503; `verify_down`: /verify answers 500;
`verify_bad`: /verify answers without a reward; `huge`: /add answers with 200 kB;
`bomb`: /add answers with 20 MB of JSON gzip-compressed to a few kB; `verify_huge`:
/verify answers with 200 kB; `verify_422`: /verify refuses the body as a wrong server
would (422, a schema error). POST /note takes any arguments object and answers how many
notes the session has. Every /verify body is kept in `verify_bodies`.
Calls without the session cookie get 400, as Gym's servers do. With `prefix` the
endpoints sit under it (`/envs/mine/add`); every request's raw path (query included)
is logged in `paths`, and paths that are no endpoint get 404.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter

from aiohttp import web

COOKIE = "session"


class AgentServer:
    def __init__(self, slow_s: float = 3.0, prefix: str = ""):
        self.slow_s = slow_s
        self.prefix = prefix
        self.paths: list[str] = []
        self.sessions: dict[str, dict] = {}
        self.hits: Counter[str] = Counter()
        self.no_cookie = 0
        self.verify_bodies: list[dict] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self, port: int = 0) -> AgentServer:
        self._ready.clear()
        self.port = port
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(10), "agent server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()

        @web.middleware
        async def log_path(request: web.Request, handler):  # type: ignore[no-untyped-def]
            self.paths.append(request.raw_path)
            return await handler(request)

        app = web.Application(middlewares=[log_path])
        app.router.add_get(self.prefix + "/", lambda _: web.json_response({"status": "ok"}))
        app.router.add_post(self.prefix + "/seed_session", self._seed)
        app.router.add_post(self.prefix + "/add", self._add)
        app.router.add_post(self.prefix + "/note", self._note)
        app.router.add_post(self.prefix + "/verify", self._verify)
        app.router.add_route("*", "/{tail:.*}", lambda _: web.json_response({}, status=404))

        async def up() -> None:
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self._loop.run_until_complete(up())
        self._ready.set()
        self._loop.run_forever()

    def _session(self, request: web.Request) -> dict | None:
        state = self.sessions.get(request.cookies.get(COOKIE, ""))
        if state is None:
            self.no_cookie += 1
        return state

    async def _seed(self, request: web.Request) -> web.Response:
        row = await request.json()
        sid = uuid.uuid4().hex
        self.sessions[sid] = {"row": row, "total": 0, "adds": 0}
        self.hits["seed"] += 1
        reply = web.json_response({})
        reply.set_cookie(COOKIE, sid)
        return reply

    async def _add(self, request: web.Request) -> web.Response:
        state = self._session(request)
        if state is None:
            return web.json_response({"detail": "session not seeded"}, status=400)
        fault = state["row"].get("fault")
        state["adds"] += 1
        self.hits[f"add:{fault}"] += 1
        if fault == "down" or (fault == "flaky" and state["adds"] <= 2):
            return web.json_response({"detail": "unavailable"}, status=503)
        if fault == "slow" and state["adds"] == 1:
            await asyncio.sleep(self.slow_s)
        if fault == "error":
            return web.json_response({"error": "the adder broke"}, status=500)
        if fault == "huge":
            return web.json_response({"total": 0, "pad": "x" * 200_000})
        if fault == "bomb":
            reply = web.json_response({"total": 0, "pad": " " * 20_000_000})
            reply.enable_compression(web.ContentCoding.gzip)
            return reply
        body = await request.json()
        if not isinstance(body.get("n"), int):
            return web.json_response({"detail": "n must be an integer"}, status=422)
        state["total"] += body["n"]
        return web.json_response({"total": state["total"]})

    async def _note(self, request: web.Request) -> web.Response:
        state = self._session(request)
        if state is None:
            return web.json_response({"detail": "session not seeded"}, status=400)
        if not isinstance(await request.json(), dict):
            return web.json_response({"detail": "arguments must be an object"}, status=422)
        state["notes"] = state.get("notes", 0) + 1
        self.hits["note"] += 1
        return web.json_response({"notes": state["notes"]})

    async def _verify(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.verify_bodies.append(body)
        state = self._session(request)
        fault = (state or {}).get("row", {}).get("fault")
        self.hits[f"verify:{fault}"] += 1
        if fault == "verify_422":
            detail = [{"loc": ["body", "response", "output"], "msg": "Field required"}]
            return web.json_response({"detail": detail}, status=422)
        if fault == "verify_down":
            return web.json_response({"detail": "verifier crashed"}, status=500)
        if fault == "verify_bad":
            return web.json_response({"verdict": "fine"})
        if fault == "verify_huge":
            return web.json_response({"reward": 1.0, "pad": "x" * 200_000})
        total = state["total"] if state else None
        reward = 1.0 if total is not None and total == body.get("expected_total") else 0.0
        outputs = [i for i in body["response"]["output"] if i["type"] == "function_call_output"]
        return web.json_response(
            {**body, "reward": reward, "total": total, "outputs": len(outputs)}
        )
