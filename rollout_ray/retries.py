"""How long to wait before trying again: one backoff policy for every client that
retries (storage, the coordinator client, the openai engine, Gym environments, the http
verifier). Each decides what is worth retrying; this decides how long to wait.

Exponential with jitter (each wait drawn from 0.5x to 1x of base x 2^attempt, capped),
so that many actors retrying at once spread out; a server's own `Retry-After` (seconds)
is honoured as asked, up to the cap.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_s: float
    cap_s: float

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """Seconds to wait after try number `attempt` (from 0) failed; `asked`: what the
        server's Retry-After said."""
        if asked is not None:
            return min(max(0.0, asked), self.cap_s)
        return min(self.cap_s, self.base_s * 2**attempt) * random.uniform(0.5, 1.0)

    def sleep(self, attempt: int, asked: float | None = None) -> None:
        time.sleep(self.delay(attempt, asked))

    async def wait(self, attempt: int, asked: float | None = None) -> None:
        await asyncio.sleep(self.delay(attempt, asked))


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a numeric Retry-After header; None when absent or an HTTP date (the
    backoff decides then)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
