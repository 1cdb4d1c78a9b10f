#!/usr/bin/env node
// Simulated players of the mining mission game (examples/mission_game), for benchmarks/mission_game.py.
//
// Each of --players players, in one process (1,000 WebSockets cost little here):
//   1. joins (POST /api/join) at a time spread over the first --ramp seconds, in mission
//      "m<i / --mission-size>";
//   2. opens the mission's WebSocket (/ws/{mission}?player=name); reconnects after an unexpected
//      close with exponential backoff and jitter, and polls /api/missions/{m}/tasks every 500 ms
//      once it has had no socket for 5 s (the fixed page's fallback);
//   3. deploys --miners miners at random times before --deploy-window seconds, waiting out
//      429 and 503 answers for their Retry-After and trying again;
//   4. watches: every --refresh-s seconds reads its own player and the leaderboard;
//      with --poll-ms > 0 also polls the mission's tasks at that period (the original page's
//      500 ms polling; one read at a time per player, so a slow answer delays the next poll).
// It stops after --duration seconds and prints one JSON object (see `summary()` below).
//
// Measured:
//   - latency of every HTTP request (request start -> body read), per kind and over all kinds;
//   - update delay: for every task whose (cycles, status) the player had not seen yet, from a
//     delta, a snapshot or a poll, (receive time + clock offset) - task.last_cycle_at.
//     The offset (server clock - client clock) comes from the HTTP answer with the smallest
//     round trip: server_time - (send + receive) / 2. A player's first view only seeds what it has;
//   - bytes and frames received per socket; disconnects; errors: any HTTP answer other than 2xx
//     and the designed 429 (counted apart), network failures and timeouts, sockets that fail to
//     open or close unexpectedly.
// Does not measure: the browser's rendering, or anything after --duration (requests in flight at
// the end are dropped, not counted).
import { Pool } from "undici";
import WebSocket from "ws";

const argv = process.argv.slice(2);
const opt = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const BASE = opt("base", "http://127.0.0.1:8787");
const N = Number(opt("players", 10));
const DURATION_MS = Number(opt("duration", 45)) * 1000;
const DEPLOY_WINDOW_MS = Number(opt("deploy-window", 25)) * 1000;
const RAMP_MS = Number(opt("ramp", 5)) * 1000;
const MINERS = Number(opt("miners", 10));
const MISSION_SIZE = Number(opt("mission-size", 20));
const POLL_MS = Number(opt("poll-ms", 0));
const REFRESH_MS = Number(opt("refresh-s", 10)) * 1000;
const TIMEOUT_MS = Number(opt("timeout", 10)) * 1000;
const TAG = opt("tag", Math.random().toString(36).slice(2, 8));
const FALLBACK_AFTER_MS = 5000; // the fixed page polls only after 5 s without a socket
const FALLBACK_POLL_MS = 500;
const DELAY_BINS = 120_001; // update delay histogram: 1 ms bins, 0 .. 120 s (last bin: beyond)
const TIMELINE_MS = 5000;

const now = () => performance.timeOrigin + performance.now(); // wall-clock ms, sub-ms resolution
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const origin = new URL(BASE).origin;
const wsOrigin = origin.replace(/^http/, "ws");
const pool = new Pool(origin, {
  connections: Math.max(8, Math.min(N, 1000)), // about one per player, as each browser has its own
  pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS,
});

// -- measurements ------------------------------------------------------------------------------
const started = now();
let stopping = false;
const latency = {}; // kind -> [ms]
const statusCounts = {}; // "kind status" -> n
const errorKinds = {}; // first line of each kind of error -> n
let httpRequests = 0, httpErrors = 0, rateLimited = 0;
let wsOpened = 0, wsFailed = 0, wsDisconnects = 0, wsBytes = 0, wsFrames = 0, badFrames = 0;
let deployed = 0, joined = 0, pollsWhileFallback = 0;
let crashed = 0; // players stopped by an exception here (a bug, not the server's): errors too
const delayHist = new Uint32Array(DELAY_BINS);
let delaySum = 0, delayCount = 0, delayNegative = 0;
const timeline = []; // per TIMELINE_MS bin: {actions: [ms], delays, delayMax, bytes}
let offset = 0, bestRtt = Infinity; // server clock - client clock, from the fastest answer

