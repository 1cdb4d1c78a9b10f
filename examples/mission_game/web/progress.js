// Progress from the server's cycle count and time (finding 6), corrected for clock offset.
//
// Every frame carries server_time (ms, the server's clock when it sent it). The client's estimate
// of the offset is server_time - its receive time, which is the true offset minus the network
// delay; the largest estimate of the last WINDOW frames has the smallest delay, so it is used.

const WINDOW = 20;

export class ServerClock {
  constructor(now = () => Date.now()) {
    this.now = now;
    this.samples = [];
  }

  // Record one frame's server_time, received now.
  observe(serverTime) {
    this.samples.push(serverTime - this.now());
    if (this.samples.length > WINDOW) this.samples.shift();
  }

  get offset() {
    return this.samples.length ? Math.max(...this.samples) : 0;
  }

  // The server's clock now, as well as the client can tell.
  serverNow() {
    return this.now() + this.offset;
  }
}

// Fraction of the current cycle done: (now + offset - last_cycle_at) / cycle_ms, in [0, 1].
export function cycleProgress(task, serverNow) {
  if (task.status !== "running") return task.status === "completed" ? 1 : 0;
  const elapsed = serverNow - task.last_cycle_at;
  return Math.min(1, Math.max(0, elapsed / task.cycle_ms));
}

// Fraction of the miner's whole life done: whole cycles plus the current one.
export function missionProgress(task, serverNow) {
  const cycles = task.cycles + (task.status === "running" ? cycleProgress(task, serverNow) : 0);
  return Math.min(1, cycles / task.max_cycles);
}
