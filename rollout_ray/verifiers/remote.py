"""Rewards for finished rollouts, computed off the engine actors.

Each engine actor hands a piece's finished rollouts to its own verifier actor (a CPU
actor holding the dataset's verifier: its HTTP client, its math process pool), so a
slow verifier never stalls generation: the engine goes on with the other pieces in
flight while one piece is being verified. Tests and `rollout-ray verify` run the
same code in process.

No verifier can stop or wedge a job: each rollout has a deadline (`verify_all`), a
verifier actor that dies or stops answering is replaced and its rollouts are tried
again, and a batch that keeps failing is split until the rollouts at fault are found;
those become failure records, never a reward.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import Any

from rollout_ray.config import JobConfig, VerifierConfig
from rollout_ray.errors import redact, refuse
from rollout_ray.json_text import to_json

log = logging.getLogger(__name__)

#: A verdict as it crosses process boundaries: (reward, details as JSON text, None, _)
#: or (None, None, error, terminal).
Outcome = tuple[float | None, str | None, str | None, bool]

#: Seconds a verifier actor gets to start (import its libraries) before a call counts
#: as lost, on top of the batch's own time.
ACTOR_START_S = 120.0


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

    def _verifier(self, dataset: str) -> Any:
        """The dataset's verifier, built on first use."""
        from rollout_ray.verifiers import build_verifier

        if dataset not in self._built:
            self._built[dataset] = build_verifier(self.configs[dataset])
        return self._built[dataset]

    async def verify(self, dataset: str, records: list[dict[str, Any]]) -> list[Outcome]:
        from rollout_ray.verifiers import VerifierError, verify_all

        try:
            verifier = self._verifier(dataset)
        except Exception as exc:
            message = redact(f"the verifier can't start: {exc}", self.secrets)
            return [(None, None, message, True)] * len(records)
        results = await verify_all(verifier, records)
        outcomes: list[Outcome] = []
        for result in results:
            if isinstance(result, VerifierError):
                outcomes.append((None, None, redact(str(result), self.secrets), result.terminal))
            else:
                outcomes.append(self._outcome(result))
        return outcomes

    async def warm(self) -> None:
        """Build each verifier and start its workers ahead of the first piece."""
        for dataset in self.configs:
            try:
                await self._verifier(dataset).warm()
            except Exception as exc:  # the first verify reports it, per rollout
                log.debug("verifier %s not warmed: %s", dataset, exc)

    def _outcome(self, verdict: Any) -> Outcome:
        """A verdict whose reward is a finite number and whose details are JSON."""
        try:
            reward = float(verdict.reward)
        except (TypeError, ValueError):
            return (None, None, f"the verifier's reward {verdict.reward!r} is not a number", True)
        if not math.isfinite(reward):
            return (None, None, f"the verifier's reward is {reward}, not a finite number", True)
        try:
            details = to_json(verdict.details if verdict.details is not None else {})
        except (ValueError, RecursionError) as exc:
            return (None, None, f"the verifier's details can't be stored as JSON: {exc}", True)
        return (reward, redact(details, self.secrets), None, False)

    async def close(self) -> None:
        for verifier in self._built.values():
            await verifier.close()


class VerifierActor:
    """The Ray actor body: a LocalVerification living in its own CPU process."""

    def __init__(self, config_json: str, secret_env: dict[str, str] | None = None):
        from rollout_ray import secrets
        from rollout_ray.logs import quiet_libraries

        quiet_libraries()
        secrets.apply(secret_env or {})  # e.g. the http verifier's api_key_env
        config = JobConfig.model_validate_json(config_json)
        secrets.register(*secrets.config_values(config))
        self.local = LocalVerification(dataset_verifiers(config), secrets.known())

    async def verify(self, dataset: str, records: list[dict[str, Any]]) -> list[Outcome]:
        return await self.local.verify(dataset, records)

    async def warm(self) -> None:
        await self.local.warm()


