"""What the seeds needed everywhere, built once: rate limits (more as the examples need them)."""

from __future__ import annotations

from durable.patterns.ratelimit import RateLimiter, RateLimiterStatistics

__all__ = ["RateLimiter", "RateLimiterStatistics"]
