"""Verifiers: build one from its config block (whose `implementation` names the class,
imported only then, so heavy libraries load on first use) and judge many rollouts with
bounded concurrency."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, TypeAdapter

from rollout_ray import config as cfg
from rollout_ray.verifiers.base import Verdict, Verifier, VerifierError

__all__ = ["Verdict", "Verifier", "VerifierError", "build_verifier", "verify_all"]


def build_verifier(config: BaseModel | dict[str, Any]) -> Verifier:
    """The verifier for one config block (a model from `rollout_ray.config` or its dict).

    Raises:
        VerifierError: the config can't work at all (bad regex, broken inline schema).
        TypeError: `config` is not a verifier config.
    """
    if isinstance(config, dict):
        config = TypeAdapter(cfg.VerifierConfig).validate_python(config)
    path = getattr(config, "implementation", "")
    if not path:
        raise TypeError(f"not a verifier config: {type(config).__name__}")
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(config)


async def verify_all(
    verifier: Verifier, records: Iterable[dict[str, Any]], concurrency: int = 64
) -> list[Verdict | VerifierError]:
    """One result per record, in order; a record that can't be judged yields its error.

    Never raises for one bad record: a bug in a verifier becomes a terminal
    VerifierError for the records it hit, so the rest of the batch still counts. Each
    record is given up after the verifier's `deadline_s` (a retryable error), so no
    verifier can hold a piece forever.
    """
    slots = asyncio.Semaphore(max(1, concurrency))
    config = getattr(verifier, "config", None)
    deadline = getattr(config, "deadline_s", None)
    if deadline is not None:  # a verifier's own timeout, when it has one, speaks first
        deadline += max(1.0, deadline / 10)

    async def one(record: dict[str, Any]) -> Verdict | VerifierError:
        async with slots:
            try:
                return await asyncio.wait_for(verifier.verify(record), deadline)
            except VerifierError as e:
                return e
            except asyncio.TimeoutError:
                message = f"{verifier.name} verifier timed out after {deadline:g}s"
                return VerifierError(message, terminal=False)
            except RecursionError:
                return VerifierError("the rollout is nested too deeply to verify", terminal=True)
            except Exception as e:
                return VerifierError(f"{type(e).__name__}: {e}", terminal=True)

    return list(await asyncio.gather(*(one(record) for record in records)))
