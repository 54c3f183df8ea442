"""Logging set-up shared by the driver and the actors."""

from __future__ import annotations

import logging
import os
import warnings

#: Libraries whose INFO lines drown the job's own output.
_NOISY = (
    "vllm",
    "ray.data",
    "filelock",
    "urllib3",
    "botocore",
    "s3fs",
    "aiobotocore",
    "httpx",
    "transformers",
    "torch",
)


#: Loggers whose warnings are start-up notices, hidden unless --verbose or --debug.
_NOTICES = (
    "ray._private.authentication.authentication_token_setup",
    "ray.data._internal.progress",
    "torch._library.triton",
    "vllm.triton_utils.importing",
)
#: Where the FutureWarnings and DeprecationWarnings we hide come from: the libraries we
#: drive, and our own calls into them. A notebook's own code keeps its warnings.
_WARNING_MODULES = r"(vllm|torch|transformers|gguf|accelerate|ray|pyarrow|rollout_ray)(\.|$)"


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Keep third-party INFO chatter out of the console (and out of job logs); with
    `--verbose` or `--debug` (ROLLOUT_RAY_VERBOSE / ROLLOUT_RAY_DEBUG) everything shows.
    Called by the CLI and by the Python API (a notebook's cell would otherwise fill
    with vLLM's FutureWarnings and Ray Data's INFO lines); idempotent."""
    if os.environ.get("ROLLOUT_RAY_VERBOSE") == "1" or os.environ.get("ROLLOUT_RAY_DEBUG") == "1":
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", logging.getLevelName(level))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in _NOISY:
        logging.getLogger(name).setLevel(level)
    # Start-up notices that say nothing a user acts on: Ray's "token authentication is
    # enabled" (it stays enabled), Ray Data's "progress bars disabled" (ours are
    # shown), torch's "Triton not available" (no Triton on CPU, by design).
    for name in _NOTICES:
        logging.getLogger(name).setLevel(max(level, logging.ERROR))
    # When Ray ends an actor, vLLM's output handler sees its engine core go and logs
    # an error; a real engine death reaches us as EngineDeadError and is logged there.
    logging.getLogger("vllm.v1.engine.async_llm").addFilter(_DropShutdownNoise())
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=_WARNING_MODULES)


class _DropShutdownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "output_handler failed" not in record.getMessage()