class RemoteVerification:
    """The engine actor's handle on its verifier actor, started on first use and
    replaced when it dies or stops answering."""

    def __init__(
        self, config: JobConfig, num_cpus: float, secret_env: dict[str, str] | None = None
    ):
        self.config_json = config.model_dump_json()
        self.deadlines = {name: spec.deadline_s for name, spec in dataset_verifiers(config).items()}
        self.num_cpus = num_cpus
        self.secret_env = secret_env or {}
        self.secrets = tuple(self.secret_env.values())
        self._actor = None
        self.replaced = 0  # verifier actors replaced (for tests and logs)
        self._gate: asyncio.Condition | None = None
        self._in_flight = 0
        self._alone = False

    async def verify(self, dataset: str, records: list[dict[str, Any]]) -> list[Outcome]:
        return await self._verify(dataset, records, alone=False, retried=False)

    def warm(self) -> None:
        """Start the verifier actor and its workers now (the engine actor calls this
        before loading its engine): its process start and imports then overlap the
        engine's load instead of delaying the first piece. Fire and forget: a failure
        here shows again, per rollout, on the first verify."""
        if self.deadlines:
            with contextlib.suppress(Exception):
                self._handle().warm.remote()

    async def _verify(
        self, dataset: str, records: list[dict[str, Any]], alone: bool, retried: bool
    ) -> list[Outcome]:
        """Verify a batch; if the call is lost, try it once more, then split it in
        halves until the rollouts that break the verifier stand alone.

        Several pieces share the actor, so a call lost while others ran may be their
        fault: once a call is lost, its retries run `alone` (no other call in flight),
        and only a rollout lost twice while alone is blamed.
        """
        import ray

        actor = None
        try:
            async with self._slot(alone):
                actor = self._handle()
                call = actor.verify.remote(dataset, records)
                return await asyncio.wait_for(call, self._deadline(dataset, len(records)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            lost = isinstance(exc, (ray.exceptions.RayActorError, asyncio.TimeoutError))
            reason = "stopped answering" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            if lost:
                self._replace(actor)
            log.warning("verifier call for %d rollouts failed: %s", len(records), reason[:300])
            if not retried:
                return await self._verify(dataset, records, alone=True, retried=True)
            if len(records) > 1:
                half = len(records) // 2
                first = await self._verify(dataset, records[:half], alone=True, retried=False)
                rest = await self._verify(dataset, records[half:], alone=True, retried=False)
                return first + rest
            what = "the verifier's process died or stopped answering" if lost else "it failed"
            message = f"{what} twice while judging this rollout alone: {reason[:500]}"
            return [(None, None, redact(message, self.secrets), True)]

    @contextlib.asynccontextmanager
    async def _slot(self, alone: bool):
        """A place among the calls in flight; `alone` waits until there are none and
        keeps new ones out until it is done."""
        if self._gate is None:
            self._gate = asyncio.Condition()
        async with self._gate:
            while self._alone:
                await self._gate.wait()
            if alone:
                self._alone = True
                while self._in_flight:
                    await self._gate.wait()
            self._in_flight += 1
        try:
            yield
        finally:
            async with self._gate:
                self._in_flight -= 1
                if alone:
                    self._alone = False
                self._gate.notify_all()

    def _handle(self):
        if self._actor is None:
            import ray

            self._actor = (
                ray.remote(VerifierActor)
                .options(num_cpus=self.num_cpus, max_concurrency=64, max_restarts=0)
                .remote(self.config_json, self.secret_env)
            )
        return self._actor

    def _replace(self, failed: Any) -> None:
        """Drop the actor a call failed on (killing it, if it is only wedged); the next
        call starts a new one. Other pieces' calls may have failed on the same actor
        and replaced it already: an actor started since is left alone."""
        import ray

        if failed is None or self._actor is not failed:
            return
        self._actor = None
        self.replaced += 1
        with contextlib.suppress(Exception):
            ray.kill(failed)

    def _deadline(self, dataset: str, n: int) -> float:
        """How long a batch may take: each rollout within its deadline, 64 at a time."""
        per_record = self.deadlines.get(dataset, 60.0)
        return ACTOR_START_S + per_record * math.ceil(n / 64) * 1.5

    async def close(self) -> None:
        pass


def dataset_verifiers(config: JobConfig) -> dict[str, VerifierConfig]:
    return {d.name: d.verifier for d in config.datasets if d.verifier is not None}


def check_verifiers(config: JobConfig) -> None:
    """Build each dataset's verifier once before the job starts, so that a broken one
    (a bad regex, an unparseable schema) stops the job at once with its reason.

    Raises:
        ConfigError: every verifier that can't be built, each naming its config key.
    """
    from rollout_ray.verifiers import VerifierError, build_verifier
    from rollout_ray.verifiers.python_fn import import_function

    problems, checked = [], set()
    for i, dataset in enumerate(config.datasets):
        spec = dataset.verifier
        key = f"datasets.{dataset.sweep_origin if dataset.sweep_origin is not None else i}"
        if spec is None or key in checked:
            continue  # a sweep's variants share their dataset's verifier
        checked.add(key)
        try:
            verifier = build_verifier(spec)
            if spec.kind == "python":  # not left to the first verdict, after generation
                import_function(spec.function)
        except VerifierError as exc:
            problems.append(f"{key}.verifier (dataset {dataset.name!r}): {spec.kind}: {exc}")
            continue
        asyncio.run(verifier.close())
    refuse(problems)
