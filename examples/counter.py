# examples/counter.py
from durable import DurableObject, JSONResponse, Request, Worker


class Counter(DurableObject):
    async def increment(self, by: int = 1) -> int:  # public async method = RPC
        n = await self.ctx.storage.get("n", 0) + by
        await self.ctx.storage.put("n", n)  # committed before the reply leaves
        return n

    async def fetch(self, request: Request):  # HTTP into the object
        return JSONResponse({"n": await self.increment()})

    async def alarm(self, info):  # info.retry_count, info.is_retry
        ...


worker = Worker(objects={"COUNTER": Counter})


@worker.route("/counter/{name}")
async def counter(request, env):
    return await env.COUNTER.get_by_name(request.path_params["name"]).fetch(request)


@worker.cron("*/5 * * * *")
async def sync(event, env): ...
