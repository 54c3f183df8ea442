"""The python verifier: any user function named `package.module:function` judges a rollout."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from rollout_ray.config import PythonVerifier
from rollout_ray.verifiers.base import Verdict, Verifier, VerifierError


def import_function(path: str) -> Callable[..., Any]:
    """`pkg.mod:name` (or `pkg.mod:Class.method`) -> the callable.

    Raises:
        VerifierError: terminal; the message names `path` and what was wrong with it.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise VerifierError(
            f"python verifier {path!r}: expected 'package.module:function'", terminal=True
        )
    if os.getcwd() not in sys.path:  # `myverifier:score` beside the config, as uvicorn finds apps
        sys.path.append(os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module itself failing on import
        raise VerifierError(
            f"python verifier {path!r}: cannot import {module_name!r}: {type(e).__name__}: {e}",
            terminal=True,
        ) from e
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as e:
            raise VerifierError(
                f"python verifier {path!r}: {module_name!r} has no attribute {attribute!r}",
                terminal=True,
            ) from e
    if not callable(target):
        raise VerifierError(f"python verifier {path!r} is not callable", terminal=True)
    return target


def to_verdict(result: Any, path: str) -> Verdict:
    """A number (bool counts) or a dict with `reward`; anything else is the function's bug."""
    if isinstance(result, Verdict):
        return result
    if isinstance(result, (bool, int, float)):
        return Verdict(float(result))
    if isinstance(result, dict):
        if "reward" not in result:
            raise VerifierError(
                f"python verifier {path!r} returned a dict without 'reward'", terminal=True
            )
        details = {k: v for k, v in result.items() if k != "reward"}
        try:
            return Verdict(float(result["reward"]), details)
        except (TypeError, ValueError) as e:
            raise VerifierError(
                f"python verifier {path!r} returned a non-numeric reward {result['reward']!r}",
                terminal=True,
            ) from e
    raise VerifierError(
        f"python verifier {path!r} returned {type(result).__name__}; "
        "expected a number or a dict with 'reward'",
        terminal=True,
    )


def on_own_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
    """Run a sync call on a new daemon thread; its result (or error) as a future.

    Not the loop's shared executor: a call that hangs keeps its thread forever, and a
    handful of them would starve every later call (and, being non-daemon, the actor's
    exit). A thread costs tens of microseconds, little beside a verifier's work.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def target() -> None:
        try:
            value, ok = fn(*args, **kwargs), True
        except BaseException as e:  # handed to the awaiting coroutine
            value, ok = e, False
        with contextlib.suppress(RuntimeError):  # the loop closed while we ran
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=target, name="python-verifier", daemon=True).start()
    return future


class PythonFunction(Verifier):
    """Calls `function(record, **kwargs)`; sync functions run on a thread, never on the loop.

    The function is imported on first use rather than when the verifier is built; a
    job checks once that it imports where the job starts (check_verifiers), so a name
    that can't be imported stops the job before it generates anything.
    """

    name = "python"

    def __init__(self, config: PythonVerifier):
        self.config = config
        self._lock = threading.Lock()
        self._function: Callable[..., Any] | None = None
        self._import_error: VerifierError | None = None

    def function(self) -> Callable[..., Any]:
        """The imported function; a failed import is remembered, not retried per record."""
        with self._lock:
            if self._function is None and self._import_error is None:
                try:
                    self._function = import_function(self.config.function)
                except VerifierError as e:
                    self._import_error = e
            if self._import_error is not None:
                raise VerifierError(str(self._import_error), terminal=True)
            assert self._function is not None
            return self._function

    async def verify(self, record: dict[str, Any]) -> Verdict:
        fn = self.function()
        path = self.config.function
        timeout = self.config.timeout_s
        try:
            if inspect.iscoroutinefunction(fn):
                result = await asyncio.wait_for(fn(record, **self.config.kwargs), timeout)
            else:
                call = on_own_thread(fn, record, **self.config.kwargs)
                result = await asyncio.wait_for(call, timeout)
                if inspect.isawaitable(result):  # e.g. a partial of an async function
                    result = await asyncio.wait_for(result, timeout)
        except VerifierError:
            raise  # the function's own "can't judge this", terminal or not
        except asyncio.TimeoutError:
            raise VerifierError(
                f"python verifier {path!r} did not return within {timeout:g}s (timeout_s)",
                terminal=False,
            ) from None
        except Exception as e:
            raise VerifierError(
                f"python verifier {path!r} raised {type(e).__name__}: {e}", terminal=True
            ) from e
        return to_verdict(result, path)
