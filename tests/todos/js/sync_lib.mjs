// Shared by the sync_*.mjs scripts: real TinyBase clients (MergeableStore + WsSynchronizer over
// the `ws` package) against `<base>/ws/<room>`. Each script prints one JSON report line.
import {createMergeableStore} from 'tinybase/mergeable-store';
import {createWsSynchronizer} from 'tinybase/synchronizers/synchronizer-ws-client';
import WebSocket from 'ws';

export const base = process.argv[2];
export const args = process.argv.slice(3);
export const errors = []; // every onIgnoredError: TinyBase hides sync failures there
const clients = [];

// A client that has started syncing with `room` (its load from the room is done).
export const open = async (room, store = createMergeableStore()) => {
  const ws = new WebSocket(`${base}/ws/${encodeURIComponent(room)}`);
  const closes = [];
  ws.on('close', (code, reason) => closes.push([code, reason.toString()]));
  const synchronizer = await createWsSynchronizer(store, ws, 1, undefined, undefined,
    (error) => errors.push(`${room}: ${error?.message ?? error}`));
  await synchronizer.startSync();
  const client = {room, store, synchronizer, closes};
  clients.push(client);
  return client;
};

export const close = async (client) => {
  await client.synchronizer.destroy();
  clients.splice(clients.indexOf(client), 1);
};

// Tables as sorted JSON, so stores that hold the same content compare equal.
const sorted = (value) =>
  value && typeof value == 'object' && !Array.isArray(value)
    ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]))
    : value;
export const tables = (client) => sorted(client.store.getTables());
export const same = (...group) =>
  group.every((c) => JSON.stringify(tables(c)) == JSON.stringify(tables(group[0])));

// Bounded polling: the synchronizer gives no event for "the other side has merged".
export const until = async (what, check, timeoutMs = 10000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

export const run = (main) =>
  main()
    .then(async (report) => {
      const seen = [...errors]; // leaving rejects the requests still in flight: not failures
      for (const client of [...clients]) await close(client);
      console.log(JSON.stringify({...report, errors: seen}));
      process.exit(0);
    })
    .catch((error) => {
      console.log(JSON.stringify({failed: String(error?.stack ?? error), errors}));
      process.exit(1);
    });
