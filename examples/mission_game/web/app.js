// The mission page: join, deploy and recall miners, watch them live. Everything shown comes from
// the server (HTTP answers and the room's WebSocket frames); the page only interpolates progress.

import { Connection } from "./connection.js";
import { ServerClock, cycleProgress, missionProgress } from "./progress.js";

const $ = (id) => document.getElementById(id);
const state = { config: null, player: null, mission: null, tasks: new Map(), totals: null };
const clock = new ServerClock();
window.game = { state, clock, connection: null, loadedAt: Date.now() };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) {
    const wait = response.headers.get("Retry-After");
    throw new Error(data.message + (wait ? ` (retry in ${wait} s)` : ""));
  }
  if (data.server_time) clock.observe(data.server_time);
  return data;
}

// -- frames from the room --------------------------------------------------------------------------
function applyFrame(frame) {
  clock.observe(frame.server_time);
  if (frame.type === "snapshot") state.tasks = new Map();
  for (const task of frame.tasks || []) state.tasks.set(task.id, task);
  for (const id of frame.removed || []) state.tasks.delete(id);
  const players = frame.players || (frame.type === "player" ? [frame] : []);
  for (const totals of players) {
    if (totals.player === state.player) setTotals(totals);
  }
  renderTasks();
}

function setTotals({ copper, ore }) {
  state.totals = { copper, ore };
  $("copper").textContent = copper;
  $("ore").textContent = ore;
}

// -- rendering -------------------------------------------------------------------------------------
function renderTasks() {
  const list = $("tasks");
  const tasks = [...state.tasks.values()].sort((a, b) => a.id.localeCompare(b.id, "en", { numeric: true }));
  $("no-tasks").hidden = tasks.length > 0;
  const mine = tasks.filter((t) => t.owner === state.player);
  $("live").textContent = mine.filter((t) => t.status === "running").length;
  list.replaceChildren(...tasks.map(taskRow));
}

function taskRow(task) {
  const row = document.createElement("li");
  row.className = `task ${task.status}` + (task.owner === state.player ? " mine" : "");
  row.dataset.id = task.id;
  row.innerHTML = `
    <span class="task-id"></span>
    <span class="task-status"></span>
    <progress class="cycle" max="1" title="this cycle"></progress>
    <progress class="life" max="1" title="whole run"></progress>
    <span class="task-cycles"></span>
    <span class="task-ore"></span>`;
  row.querySelector(".task-id").textContent = task.id;
  row.querySelector(".task-status").textContent = task.status;
  row.querySelector(".task-cycles").textContent = `${task.cycles}/${task.max_cycles} cycles`;
  row.querySelector(".task-ore").textContent = `${task.ore} ore`;
  if (task.owner === state.player && task.status === "running") {
    const recall = document.createElement("button");
    recall.className = "recall";
    recall.textContent = "Recall";
    recall.onclick = () => act(() => api("POST", `/api/players/${state.player}/miners/${task.id}/recall`));
    row.append(recall);
  }
  updateBars(row, task);
  return row;
}

function updateBars(row, task) {
  const now = clock.serverNow();
  row.querySelector(".cycle").value = cycleProgress(task, now);
  row.querySelector(".life").value = missionProgress(task, now);
}

function animate() {
  for (const row of $("tasks").children) {
    const task = state.tasks.get(row.dataset.id);
    if (task) updateBars(row, task);
  }
  $("offset").textContent = Math.round(clock.offset);
  requestAnimationFrame(animate);
}

async function refreshBoard() {
  try {
    const board = await api("GET", "/api/leaderboard?limit=10");
    $("ranks").replaceChildren(...board.ranks.map((r) => {
      const item = document.createElement("li");
      item.textContent = `${r.player} · ${r.ore} ore`;
      return item;
    }));
    $("ranks-empty").hidden = board.ranks.length > 0;
    const pool = await api("GET", "/api/global");
    $("pool").textContent = pool.ore ?? "lost";
  } catch (error) {
    // the board is informational; the next refresh tries again
  }
}

// -- actions ---------------------------------------------------------------------------------------
async function act(fn) {
  $("action-error").textContent = "";
  try {
    const result = await fn();
    if (result.task) {
      state.tasks.set(result.task.id, result.task);
      renderTasks();
    }
    if (result.copper !== undefined) setTotals({ copper: result.copper, ore: state.totals.ore });
  } catch (error) {
    $("action-error").textContent = error.message;
  }
}

async function join(event) {
  event.preventDefault();
  $("join-error").textContent = "";
  try {
    const player = await api("POST", "/api/join", { name: $("name").value, mission: $("mission").value });
    state.player = player.player;
    state.mission = player.mission;
    setTotals(player);
    for (const task of player.miners) state.tasks.set(task.id, task);
    $("player-name").textContent = player.player;
    $("mission-name").textContent = player.mission;
    $("player-panel").hidden = $("tasks-panel").hidden = false;
    $("join-panel").hidden = true;
    renderTasks();
    connect(player);
  } catch (error) {
    $("join-error").textContent = error.message;
  }
}

function connect(player) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const connection = new Connection({
    socketUrl: `${scheme}://${location.host}/ws/${player.mission}?player=${player.player}`,
    pollUrl: `/api/missions/${player.mission}/tasks`,
    pollAlwaysMs: state.config.poll_ms,
    onFrame: applyFrame,
    onStatus: (status) => {
      $("status").textContent = status;
      $("status").className = `status ${status}`;
    },
  });
  window.game.connection = connection;
  connection.start();
}

async function main() {
  state.config = await api("GET", "/api/config");
  $("design").textContent = `${state.config.design} · ${state.config.strategy} × ${state.config.shards}`;
  $("cost").textContent = `(${state.config.miner_cost} copper)`;
  $("join-form").addEventListener("submit", join);
  $("deploy").addEventListener("click", () => act(() => api("POST", `/api/players/${state.player}/miners`, {})));
  refreshBoard();
  setInterval(refreshBoard, 5000);
  requestAnimationFrame(animate);
}

main();
