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


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Keep third-party INFO chatter out of the console (and out of job logs)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", logging.getLevelName(level))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in _NOISY:
        logging.getLogger(name).setLevel(level)
    # When Ray ends an actor, vLLM's output handler sees its engine core go and logs
    # an error; a real engine death reaches us as EngineDeadError and is logged there.
    logging.getLogger("vllm.v1.engine.async_llm").addFilter(_DropShutdownNoise())
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


class _DropShutdownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "output_handler failed" not in record.getMessage()
