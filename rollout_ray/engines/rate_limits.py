"""Request and token budgets per minute for an endpoint client (the openai engine's
`requests_per_minute`, `tokens_per_minute`): a sliding window over the last minute, so
a burst never exceeds what the provider allows and retries don't pile on a 429."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class RateLimiter:
    """Requests and tokens per minute over a sliding window: in no `window_s` span do
    more requests (or tokens) start than the budget allows, bursts included.

    A request's slot is held a little longer than the window (`margin_s`): the server
    sees requests arrive with varying network delays, and counts by arrival.
    """

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        window_s: float = 60.0,
        margin_s: float = 1.0,
    ):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.window = window_s + margin_s
        self._log: deque[tuple[float, int]] = deque()  # (start time, tokens) per request
        self._tokens = 0
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        if not self.rpm and not self.tpm:
            return
        tokens = min(tokens, int(self.tpm)) if self.tpm else tokens
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._log and self._log[0][0] <= now - self.window:
                    self._tokens -= self._log.popleft()[1]
                over_requests = self.rpm and len(self._log) + 1 > self.rpm
                over_tokens = self.tpm and self._tokens + tokens > self.tpm
                if not over_requests and not over_tokens:
                    self._log.append((now, tokens))
                    self._tokens += tokens
                    return
                # Wait until the oldest request leaves the window, then look again.
                await asyncio.sleep(self._log[0][0] + self.window - now + 0.001)
