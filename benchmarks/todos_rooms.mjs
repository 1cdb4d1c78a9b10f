// Rooms syncing for benchmarks/todos.py: R rooms, two real TinyBase clients each
// (MergeableStore + createWsSynchronizer, tinybase@10.0.1 from tests/todos/js/node_modules).
// In every room, one client makes E edits, each once the previous one converged and, with a
// pace P ms, after a pause of 0.5P-1.5P (a person typing; rooms start spread over one pause);
// P = 0: back to back, every room at once (a stress, not a person). Each edit's convergence time
// is from setRow on the writer to the row appearing in the other client's store.
//   node todos_rooms.mjs <ws-base> <rooms> <edits> [<pace-ms>]
// Prints one JSON line: {connect_ms, convergence_ms: [...], timeouts, errors}.
import {createMergeableStore} from '../tests/todos/js/node_modules/tinybase/mergeable-store/index.js';
import {createWsSynchronizer} from '../tests/todos/js/node_modules/tinybase/synchronizers/synchronizer-ws-client/index.js';
import WebSocket from '../tests/todos/js/node_modules/ws/wrapper.mjs';

const [base, roomsText, editsText, paceText = '0'] = process.argv.slice(2);
const rooms = Number(roomsText);
const edits = Number(editsText);
const pace = Number(paceText);
const run = Date.now().toString(36); // rows new to the room, even when it was used before
const pause = (share) => new Promise((resolve) => setTimeout(resolve, pace * share));
const errors = [];
const TIMEOUT_MS = 10000;

const open = async (room) => {
  const store = createMergeableStore();
  const ws = new WebSocket(`${base}/ws/${room}`);
  const synchronizer = await createWsSynchronizer(store, ws, 1, undefined, undefined,
    (error) => errors.push(`${room}: ${error?.message ?? error}`));
  await synchronizer.startSync();
  return {store, synchronizer};
};

// Resolves with the ms until `reader` has the row, or null after TIMEOUT_MS.
const converge = (writer, reader, row, started) =>
  new Promise((resolve) => {
    const timer = setTimeout(() => {
      reader.store.delListener(listener);
      resolve(null);
    }, TIMEOUT_MS);
    const listener = reader.store.addRowListener('todos', row, () => {
      clearTimeout(timer);
      reader.store.delListener(listener);
      resolve(performance.now() - started);
    });
    writer.store.setRow('todos', row, {text: row, done: false});
  });

const room = async (index, clients, times) => {
  const name = `bench-room-${index}`;
  await pause(Math.random());
  const [writer, reader] = [await open(name), await open(name)];
  clients.push(writer, reader);
  for (let i = 0; i < edits; i++) {
    await pause(0.5 + Math.random());
    times.push(await converge(writer, reader, `${run}-e${i}`, performance.now()));
  }
};

const clients = [];
const times = [];
const started = performance.now();
await Promise.all(Array.from({length: rooms}, (_, i) => room(i, clients, times)));
const elapsed = performance.now() - started;
const seen = [...errors]; // destroying rejects the requests still in flight: not failures
for (const client of clients) await client.synchronizer.destroy();
const done = times.filter((t) => t !== null);
console.log(JSON.stringify({
  elapsed_ms: elapsed,
  convergence_ms: done,
  timeouts: times.length - done.length,
  errors: seen,
}));
process.exit(0);