function bin(t) {
  const i = Math.max(0, Math.floor((t - started) / TIMELINE_MS));
  while (timeline.length <= i) timeline.push({ actions: [], delays: 0, delaySum: 0, delayMax: 0, bytes: 0 });
  return timeline[i];
}
function countKind(text) { // what went wrong, for the report (the counters are separate)
  const k = text.split("\n")[0].slice(0, 160);
  errorKinds[k] = (errorKinds[k] ?? 0) + 1;
}
function learnOffset(serverTime, t0, t1) {
  if (typeof serverTime !== "number" || t1 - t0 >= bestRtt) return;
  bestRtt = t1 - t0;
  offset = serverTime - (t0 + t1) / 2;
}

// One HTTP request, measured. Returns {status, json, retryAfterS}; status 0 on a network failure.
async function act(kind, method, path, body) {
  const t0 = now();
  let status = 0, json = null, retryAfterS = 1, text = "";
  try {
    const res = await pool.request({
      path, method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: body === undefined ? {} : { "content-type": "application/json" },
    });
    status = res.statusCode;
    text = await res.body.text();
    const header = Number(res.headers["retry-after"]);
    if (Number.isFinite(header) && header > 0) retryAfterS = header;
    try { json = JSON.parse(text); } catch { json = null; }
  } catch (e) {
    text = `${e.code ?? e.name}: ${e.message}`;
  }
  const t1 = now();
  if (stopping) return { status: -1, json: null, retryAfterS }; // in flight at the end: dropped
  httpRequests++;
  (latency[kind] ??= []).push(t1 - t0);
  bin(t1).actions.push(t1 - t0);
  const sk = `${kind} ${status}`;
  statusCounts[sk] = (statusCounts[sk] ?? 0) + 1;
  if (status >= 200 && status < 300) learnOffset(json?.server_time, t0, t1);
  else if (status === 429) rateLimited++;
  else { httpErrors++; countKind(`${kind} ${status} ${text.slice(0, 120)}`); }
  return { status, json, retryAfterS };
}

// -- update delay --------------------------------------------------------------------------------
// Record the delay of every task whose state this player has not seen. The player's first view
// (a snapshot or a poll, whichever comes first) only records: those tasks changed before it came.
function observe(player, tasks, receivedAt) {
  if (!Array.isArray(tasks)) return;
  const seed = !player.seeded;
  player.seeded = true;
  const serverNow = receivedAt + offset;
  for (const task of tasks) {
    if (!task || typeof task.id !== "string") continue;
    const state = `${task.cycles}|${task.status}`;
    if (player.seen.get(task.id) === state) continue;
    player.seen.set(task.id, state);
    if (seed || typeof task.last_cycle_at !== "number") continue;
    const delay = serverNow - task.last_cycle_at;
    if (delay < -2) delayNegative++; // beyond the millisecond resolution of server times
    const ms = Math.max(0, delay);
    delayHist[Math.min(DELAY_BINS - 1, Math.round(ms))]++;
    delaySum += ms;
    delayCount++;
    const b = bin(receivedAt);
    b.delays++;
    b.delaySum += ms;
    b.delayMax = Math.max(b.delayMax, ms);
  }
}

// Any frame with tasks: a delta, a snapshot after a reconnect (what changed meanwhile counts, late),
// or the original design's full-state frames (it sends every broadcast as a snapshot).
function onFrame(player, data) {
  const receivedAt = now();
  wsBytes += data.length;
  wsFrames++;
  bin(receivedAt).bytes += data.length;
  let msg;
  try { msg = JSON.parse(data.toString()); } catch { badFrames++; return; }
  if (msg === null || typeof msg !== "object") return; // "pong" and other plain frames
  observe(player, msg.tasks, receivedAt);
  if (Array.isArray(msg.removed)) for (const id of msg.removed) player.seen.delete(id);
}

