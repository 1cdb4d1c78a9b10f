#!/usr/bin/env node
// Remote Persister clients for benchmarks/todos.py: what TinyBase's createRemotePersister does.
// --mode capacity (closed loop, the server's throughput): --rounds times for each of --users
// users, --concurrency at a time, back to back:
//   GET  <base>/<user>/load   (If-None-Match: the last ETag)
//   POST <base>/<user>/save   (the whole [tables, values] list, --todos + round todos)
//   HEAD <base>/<user>/load   (the auto-load poll: 304 while nothing changed)
// --mode online (latency with every user online at once, for --seconds): each user loads at a
// random moment of the first --poll-s seconds (logins spread), then polls with HEAD every --poll-s
// seconds (TinyBase's autoLoadIntervalSeconds, 5 by default) and saves after an edit every
// --edit-s seconds on average (uniform 0.5x-1.5x). Each user waits for its own answer before its
// next request, as one persister does; a late user skips, never bursts.
// Node and undici (as loadgen.mjs), so the client's own cost stays small beside the server's.
// Output: JSON {seconds, requests, statuses: {"<op> <status>": n} (status 0: failed on the
// network), latencyMs: {op: {n, p50, p95, p99}}}
import { Pool } from "undici";

const argv = process.argv.slice(2);
const opt = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const ORIGIN = opt("origin", "http://127.0.0.1:8787");
const PREFIX = opt("prefix", "/api/"); // "/api/" or "/api/<org>/users/"
const USERS = Number(opt("users", 1000));
const ROUNDS = Number(opt("rounds", 3));
const CONCURRENCY = Number(opt("concurrency", 32));
const TODOS = Number(opt("todos", 20));
const MODE = opt("mode", "capacity");
const SECONDS = Number(opt("seconds", 20));
const POLL_S = Number(opt("poll-s", 5));
const EDIT_S = Number(opt("edit-s", 5));

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

const connections = MODE === "online" ? Math.min(USERS, 256) : CONCURRENCY;
// Idle connections close on our side (2 s) before the server's keep-alive timeout (5 s): a
// connection reused just as the server closes it would fail a request that never reached it.
const pool = new Pool(ORIGIN, { connections, pipelining: 1, keepAliveTimeout: 2_000, keepAliveMaxTimeout: 2_000 });
const latency = { load: [], save: [], poll: [] };
const statuses = {};
const etags = new Map();

// A request that fails on the network counts as status 0 (an error), so one reset does not end
// the run; its latency is not recorded.
async function timed(op, options) {
  const t0 = performance.now();
  let statusCode = 0, headers = {};
  try {
    const response = await pool.request(options);
    await response.body.text();
    ({ statusCode, headers } = response);
    latency[op].push(performance.now() - t0);
  } catch {
    // counted below as "<op> 0"
  }
  statuses[`${op} ${statusCode}`] = (statuses[`${op} ${statusCode}`] ?? 0) + 1;
  return { status: statusCode, etag: headers.etag };
}

const load = (user) => {
  const known = etags.get(user);
  return timed("load", { path: `${PREFIX}${user}/load`, method: "GET", headers: known ? { "if-none-match": known } : {} });
};
const save = async (user, todos) => {
  const saved = await timed("save", {
    path: `${PREFIX}${user}/save`, method: "POST", headers: { "content-type": "application/json" },
    body: body(user, todos),
  });
  etags.set(user, saved.etag ?? "");
};
const poll = (user) =>
  timed("poll", { path: `${PREFIX}${user}/load`, method: "HEAD", headers: { "if-none-match": etags.get(user) ?? "" } });

async function client() {
  for (let next = work.pop(); next; next = work.pop()) {
    const [round, user] = next;
    await load(user);
    await save(user, TODOS + round);
    await poll(user);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

// One user online: the events of its timeline, in order, each at its time or skipped if late.
async function online(user, start) {
  const end = start + SECONDS * 1000;
  const first = start + random() * POLL_S * 1000;
  const events = [];
  for (let t = first + POLL_S * 1000; t < end; t += POLL_S * 1000) events.push([t, "poll"]);
  for (let t = first + EDIT_S * 1000 * (0.5 + random()); t < end; t += EDIT_S * 1000 * (0.5 + random())) events.push([t, "edit"]);
  events.sort((a, b) => a[0] - b[0]);
  await sleep(first - performance.now());
  await load(user);
  let todos = TODOS;
  for (const [at, kind] of events) {
    if (performance.now() > at + POLL_S * 1000) continue; // so late that the next one is due: skip
    await sleep(at - performance.now());
    if (kind === "edit") await save(user, ++todos);
    else {
      const polled = await poll(user); // TinyBase reloads only on a new ETag with a status != 304
      if (polled.status !== 304 && polled.etag !== etags.get(user)) await load(user);
    }
  }
}

const start = performance.now();
if (MODE === "online") await Promise.all(users.map((user) => online(user, start)));
else await Promise.all(Array.from({ length: CONCURRENCY }, client));
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
