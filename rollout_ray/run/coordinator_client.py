"""The worker's view of the job's coordinator: what a piece needs from it, and the
client that reaches the coordinator actor across its restarts."""

from __future__ import annotations

from typing import Any, Protocol

from rollout_ray.errors import JobFault
from rollout_ray.output.schema import Commit
from rollout_ray.retries import Backoff

COORDINATOR_BACKOFF = Backoff(base_s=1.0, cap_s=20.0)


class CoordinatorClient(Protocol):
    """What a piece needs from the coordinator (the Ray actor, or a local stand-in)."""

    async def begin(self, piece_id: str, node: str = "") -> dict[str, Any]: ...
    async def running(self, piece_id: str, row_index: int | None) -> None: ...
    async def commit(
        self, record: Commit, engine_stats: dict[str, float] | None = None
    ) -> None: ...
    async def abandon(self, piece_id: str) -> None: ...
    def register_actor(
        self, actor: str, start_s: float | None = None, engine: dict[str, Any] | None = None
    ) -> None: ...
    async def report(
        self,
        partials: dict[str, tuple[int, int]],
        actor: str = "",
        engine_stats: dict[str, float] | None = None,
    ) -> bool: ...


class RayCoordinatorClient:
    """The worker's view of the coordinator actor, with retries across its restarts."""

    def __init__(self, handle: Any):
        self.handle = handle

    async def begin(self, piece_id: str, node: str = "") -> dict[str, Any]:
        return await self._call("begin", piece_id, node)

    async def running(self, piece_id: str, row_index: int | None) -> None:
        await self._call("running", piece_id, row_index)

    async def commit(self, record: Commit, engine_stats: dict[str, float] | None = None) -> None:
        await self._call("commit", record, engine_stats)

    async def abandon(self, piece_id: str) -> None:
        await self._call("abandon", piece_id)

    async def report(
        self,
        partials: dict[str, tuple[int, int]],
        actor: str = "",
        engine_stats: dict[str, float] | None = None,
    ) -> bool:
        return bool(await self.handle.report.remote(partials, actor, engine_stats))

    def register_actor(
        self, actor: str, start_s: float | None = None, engine: dict[str, Any] | None = None
    ) -> None:
        self.handle.register_actor.remote(actor, start_s, engine)

    async def _call(self, method: str, *args: Any) -> Any:
        import ray

        for attempt in range(8):  # about a minute: Ray restarting the coordinator
            try:
                return await getattr(self.handle, method).remote(*args)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if attempt == 7:
                    raise JobFault(f"the job's coordinator can't be reached: {exc}") from None
                await COORDINATOR_BACKOFF.wait(attempt)
        raise AssertionError("unreachable")


class LocalCoordinatorClient:
    """The coordinator in this process, on the same event loop (the local executor)."""

    def __init__(self, coordinator: Any):
        self.coordinator = coordinator

    async def begin(self, piece_id: str, node: str = "") -> dict[str, Any]:
        return self.coordinator.begin(piece_id, node)

    async def running(self, piece_id: str, row_index: int | None) -> None:
        self.coordinator.running(piece_id, row_index)

    async def commit(self, record: Commit, engine_stats: dict[str, float] | None = None) -> None:
        await self.coordinator.commit(record, engine_stats)

    async def abandon(self, piece_id: str) -> None:
        self.coordinator.abandon(piece_id)

    def register_actor(
        self, actor: str, start_s: float | None = None, engine: dict[str, Any] | None = None
    ) -> None:
        self.coordinator.register_actor(actor, start_s, engine)

    async def report(
        self,
        partials: dict[str, tuple[int, int]],
        actor: str = "",
        engine_stats: dict[str, float] | None = None,
    ) -> bool:
        return self.coordinator.report(partials, actor, engine_stats)
