"""vLLM's engine core inside the actor's own process, stepped by one thread.

AsyncLLM always runs its engine core in a second process and detokenizes and
serialises outputs in the first. On a GPU that overlap is free: the GPU computes while
the CPU does the bookkeeping. On CPU the engine's OpenMP threads want every core, and
the front end's work lands on a core that a compute thread needed, which holds up every
thread of that step. Here the core runs in-process (vLLM's InprocClient, what
`vllm.LLM` uses) and one thread steps it, so the bookkeeping runs between steps instead
of against them. benchmarks/throughput.py measures the two side by side.

Requests still arrive from many coroutines at once: each is queued to the stepping
thread and resolved with the finished output, so the scheduler always sees everything
in flight, as with AsyncLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from typing import IO, Any

log = logging.getLogger(__name__)

#: A folder for per-step traces (docs/debugging.md): one file per engine process.
STEP_TRACE_ENV = "ROLLOUT_RAY_STEP_TRACE"


def step_trace() -> IO[str] | None:
    """Where this engine writes a line per step (start time, seconds the step took,
    requests in flight), when ROLLOUT_RAY_STEP_TRACE names a folder: the engine's own
    compute apart from everything around it, the measure that told on Ray a slower
    step from a slower start or an idle engine (docs/benchmarks.md, stop 34)."""
    folder = os.environ.get(STEP_TRACE_ENV)
    if not folder:
        return None
    try:
        os.makedirs(folder, exist_ok=True)
        return open(os.path.join(folder, f"steps-{os.getpid()}.tsv"), "a", buffering=1)
    except OSError as exc:  # a debugging aid: never the job's fault
        log.warning("no step trace in %s: %s", folder, exc)
        return None


class SteppedEngine:
    """An in-process vLLM LLMEngine driven by a thread, awaited from asyncio."""

    def __init__(self, engine_args: Any, usage_context: Any, stat_loggers: list | None):
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiters: dict[str, tuple[asyncio.Future, asyncio.AbstractEventLoop]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self.error: BaseException | None = None
        # The engine is built on the thread that steps it: vLLM's CPU worker sizes and
        # pins the OpenMP thread team of the thread that initialises it, and a team
        # belongs to the thread that runs the model (built on another thread, a job
        # ran at 318 output tok/s where the separate-process core gave 371).
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(engine_args, usage_context, stat_loggers, ready),
            name="vllm-step",
            daemon=True,
        )
        self._thread.start()
        ready.wait()
        if self.error is not None:
            raise self.error
        self.model_config = self.engine.model_config
        self.vllm_config = self.engine.vllm_config

    async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
        """The finished RequestOutput of one request."""
        if self.error is not None or self._stopping:
            raise RuntimeError(f"engine is stopped: {self.error!r}")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._inbox.put(("add", request_id, prompt, params, future, loop))
        self._wake.set()
        if self.error is not None or self._stopping:  # stopped while this was queued
            self._fail_all(self.error or RuntimeError("engine shut down"))
        try:
            return await future
        except asyncio.CancelledError:
            self._inbox.put(("abort", request_id, None, None, None, None))
            self._wake.set()
            raise

    def get_num_unfinished_requests(self) -> int:
        return len(self._waiters)

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._fail_all(RuntimeError("engine shut down"))
        core = getattr(self.engine, "engine_core", None)
        if core is not None:
            core.shutdown()

    # ------------------------------------------------------------------ stepping thread

    def _run(self, engine_args, usage_context, stat_loggers, ready: threading.Event) -> None:
        from vllm.v1.engine.llm_engine import LLMEngine

        try:
            self.engine = engine = LLMEngine.from_engine_args(
                engine_args, usage_context=usage_context, stat_loggers=stat_loggers
            )
        except BaseException as exc:
            self.error = exc
            return
        finally:
            ready.set()
        trace = step_trace()
        try:
            while not self._stopping:
                self._take_requests()
                if not engine.has_unfinished_requests():
                    self._wake.wait()
                    self._wake.clear()
                    continue
                began = time.time()
                outputs = engine.step()
                if trace is not None:
                    trace.write(f"{began:.3f}\t{time.time() - began:.4f}\t{len(self._waiters)}\n")
                for output in outputs:
                    if output.finished:
                        self._settle(output.request_id, result=output)
        except BaseException as exc:  # the engine is dead: every waiter learns why
            log.error("vLLM engine step failed: %r", exc)
            self.error = exc
            self._fail_all(exc)
        finally:
            if trace is not None:
                trace.close()

    def _queued(self):
        """What callers have queued since the last look, oldest first."""
        while True:
            try:
                yield self._inbox.get_nowait()
            except queue.Empty:
                return

    def _take_requests(self) -> None:
        for op, request_id, prompt, params, future, loop in self._queued():
            if op == "abort":
                if self._waiters.pop(request_id, None) is not None:
                    self.engine.abort_request([request_id])
                continue
            self._waiters[request_id] = (future, loop)
            try:
                self.engine.add_request(request_id, prompt, params)
            except Exception as exc:  # this request is invalid; the engine is fine
                self._settle(request_id, error=exc)

    def _settle(self, request_id: str, result: Any = None, error: BaseException | None = None):
        waiter = self._waiters.pop(request_id, None)
        if waiter is None:
            return
        future, loop = waiter

        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the caller's loop has closed
            loop.call_soon_threadsafe(settle)

    def _fail_all(self, exc: BaseException) -> None:
        """Fail every waiter, and every request still queued to a thread that has ended."""
        for op, request_id, _, _, future, loop in self._queued():
            if op == "add":
                self._waiters[request_id] = (future, loop)
        for request_id in list(self._waiters):
            self._settle(request_id, error=RuntimeError(f"vLLM engine failed: {exc!r}"))
