"""RateLimiter: token buckets on an injected clock, bounded memory, and the 429 the gateway sends
when an object or route raises ``RateLimited`` (a real uvicorn, the error crossing an RPC)."""

from __future__ import annotations

from pathlib import Path

import pytest

import durable
from durable.patterns import RateLimiter
from durable.testing import VirtualClock
from tests.live_server import live


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refused_with_the_wait_until_one_token() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, per=60.0, clock=clock)
    assert [limiter.try_acquire("alice") for _ in range(10)] == [0.0] * 10
    assert limiter.try_acquire("alice") == pytest.approx(6.0)  # one token per 6 s
    clock.t += 6.0
    assert limiter.try_acquire("alice") == 0.0
    assert limiter.statistics().refused == 1


def test_a_refused_call_takes_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, per=1.0, burst=1, clock=clock)
    limiter.acquire("k")
    clock.t += 0.5
    for _ in range(5):  # retrying too early must not push the client further back
        assert limiter.try_acquire("k") == pytest.approx(0.5)
    clock.t += 0.5
    assert limiter.try_acquire("k") == 0.0


def test_keys_are_independent_and_rate_holds_over_a_window() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, per=1.0, burst=4, clock=clock)
    granted = 0
    for _ in range(100):  # 10 s in 0.1 s steps, trying 3 times each step
        for _ in range(3):
            granted += limiter.try_acquire("bob") == 0.0
        clock.t += 0.1
    assert granted <= 4 + 2 * 10
    assert granted >= 2 * 10  # and the limiter does grant its rate
    assert limiter.try_acquire("carol") == 0.0


def test_acquire_raises_rate_limited_with_retry_after() -> None:
    limiter = RateLimiter(rate=1, per=2.0, burst=1, clock=Clock(), name="deploy")
    limiter.acquire("p")
    with pytest.raises(durable.RateLimited, match="Rate limit for deploy") as caught:
        limiter.acquire("p")
    assert caught.value.retry_after == pytest.approx(2.0)
    assert caught.value.retryable and not caught.value.overloaded


def test_memory_is_bounded_by_max_keys_dropping_the_least_recent() -> None:
    limiter = RateLimiter(rate=1, per=60.0, burst=1, clock=Clock(), max_keys=3)
    for key in ("a", "b", "c"):
        limiter.acquire(key)
    limiter.try_acquire("a")  # refused, but now the most recently used
    limiter.acquire("d")  # evicts "b"
    assert limiter.statistics().keys == 3
    assert limiter.try_acquire("b") == 0.0  # came back full
    assert limiter.try_acquire("a") > 0


def test_a_clock_stepping_back_does_not_drain_the_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, per=1.0, burst=2, clock=clock)
    limiter.acquire("k")
    clock.t -= 100
    assert limiter.try_acquire("k") == 0.0


@pytest.mark.parametrize(
    ("kwargs", "cost"),
    [({"rate": 0}, 1), ({"rate": 1, "per": 0}, 1), ({"rate": 1, "burst": 0.5}, 1),
     ({"rate": 1, "max_keys": 0}, 1), ({"rate": 1}, -1), ({"rate": 1, "burst": 2}, 3)],
)  # fmt: skip
def test_bad_settings_and_costs_are_refused(kwargs: dict[str, float], cost: float) -> None:
    with pytest.raises(durable.InvalidArgument):
        RateLimiter(**kwargs).try_acquire("k", cost)  # type: ignore[arg-type]


class Player(durable.DurableObject):
    def __init__(self, ctx: durable.ObjectState, env: object) -> None:
        super().__init__(ctx, env)
        self.limiter = RateLimiter(rate=2, per=60.0, clock=ctx.now, name="deploy")

    async def deploy(self) -> int:
        self.limiter.acquire("deploy")
        n = await self.ctx.storage.get("miners", 0) + 1
        await self.ctx.storage.put("miners", n)
        return n

    async def miners(self) -> int:
        return int(await self.ctx.storage.get("miners", 0))


worker = durable.Worker(objects={"PLAYER": Player})


@worker.route("/deploy/{name}", methods=["POST"])
async def deploy(request: durable.Request, env: object) -> durable.JSONResponse:
    stub = env.PLAYER.get_by_name(request.path_params["name"])  # type: ignore[attr-defined]
    return durable.JSONResponse({"miners": await stub.deploy()})


async def test_gateway_answers_429_with_retry_after_and_nothing_written(
    tmp_path: Path, clock: VirtualClock
) -> None:
    async with live(worker, tmp_path / "data", clock) as server:
        assert [(await server.client.post("/deploy/ann")).status_code for _ in range(2)] == [
            200
        ] * 2
        refused = await server.client.post("/deploy/ann")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        body = refused.json()
        assert body["error"] == "RateLimited" and body["retry_after"] == pytest.approx(30.0)
        stub = server.env.PLAYER.get_by_name("ann")
        with pytest.raises(durable.RateLimited) as caught:  # over RPC: class and wait kept
            await stub.deploy()
        assert caught.value.retry_after == pytest.approx(30.0)
        assert await stub.miners() == 2
