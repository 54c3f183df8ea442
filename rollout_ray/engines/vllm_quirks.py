"""Work-arounds for vLLM behaviour that breaks in a user's process, each with its cause.

Kept apart from the engine so each can be dropped when the pinned vLLM no longer needs it.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any


def tolerate_proxies_in_kernel_scan() -> None:
    """vLLM's CPU platform rebinds its Triton kernels by scanning every loaded module and
    asking `hasattr(value, "__dict__")` of each value. A context-local proxy (Flask's
    `current_app`, Werkzeug's `LocalProxy`) raises RuntimeError there, not AttributeError,
    so the engine failed to start in any process that had imported Flask (a web app, moto,
    a notebook with a dashboard). The scan is handed a view of `sys.modules` without the
    modules holding such values: none of them holds a vLLM kernel."""
    try:
        from vllm.triton_utils import dispatcher
    except ImportError:  # another vLLM layout: nothing to work around
        return
    scan = getattr(dispatcher, "_rebind_kernels", None)
    if scan is None or getattr(scan, "_rollout_ray_safe", False):
        return

    @functools.wraps(scan)
    def safe_scan(*args: Any, **kwargs: Any) -> Any:
        modules = {name: m for name, m in list(sys.modules.items()) if _scannable(m)}
        real_sys = dispatcher.sys
        dispatcher.sys = types.SimpleNamespace(modules=modules)
        try:
            return scan(*args, **kwargs)
        finally:
            dispatcher.sys = real_sys

    safe_scan._rollout_ray_safe = True  # type: ignore[attr-defined]
    dispatcher._rebind_kernels = safe_scan


def _scannable(module: Any) -> bool:
    namespace = getattr(module, "__dict__", None)
    if not namespace:
        return True
    try:
        for value in list(namespace.values()):
            hasattr(value, "__dict__")
    except Exception:
        return False
    return True