// -- one player ----------------------------------------------------------------------------------
function makePlayer(i) {
  const joinAt = started + (RAMP_MS * i) / N;
  const deployAt = Array.from({ length: MINERS }, () =>
    joinAt + 500 + Math.random() * Math.max(0, started + DEPLOY_WINDOW_MS - joinAt - 500)).sort((a, b) => a - b);
  return {
    name: `p${TAG}-${i}`, mission: `m${Math.floor(i / MISSION_SIZE)}`, joinAt, deployAt,
    seen: new Map(), seeded: false, ws: null, downSince: null, attempts: 0,
  };
}

async function join(p) {
  for (let attempt = 0; attempt < 5 && !stopping; attempt++) {
    const r = await act("join", "POST", "/api/join", { name: p.name, mission: p.mission });
    if (r.status === 200) { joined++; return true; }
    await sleep((r.status === 429 || r.status === 503 ? r.retryAfterS * 1000 : 1000) * (0.5 + Math.random()));
  }
  return false;
}

function connect(p) {
  if (stopping) return;
  const ws = new WebSocket(`${wsOrigin}/ws/${p.mission}?player=${p.name}`, { perMessageDeflate: false });
  let opened = false;
  p.ws = ws;
  ws.on("open", () => { opened = true; wsOpened++; p.attempts = 0; p.downSince = null; });
  ws.on("message", (data) => onFrame(p, data));
  ws.on("error", (e) => { if (!stopping) countKind(`ws ${opened ? "error" : "open failed"}: ${e.code ?? e.message}`); });
  ws.on("close", (code) => {
    if (stopping) return;
    if (opened) { wsDisconnects++; countKind(`ws closed ${code}`); } else wsFailed++;
    p.ws = null;
    p.downSince ??= now();
    const backoff = Math.min(30_000, 500 * 2 ** p.attempts++) * (0.5 + Math.random());
    setTimeout(() => connect(p), backoff);
  });
}

async function deploy(p) {
  for (const at of p.deployAt) {
    await sleep(at - now());
    for (let attempt = 0; attempt < 10 && !stopping; attempt++) {
      const r = await act("deploy", "POST", `/api/players/${p.name}/miners`, {});
      if (r.status === 200) { deployed++; break; }
      if (r.status !== 429 && r.status !== 503) break; // an error: this miner is not retried
      await sleep(r.retryAfterS * 1000 * (1 + 0.2 * Math.random()));
    }
    if (stopping) return;
  }
}

// Reads while watching: own totals and the leaderboard every REFRESH_MS; mission tasks every
// POLL_MS (original page), or every 500 ms while the socket has been down for 5 s.
async function watch(p) {
  let nextRefresh = now() + Math.random() * REFRESH_MS;
  while (!stopping) {
    const t = now();
    const fallback = p.downSince !== null && t - p.downSince >= FALLBACK_AFTER_MS;
    if (POLL_MS > 0 || fallback) {
      if (fallback) pollsWhileFallback++;
      const r = await act("poll", "GET", `/api/missions/${p.mission}/tasks`);
      if (r.status === 200) observe(p, r.json?.tasks, now());
    }
    if (now() >= nextRefresh) {
      nextRefresh += REFRESH_MS;
      await act("player", "GET", `/api/players/${p.name}`);
      await act("leaderboard", "GET", "/api/leaderboard?limit=10");
    }
    const period = POLL_MS > 0 ? POLL_MS : FALLBACK_POLL_MS;
    await sleep(period - (now() - t));
  }
}

async function play(p) {
  await sleep(p.joinAt - now());
  if (!(await join(p))) return;
  p.downSince = now(); // no socket yet
  connect(p);
  await Promise.all([deploy(p), watch(p)]);
}

