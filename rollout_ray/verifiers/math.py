"""The math verifier: answer equivalence by math-verify, in worker processes with a hard timeout.

math-verify enforces its own timeouts with SIGALRM, which only works on the main thread
of the main interpreter; verifiers run on event loops in Ray actors, often off the main
thread. So its timeouts are switched off and each check runs in a worker process instead:
a check that outlives `timeout_s` is abandoned by killing its worker, which also stops
pathological sympy work that no thread could interrupt.

Workers are plain `python -c` subprocesses talking over pipes, not multiprocessing: fork
is unsafe in a process full of Ray/vLLM threads, and spawn/forkserver children re-run
the caller's `__main__` (a Ray worker script, or a user script without a main guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from rollout_ray.config import MathVerifier
from rollout_ray.verifiers.base import Verdict, Verifier, VerifierError
from rollout_ray.verifiers.builtin import reference, response_text


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Worker processes per verifier: a check takes a few ms, so a few keep up; more than
#: the CPUs we may use only adds contention.
POOL_WORKERS = max(1, min(4, _usable_cpus()))
#: Starting a worker (importing sympy) is not the check's fault, so it has its own limit.
STARTUP_TIMEOUT_S = 120.0
_BOOT = "from rollout_ray.verifiers.math import serve_forever; serve_forever()"
_HEADER = struct.Struct("!I")


def check(gold: str, prediction: str, prompt: str = "") -> tuple[bool | None, str | None, bool]:
    """(equivalent?, extracted answer, restates the prompt?), as NeMo Gym's math server
    judges (resources_servers/math_with_judge, `_run_math_verify`): the reference as
    LaTeX, the whole response through math-verify's expression and LaTeX extraction,
    and the extracted answer its first prediction that matches, else its first.
    (None, None, False) when the reference won't parse (Gym scores that 0; we can't
    judge it). `prompt`: when given, an answer that only restates an expression from it
    is not equivalent (see `restates`).

    Runs in a worker; module level so it pickles by reference.
    """
    from math_verify import parse, verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    gold_parsed = parse(gold, [LatexExtractionConfig()], parsing_timeout=None)
    if not gold_parsed:
        return None, None, False
    predicted = parse(
        prediction, [ExprExtractionConfig(), LatexExtractionConfig()], parsing_timeout=None
    )
    ok = bool(verify(gold_parsed, predicted, 6, timeout_seconds=None))
    golds = [str(g) for g in gold_parsed]
    texts = [str(p) for p in predicted]
    extracted = next(
        (t for t in texts if any(verify(g, t, timeout_seconds=None) for g in golds)),
        texts[0] if texts else None,
    )
    restated = ok and bool(prompt) and restates(predicted, gold_parsed, prompt)
    return ok and not restated, extracted, restated


#: An operator between operands: `+ - * / ^`, and LaTeX's (a leading sign doesn't count).
_OPERATOR = re.compile(r".[-+*/^×÷·]|\\(frac|dfrac|tfrac|times|cdot|div|sqrt|pm)\b")
#: What doesn't change an expression's reading: spaces, `$`, braces, \left \right, `\,`.
_NOISE = re.compile(r"\s+|\$|[{}]|\\left|\\right|\\[,;!]|\.$")


def restates(predicted: list[Any], gold_parsed: list[Any], prompt: str) -> bool:
    r"""Whether the extracted answer is only an expression copied from the prompt.

    math-verify evaluates what it extracts, so "The answer is 3 + 18." scores for
    "What is 3 + 18?" (expected 21): a reward for restating the question, which a
    trainer would then teach (seen: 6 of 53 reward-1 DPO rollouts had no 21 in their
    text). An answer restates when its text is an expression (an operator between
    operands; a lone number never is), it appears in the prompt (compared without
    spaces, `$`, braces), and it is not the reference itself, in the reference's
    own writing or its parsed form ("Which is larger, 2^{10} or 10^3?" may be
    answered 2^{10}).
    """
    raw = next((p for p in predicted if isinstance(p, str)), None)
    if not raw or not _OPERATOR.search(raw.strip()):
        return False
    said = _NOISE.sub("", raw.strip())
    if not said or said not in _NOISE.sub("", prompt):
        return False
    gold_texts = {_NOISE.sub("", g) for g in gold_parsed if isinstance(g, str)}
    gold_forms = {str(g) for g in gold_parsed}
    return said not in gold_texts and not any(str(p) in gold_forms for p in predicted[:1])


def prompt_text(record: dict[str, Any]) -> str:
    """The prompt's text (every message), for telling a restated question from an answer."""
    messages = record.get("prompt_messages")
    if not isinstance(messages, list):
        return ""
    texts = (m.get("content") for m in messages if isinstance(m, dict))
    return "\n".join(t for t in texts if isinstance(t, str))


def gold_latex(answer: Any) -> str:
    r"""The reference as Gym's math server writes it: outer `\(..\)` then `$..$`
    stripped, inside `\boxed{}` (so LaTeX extraction finds plain numbers too). A
    GSM8K-style reference, a worked solution ending `#### 42`, is the part after its
    last `####` (parsed whole, its first number was taken: every right answer scored 0)."""
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    text = str(answer).strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    if text.startswith("\\(") and text.endswith("\\)"):
        text = text[2:-2].strip()
    if text.startswith("$") and text.endswith("$") and len(text) > 1:
        text = text[1:-1].strip()
    return "\\boxed{" + text + "}"


# ----------------------------------------------------------------------------- worker side


