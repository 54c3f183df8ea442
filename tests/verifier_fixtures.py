"""Helpers for test_verifiers: python-verifier functions and a NeMo Gym-style /verify server.

They live in an importable module (not the test file) because verifiers import them by
name: the python verifier as `verifier_fixtures:function`, math workers by pickle.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# ----------------------------------------------------------------------------- python verifiers


def sync_reward(record: dict[str, Any], bonus: float = 0.0) -> float:
    """1 + bonus when the response is the reference; also says it ran off the main thread."""
    assert threading.current_thread() is not threading.main_thread(), "ran on the loop thread"
    return float(record["response_text"].strip() == str(record["expected_answer"])) + bonus


async def async_reward(record: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"reward": 0.5, "length": len(record["response_text"])}


def credential_fingerprint(record: dict[str, Any]) -> dict[str, Any]:
    """Reward 1, and which cloud secret this process holds, as a hash (the value itself
    would be masked): the test compares it with the driver's and the nodes' own."""
    import hashlib

    held = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return {"reward": 1.0, "aws_secret_sha": hashlib.sha256(held.encode()).hexdigest()[:12]}


def returns_text(record: dict[str, Any]) -> str:
    return "yes"


def returns_dict_without_reward(record: dict[str, Any]) -> dict[str, Any]:
    return {"score": 1}


def raises(record: dict[str, Any]) -> float:
    raise ValueError("boom")


def flaky_first_attempt(record: dict[str, Any], rows: tuple[int, ...] = (0, 1)) -> float:
    """Can't judge the given rows on their first attempt (a retryable error), then can."""
    from rollout_ray.verifiers import VerifierError

    if record["row_index"] in rows and record["attempt"] == 1:
        raise VerifierError("the judge is busy", terminal=False)
    return 1.0


def always_busy(record: dict[str, Any]) -> float:
    """Never able to judge, on an error that might pass (it never does)."""
    from rollout_ray.verifiers import VerifierError

    raise VerifierError("the judge is busy", terminal=False)


def hangs_on(record: dict[str, Any], rows: tuple[int, ...] = (0,)) -> float:
    """Never returns for the given rows (a verifier stuck on some input)."""
    if record["row_index"] in rows:
        while True:
            time.sleep(1)
    return 1.0


def kills_its_process_on(record: dict[str, Any], rows: tuple[int, ...] = (0,)) -> float:
    """Ends the process it runs in for the given rows (a verifier that segfaults)."""
    import os

    if record["row_index"] in rows:
        os._exit(3)
    return 1.0


def slow_check(gold: str, prediction: str, prompt: str = "") -> tuple[bool, str, bool]:
    """Stands in for math-verify stuck on a pathological input: says which process it
    runs in (the reference answer, `\\boxed{PATH}`, names the file), then never returns."""
    with open(gold.removeprefix("\\boxed{").removesuffix("}"), "w") as f:
        f.write(str(os.getpid()))
    threading.Event().wait()
    return True, "never", False


# ----------------------------------------------------------------------------- /verify server

_BOXED_LETTER = re.compile(r"\\boxed\{\s*\(?([A-Z])\)?\s*\}")


class VerifyServer:
    """POST /verify on loopback, graded like Gym's mcqa server, with scripted failures.

        The row's `uuid` picks the script: `flaky-429` (429 + Retry-After: 1 once),
        `flaky-500` (500 twice), `always-500`, `bad-request` (400), `slow` (no answer until the
    server stops); anything
        else is graded. It records attempts per uuid, headers and the peak of requests in
        flight.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.handle(self)

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/verify"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> VerifyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = json.loads(request.rfile.read(int(request.headers["Content-Length"])))
        key = str(body.get("uuid"))
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.attempts[key] += 1
            attempt = self.attempts[key]
            self.headers.append(dict(request.headers))
            self.bodies.append(body)
        try:
            if key == "slow":  # never answers in time: waits until the server stops
                self.release.wait(60)
            else:
                time.sleep(0.05)  # long enough for requests to overlap
            status, reply, extra = self.reply(key, attempt, body, request)
        finally:
            with self.lock:
                self.in_flight -= 1
        data = json.dumps(reply).encode()
        try:
            request.send_response(status)
            for name, value in {"Content-Type": "application/json", **extra}.items():
                request.send_header(name, value)
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except OSError:  # the client gave up (timeout test)
            pass

    def reply(
        self, key: str, attempt: int, body: dict[str, Any], request: BaseHTTPRequestHandler
    ) -> tuple[int, Any, dict[str, str]]:
        if key == "flaky-429" and attempt == 1:
            return 429, {"detail": "slow down"}, {"Retry-After": "1"}
        if (key == "flaky-500" and attempt <= 2) or key == "always-500":
            # Echo the credentials: the client must not leak them into its errors.
            return 500, {"detail": f"boom, auth was {request.headers.get('Authorization')}"}, {}
        if key == "bad-request":
            return 400, {"detail": "unknown grading_mode"}, {}
        problem = _shape_problem(body)
        if problem:
            return 422, {"detail": problem}, {}
        text = body["response"]["output"][0]["content"][0]["text"]
        found = _BOXED_LETTER.findall(text)
        extracted = found[-1] if found else None
        gold = str(body.get("expected_answer", "")).strip().upper()
        reward = 1.0 if extracted is not None and extracted == gold else 0.0
        return 200, {**body, "reward": reward, "extracted_answer": extracted}, {}


def _shape_problem(body: dict[str, Any]) -> str | None:
    """What Gym's pydantic models would reject in a /verify body, if anything."""
    params, response = body.get("responses_create_params"), body.get("response")
    if not isinstance(params, dict) or "input" not in params:
        return "responses_create_params.input missing"
    if not isinstance(response, dict):
        return "response missing"
    required = {"id", "created_at", "model", "object", "output", "parallel_tool_calls"}
    if not required <= set(response) or response["object"] != "response":
        return "response is not a Responses API object"
    item = response["output"][0]
    if item["type"] != "message" or item["content"][0]["type"] != "output_text":
        return "output[0] is not an output_text message"
    return None


def hold_until_released(record: dict[str, Any]) -> float:
    """Reward 1. A row carrying `hold: <folder>` first writes `<folder>/waiting`, then
    waits for `<folder>/release`: a test sees a piece that is surely mid-flight (its
    rollouts generated, its verification pending) and kills the engine actor then."""
    folder = record.get("hold")
    if folder:
        with open(os.path.join(folder, "waiting"), "a") as f:
            f.write(f"{os.getpid()}\n")
        while not os.path.exists(os.path.join(folder, "release")):
            time.sleep(0.05)
    return 1.0
