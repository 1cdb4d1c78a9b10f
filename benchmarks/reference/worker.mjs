// The benchmark workloads as a Cloudflare Worker, served by workerd through Miniflare, so every
// durable figure has Cloudflare's own runtime measured beside it in the same run.
// Same paths and answers as benchmarks/apps.py:
//   GET /hello               the Worker alone (no object): workerd's baseline
//   GET /counter/{name}      Counter.fetch(): get + put, reply after the write, {"n": <int>}
//   GET /rpc/{name}          stub.increment() over Workers RPC, {"n": <int>}
//   GET /healthz             {"status": "ok"} (the benchmarks poll it before measuring)
//   WS  /ws/{room}           hibernatable sockets; a text "B:<seq>" is sent to every socket of the room
import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  async increment(by = 1) {
    const n = ((await this.ctx.storage.get("n")) ?? 0) + by;
    await this.ctx.storage.put("n", n);
    return n;
  }

  async fetch() {
    return Response.json({ n: await this.increment() });
  }
}

export class Room extends DurableObject {
  async fetch() {
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server, ["room"]);
    return new Response(null, { status: 101, webSocket: client });
  }

  async webSocketMessage(ws, message) {
    if (typeof message === "string" && message.startsWith("B:")) {
      for (const other of this.ctx.getWebSockets()) other.send(message);
    }
  }
}

export default {
  async fetch(request, env) {
    const [, kind, name] = new URL(request.url).pathname.split("/");
    if (kind === "hello") return new Response("hello");
    if (kind === "healthz") return Response.json({ status: "ok" });
    if (kind === "counter") return env.COUNTER.getByName(name).fetch(request);
    if (kind === "rpc") return Response.json({ n: await env.COUNTER.getByName(name).increment() });
    if (kind === "ws") return env.ROOM.getByName(name).fetch(request);
    return new Response("not found", { status: 404 });
  },
};
