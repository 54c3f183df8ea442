"""Rewards for finished rollouts, computed off the engine actors.

Each engine actor hands a piece's finished rollouts to its own verifier actor (a CPU
actor holding the dataset's verifier: its HTTP client, its math process pool), so a
slow verifier never stalls generation: the engine goes on with the other pieces in
flight while one piece is being verified. Tests and `rollout-ray verify` run the
same code in process.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from rollout_ray.config import JobConfig, VerifierConfig
from rollout_ray.errors import ConfigError, redact

log = logging.getLogger(__name__)

#: A verdict as it crosses process boundaries: (reward, details) or (None, error).
Outcome = tuple[float | None, dict[str, Any] | None, str | None, bool]


def verifier_record(record: dict[str, Any]) -> dict[str, Any]:
    """The flat view a verifier gets: core fields, carried input fields at the top level
    and the Gym row's `responses_create_params` as a dict."""
    flat = {k: v for k, v in record.items() if k != "input"}
    for key, value in (record.get("input") or {}).items():
        flat.setdefault(key, value)
    params = record.get("responses_create_params")
    if isinstance(params, str):
        with contextlib.suppress(json.JSONDecodeError):
            flat["responses_create_params"] = json.loads(params)
    return flat


class LocalVerification:
    """Verifies in this process: builds each dataset's verifier once and reuses it."""

    def __init__(self, verifiers: dict[str, VerifierConfig], secrets: tuple[str, ...] = ()):
        self.configs = verifiers
        self.secrets = secrets
        self._built: dict[str, Any] = {}

    async def verify(self, dataset: str, records: list[dict[str, Any]]) -> list[Outcome]:
        from rollout_ray.verifiers import VerifierError, build_verifier, verify_all

        if dataset not in self._built:
            try:
                self._built[dataset] = build_verifier(self.configs[dataset])
            except VerifierError as exc:
                message = redact(f"the verifier can't start: {exc}", self.secrets)
                return [(None, None, message, True)] * len(records)
        results = await verify_all(self._built[dataset], records)
        outcomes: list[Outcome] = []
        for result in results:
            if isinstance(result, VerifierError):
                outcomes.append((None, None, redact(str(result), self.secrets), result.terminal))
            else:
                outcomes.append((float(result.reward), result.details, None, False))
        return outcomes

    async def close(self) -> None:
        for verifier in self._built.values():
            await verifier.close()


class VerifierActor:
    """The Ray actor body: a LocalVerification living in its own CPU process."""

    def __init__(self, config_json: str, secrets: tuple[str, ...] = ()):
        from rollout_ray.logs import quiet_libraries

        quiet_libraries()
        config = JobConfig.model_validate_json(config_json)
        self.local = LocalVerification(dataset_verifiers(config), secrets)

    async def verify(self, dataset: str, records: list[dict[str, Any]]) -> list[Outcome]:
        return await self.local.verify(dataset, records)


class RemoteVerification:
    """The engine actor's handle on its verifier actor, started on first use."""

    def __init__(self, config: JobConfig, num_cpus: float, secrets: tuple[str, ...] = ()):
        self.config_json = config.model_dump_json()
        self.num_cpus = num_cpus
        self.secrets = secrets
        self._actor = None

    async def verify(self, dataset: str, records: list[dict[str, Any]]) -> list[Outcome]:
        if self._actor is None:
            import ray

            self._actor = (
                ray.remote(VerifierActor)
                .options(num_cpus=self.num_cpus, max_concurrency=64, max_restarts=3)
                .remote(self.config_json, self.secrets)
            )
        return await self._actor.verify.remote(dataset, records)

    async def close(self) -> None:
        pass


def dataset_verifiers(config: JobConfig) -> dict[str, VerifierConfig]:
    return {d.name: d.verifier for d in config.datasets if d.verifier is not None}


def check_verifiers(config: JobConfig) -> None:
    """Build each dataset's verifier once before the job starts, so that a broken one
    (a bad regex, an unparseable schema) stops the job at once with its reason.

    Raises:
        ConfigError: a verifier can't be built.
    """
    import asyncio

    from rollout_ray.verifiers import VerifierError, build_verifier

    for name, spec in dataset_verifiers(config).items():
        try:
            verifier = build_verifier(spec)
        except VerifierError as exc:
            raise ConfigError(f"dataset {name!r}: verifier {spec.kind}: {exc}") from None
        asyncio.run(verifier.close())
