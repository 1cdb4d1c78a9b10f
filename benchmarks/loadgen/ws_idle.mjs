#!/usr/bin/env node
// Idle WebSocket clients: opens --clients sockets to --url ({r} = index mod --rooms), --batch at a
// time, prints one JSON line {opened, failed, connectMs} once all are open, then holds them until
// stdin closes (or SIGTERM) and exits. Used by benchmarks/gateway.py for "10,000 open sockets".
import WebSocket from "ws";

const argv = process.argv.slice(2);
const opt = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const URL_T = opt("url", "ws://127.0.0.1:8787/ws/idle-{r}");
const N = Number(opt("clients", 1000));
const ROOMS = Number(opt("rooms", 10));
const BATCH = Number(opt("batch", 200));

const socks = [];
let failed = 0;
const open = (i) => new Promise((resolve) => {
  const ws = new WebSocket(URL_T.replaceAll("{r}", String(i % ROOMS)), { perMessageDeflate: false });
  ws.on("open", () => { socks.push(ws); resolve(); });
  ws.on("error", () => { failed++; resolve(); });
  ws.on("message", () => {});
});
const t0 = performance.now();
for (let i = 0; i < N; i += BATCH) {
  await Promise.all(Array.from({ length: Math.min(BATCH, N - i) }, (_, k) => open(i + k)));
}
console.log(JSON.stringify({ opened: socks.length, failed, connectMs: +(performance.now() - t0).toFixed(1) }));
const stop = () => { for (const s of socks) s.terminate(); process.exit(0); };
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
