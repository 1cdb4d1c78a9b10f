#!/usr/bin/env node
// Remote Persister clients for benchmarks/todos.py (a) users: what TinyBase's createRemotePersister
// does per change, --rounds times for each of --users users, --concurrency at a time, closed loop:
//   GET  <base>/<user>/load   (If-None-Match: the last ETag)
//   POST <base>/<user>/save   (the whole [tables, values] list, --todos + round todos)
//   HEAD <base>/<user>/load   (the auto-load poll: 304 while nothing changed)
// Node and undici (as loadgen.mjs), so the client's own cost stays small beside the server's.
// Output: JSON {seconds, requests, statuses: {"<op> <status>": n}, latencyMs: {op: {n, p50, p95, p99}}}
import { Pool } from "undici";

const argv = process.argv.slice(2);
const opt = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const ORIGIN = opt("origin", "http://127.0.0.1:8787");
const PREFIX = opt("prefix", "/api/"); // "/api/" or "/api/<org>/users/"
const USERS = Number(opt("users", 1000));
const ROUNDS = Number(opt("rounds", 3));
const CONCURRENCY = Number(opt("concurrency", 32));
const TODOS = Number(opt("todos", 20));

const pct = (s, p) => s.length ? +s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))].toFixed(3) : null;
const users = Array.from({ length: USERS }, (_, i) => `user${String(i).padStart(5, "0")}`);
let seed = 1; // a fixed shuffle, so runs compare
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const work = [];
for (let round = 0; round < ROUNDS; round++) {
  const order = [...users].sort(() => random() - 0.5);
  for (const user of order) work.push([round, user]);
}

function body(user, todos) {
  const rows = {};
  for (let i = 0; i < todos; i++) rows[`t${i}`] = { text: `${user} todo ${i} `, done: i % 3 === 0 };
  return JSON.stringify([{ todos: rows }, { owner: user }]);
}

const pool = new Pool(ORIGIN, { connections: CONCURRENCY, pipelining: 1, keepAliveTimeout: 60_000 });
const latency = { load: [], save: [], poll: [] };
const statuses = {};
const etags = new Map();

async function timed(op, options) {
  const t0 = performance.now();
  const { statusCode, headers, body: stream } = await pool.request(options);
  await stream.text();
  latency[op].push(performance.now() - t0);
  statuses[`${op} ${statusCode}`] = (statuses[`${op} ${statusCode}`] ?? 0) + 1;
  return headers;
}

async function client() {
  for (let next = work.pop(); next; next = work.pop()) {
    const [round, user] = next;
    const path = `${PREFIX}${user}`;
    const known = etags.get(user);
    await timed("load", { path: `${path}/load`, method: "GET", headers: known ? { "if-none-match": known } : {} });
    const saved = await timed("save", {
      path: `${path}/save`, method: "POST", headers: { "content-type": "application/json" },
      body: body(user, TODOS + round),
    });
    etags.set(user, saved.etag ?? "");
    await timed("poll", { path: `${path}/load`, method: "HEAD", headers: { "if-none-match": etags.get(user) } });
  }
}

const start = performance.now();
await Promise.all(Array.from({ length: CONCURRENCY }, client));
const seconds = (performance.now() - start) / 1000;
await pool.close();
const latencyMs = {};
let requests = 0;
for (const [op, samples] of Object.entries(latency)) {
  const sorted = Float64Array.from(samples).sort();
  requests += sorted.length;
  latencyMs[op] = { n: sorted.length, p50: pct(sorted, 50), p95: pct(sorted, 95), p99: pct(sorted, 99) };
}
console.log(JSON.stringify({ seconds, requests, statuses, latencyMs }));
