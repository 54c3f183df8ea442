"""Who may use an actor's engine now: every piece at once as a rule, none while a new
checkpoint loads (watch_model), and one alone while a piece that keeps killing its
actor runs row by row (its rows must not share the engine with other work)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


class EngineGate:
    """An asyncio gate in front of one engine (one per piece runner, one event loop)."""

    def __init__(self, engine: Any, watch_model: bool):
        self.engine = engine
        self.watch_model = watch_model
        self._condition: asyncio.Condition | None = None
        self._active = 0
        self._reloading = False
        self._alone = False

    @contextlib.asynccontextmanager
    async def use(self, alone: bool = False) -> AsyncIterator[None]:
        """Generate inside this block. First the engine reloads if a new checkpoint is
        there, once the pieces generating with the old one are done (watch_model).
        `alone`: also wait until no other piece generates, and keep new ones out."""
        if self._condition is None:
            self._condition = asyncio.Condition()
        gate = self._condition
        async with gate:
            while self._reloading or self._alone:
                await gate.wait()
            if self.watch_model and await asyncio.to_thread(self.engine.checkpoint_changed):
                self._reloading = True
                while self._active:
                    await gate.wait()
                try:
                    await asyncio.to_thread(self.engine.reload)
                finally:
                    self._reloading = False
                    gate.notify_all()
            if alone:
                self._alone = True
                while self._active:
                    await gate.wait()
            self._active += 1
        try:
            yield
        finally:
            async with gate:
                self._active -= 1
                if alone:
                    self._alone = False
                gate.notify_all()