// -- summary -------------------------------------------------------------------------------------
const pct = (sorted, q) => sorted.length ? +sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1))].toFixed(3) : null;
function latencySummary(values) {
  const s = Float64Array.from(values).sort();
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : null;
  return { n: s.length, p50: pct(s, 50), p95: pct(s, 95), p99: pct(s, 99), max: pct(s, 100), mean: mean === null ? null : +mean.toFixed(3) };
}
function histPercentile(q) {
  if (!delayCount) return null;
  const rank = Math.max(1, Math.ceil((q / 100) * delayCount));
  let seen = 0;
  for (let i = 0; i < DELAY_BINS; i++) { seen += delayHist[i]; if (seen >= rank) return i; }
  return DELAY_BINS - 1;
}
function summary(elapsedMs) {
  const all = Object.values(latency).flat();
  const kinds = Object.fromEntries(Object.entries(latency).map(([k, v]) => [k, latencySummary(v)]));
  let maxDelay = 0;
  for (let i = DELAY_BINS - 1; i >= 0; i--) if (delayHist[i]) { maxDelay = i; break; }
  const cpu = process.cpuUsage();
  const seconds = elapsedMs / 1000;
  return {
    players: N, joined, missions: Math.ceil(N / MISSION_SIZE), missionSize: MISSION_SIZE,
    minersTarget: N * MINERS, deployed, elapsedS: +seconds.toFixed(2),
    http: { requests: httpRequests, errors: httpErrors, rateLimited, statusCounts, latencyMs: latencySummary(all), kinds },
    updateDelayMs: {
      n: delayCount, p50: histPercentile(50), p95: histPercentile(95), p99: histPercentile(99), max: maxDelay,
      mean: delayCount ? +(delaySum / delayCount).toFixed(3) : null, negative: delayNegative,
    },
    clockOffsetMs: +offset.toFixed(3), clockOffsetRttMs: Number.isFinite(bestRtt) ? +bestRtt.toFixed(3) : null,
    ws: {
      opened: wsOpened, failed: wsFailed, disconnects: wsDisconnects, frames: wsFrames, bytes: wsBytes, badFrames,
      bytesPerSPerClient: +(wsBytes / seconds / N).toFixed(1), framesPerSPerClient: +(wsFrames / seconds / N).toFixed(2),
    },
    pollsWhileFallback,
    errors: httpErrors + wsFailed + wsDisconnects + crashed,
    errorRate: +((httpErrors + wsFailed + wsDisconnects + crashed) / Math.max(1, httpRequests + wsOpened + wsFailed)).toFixed(5),
    errorKinds,
    clientCpuS: +((cpu.user + cpu.system) / 1e6).toFixed(2),
    timeline: timeline.map((b, i) => ({
      t: (i * TIMELINE_MS) / 1000, actions: b.actions.length, actionP95: pct(Float64Array.from(b.actions).sort(), 95),
      delays: b.delays, delayMean: b.delays ? +(b.delaySum / b.delays).toFixed(1) : null, delayMax: +b.delayMax.toFixed(1),
      bytesPerSPerClient: +(b.bytes / (TIMELINE_MS / 1000) / N).toFixed(1),
    })),
  };
}

const players = Array.from({ length: N }, (_, i) => makePlayer(i));
const progress = setInterval(() => {
  const s = Math.round((now() - started) / 1000);
  process.stderr.write(`[players] ${s}s joined=${joined} sockets=${wsOpened - wsDisconnects} deployed=${deployed} http=${httpRequests} errors=${httpErrors + wsFailed + wsDisconnects + crashed} 429=${rateLimited} delays=${delayCount}\n`);
}, 10_000);
for (const p of players) play(p).catch((e) => { crashed++; countKind(`player crashed: ${e.stack ?? e}`); });
await sleep(DURATION_MS);
stopping = true;
const elapsed = now() - started;
clearInterval(progress);
for (const p of players) p.ws?.terminate();
console.log(JSON.stringify(summary(elapsed)));
await pool.destroy().catch(() => {});
process.exit(0);