def _send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("math-verify worker closed its pipe")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("math-verify worker closed its pipe")
    return pickle.loads(data)


def _exit_with_parent(parent: int) -> None:
    """Don't outlive the parent, even stuck in sympy where its closed pipe goes unnoticed."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def serve_forever() -> None:
    """Worker main loop: (function, args) in, (ok, result or exception) out, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the reply pipe
    sys.path[:] = _recv(requests)  # import what the parent can import (e.g. test helpers)
    # Timeouts are off on purpose (see the module docstring): mute the warning saying so.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    check("\\boxed{1}", "1")  # pay the sympy import before the first timed check
    _send(replies, (True, "ready"))
    while True:
        try:
            function, args = _recv(requests)
        except EOFError:
            return
        except Exception as e:  # e.g. the function's module does not import here
            _send(replies, (False, RuntimeError(f"{type(e).__name__}: {e}")))
            continue
        try:
            reply: tuple[bool, Any] = (True, function(*args))
            pickle.dumps(reply)
        except Exception as e:
            reply = (False, RuntimeError(f"{type(e).__name__}: {e}"))
        _send(replies, reply)


# ----------------------------------------------------------------------------- parent side


class _Worker:
    """One worker process; `call` blocks, so it runs on a thread."""

    def __init__(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        try:
            _send(self.process.stdin, list(sys.path))
            _recv(self.process.stdout)  # "ready"
        except BaseException:
            self.kill()
            raise

    def call(self, function: Any, *args: Any) -> Any:
        _send(self.process.stdin, (function, args))
        ok, value = _recv(self.process.stdout)
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()


class MathVerify(Verifier):
    """Reward 1 when the response's answer equals the reference, as NeMo Gym's math
    server decides (math-verify on the whole response), except that an answer which
    only restates an expression from the prompt scores 0 (unless `reward_restated`)."""

    name = "math"

    def __init__(self, config: MathVerifier, workers: int | None = None):
        if importlib.util.find_spec("math_verify") is None:
            raise VerifierError(
                "the math verifier needs the math-verify package: pip install math-verify"
            )
        self.config = config
        self.workers = workers or POOL_WORKERS
        #: What a worker runs; tests swap in a slow function to exercise the timeout.
        self.target = check
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._threads: ThreadPoolExecutor | None = None
        self._slots: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    async def verify(self, record: dict[str, Any]) -> Verdict:
        answer = reference(record, self.config.answer_field)
        text = response_text(record)
        if not text.strip():
            return Verdict(0.0, {"extracted_answer": None})
        prompt = "" if self.config.reward_restated else prompt_text(record)
        ok, extracted, restated = await self._run(gold_latex(answer), text, prompt)
        if ok is None:
            raise VerifierError(
                f"math-verify could not parse the reference answer {str(answer)[:200]!r}",
                terminal=True,
            )
        details: dict[str, Any] = {"extracted_answer": extracted}
        if restated:
            details["restated_prompt"] = True
        return Verdict(1.0 if ok else 0.0, details)

    async def warm(self) -> None:
        loop = asyncio.get_running_loop()
        threads = self._thread_pool()
        starts = [loop.run_in_executor(threads, self._take) for _ in range(self.workers)]
        for worker in await asyncio.gather(*starts, return_exceptions=True):
            if isinstance(worker, _Worker):
                self._give_back(worker)

    async def close(self) -> None:
        with self._lock:
            workers = [*self._idle, *self._busy]
            self._idle, self._busy = [], set()
            threads, self._threads = self._threads, None
        for worker in workers:
            worker.kill()
        if threads is not None:
            threads.shutdown(wait=False)

    async def _run(self, gold: str, prediction: str, prompt: str) -> tuple[Any, ...]:
        """One check on a free worker, timed from when it starts, not while it queues."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.workers)
        async with slots:
            threads = self._thread_pool()
            # Shielded: a caller giving up must not strand a worker that is still starting.
            start = loop.run_in_executor(threads, self._take)
            try:
                worker = await asyncio.wait_for(asyncio.shield(start), STARTUP_TIMEOUT_S)
            except BaseException as e:
                start.add_done_callback(self._give_back_late)
                if isinstance(e, (OSError, EOFError, asyncio.TimeoutError)):
                    raise VerifierError(f"math-verify worker did not start: {e!r}", False) from e
                raise
            call = loop.run_in_executor(threads, worker.call, self.target, gold, prediction, prompt)
            try:
                result = await asyncio.wait_for(call, self.config.timeout_s)
            except asyncio.TimeoutError:
                self._discard(worker)  # the blocked thread then sees EOF and ends
                raise VerifierError(
                    f"math-verify timed out after {self.config.timeout_s:g}s", terminal=True
                ) from None
            except (OSError, EOFError) as e:  # only the pipes raise these; see serve_forever
                self._discard(worker)
                raise VerifierError(f"math-verify worker died: {e!r}", terminal=False) from e
            except Exception as e:  # the check raised; the worker is fine
                self._give_back(worker)
                raise VerifierError(f"math-verify failed: {e}", terminal=True) from e
            except BaseException:
                self._discard(worker)  # cancelled mid-check: its late reply would confuse the next
                raise
            self._give_back(worker)
            return result

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.workers + 1, "math-verify")
            return self._threads

    def _take(self) -> _Worker:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        worker = worker or _Worker()
        with self._lock:
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = len(self._idle) < self.workers and self._threads is not None
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.kill()

    def _give_back_late(self, start: asyncio.Future) -> None:
        if not start.cancelled() and start.exception() is None:
            self._give_back(start.result())

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        worker.kill()
