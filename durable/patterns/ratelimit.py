"""``RateLimiter``: a token bucket per key (player, user, IP), in memory, on an injected clock.

Each key has a bucket of ``burst`` tokens that refills at ``rate`` tokens per ``per`` seconds.
``acquire(key, cost)`` takes ``cost`` tokens or raises ``RateLimited`` with the seconds until it
would succeed; the gateway turns that into HTTP 429 + ``Retry-After``. Seed
``trading-game-scaling-plan`` sizes such limits per endpoint (for example deploy 10/min, chat
30/min): build one limiter per action.

Guarantees:
- Over any window of ``t`` seconds a key is granted at most ``burst + rate * t / per`` tokens:
  refill is computed from the clock at each call, never by a timer.
- A refused call takes nothing: a client that keeps retrying too early is not pushed further back.
- Memory is bounded: at most ``max_keys`` buckets; past it the least recently used bucket is
  dropped. A dropped bucket comes back full, so a flood of distinct keys can only make the
  limiter more lenient for keys idle longest, never use more memory.

Does not guarantee: limits across processes or restarts. The state lives in the object or process
that built the limiter; put it in the object that owns the key (a player's limiter in the player
object) so every call for that key meets the same bucket.

On failure: a bad ``cost`` (negative, or more than ``burst``, which could never succeed) raises
``InvalidArgument`` and takes nothing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from durable.errors import InvalidArgument, RateLimited


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    keys: int
    granted: int
    refused: int


class RateLimiter:
    """Token buckets of ``burst`` tokens refilled at ``rate`` per ``per`` seconds, one per key.

    >>> limiter = RateLimiter(rate=10, per=60.0, clock=lambda: 0.0)
    >>> limiter.try_acquire("alice")
    0.0
    """

    __slots__ = ("_buckets", "_clock", "_granted", "_refused", "burst", "max_keys", "name", "per",
                 "rate")  # fmt: skip

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        name: str = "this action",
    ) -> None:
        if not (rate > 0 and per > 0 and max_keys > 0):
            raise InvalidArgument("RateLimiter needs rate > 0, per > 0 and max_keys > 0.")
        self.rate = float(rate)
        self.per = float(per)
        self.burst = float(rate if burst is None else burst)
        if self.burst < 1:
            raise InvalidArgument("RateLimiter burst must be at least 1 token.")
        self.max_keys = max_keys
        self.name = name
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._granted = 0
        self._refused = 0

    def try_acquire(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens and return 0.0, or take nothing and return seconds to wait."""
        if not 0 <= cost <= self.burst:
            raise InvalidArgument(f"A cost of {cost} tokens is outside 0..burst ({self.burst}).")
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens >= cost:
            self._store(key, tokens - cost, now)
            self._granted += 1
            return 0.0
        self._store(key, tokens, now)
        self._refused += 1
        return (cost - tokens) * self.per / self.rate

    def acquire(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens or raise ``RateLimited`` (``.retry_after`` in seconds)."""
        wait = self.try_acquire(key, cost)
        if wait > 0:
            raise RateLimited(self.name, math.ceil(wait * 1000) / 1000)

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(len(self._buckets), self._granted, self._refused)

    def _tokens(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.burst
        tokens, at = bucket
        # max(0, ...): a clock that steps back (wall time) must not drain the bucket.
        return min(self.burst, tokens + max(0.0, now - at) * self.rate / self.per)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}, per={self.per:g}, burst={self.burst:g})"
