// Vectors for examples/todos/mergeable.py, made by the real TinyBase MergeableStore.
//
//   node sync_vectors.mjs [seed] > ../vectors/mergeable.json
//
// Deterministic: a seeded PRNG picks edits and merges on several stores whose clocks all read
// one fake `now`, so the same seed always writes the same file (test_mergeable.py checks that
// when node is installed). Every value goes through TinyBase's own wire encoding: the encoded
// content/changes the synchronizer sends, with undefined written as "\uFFFC".
import {getHash} from 'tinybase';
import {createMergeableStore} from 'tinybase/mergeable-store';

const UNDEFINED = '\uFFFC';
const wire = (obj) =>
  JSON.parse(JSON.stringify(obj, (_k, v) => (v === undefined ? UNDEFINED : v)));

const seed = Number(process.argv[2] ?? 14);
const mulberry32 = (a) => () => {
  a |= 0;
  a = (a + 0x6d2b79f5) | 0;
  let t = Math.imul(a ^ (a >>> 15), 1 | a);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const random = mulberry32(seed);
const pick = (items) => items[Math.floor(random() * items.length)];

const STRINGS = ['', 'buy milk', 'ünïcödé 🎉', 'tab\tquote"back\\slash\nnl\u0001', '\ud800x',
  '\u2028', 'S', '0'];
const NUMBERS = [0, -1, 1.5, 0.1, 1e21, 1e-7, 123456789012345680, 5e-324, 2 ** 53 + 2,
  -2.5e-10, 1.7976931348623157e308];
const CELLS = [...STRINGS, ...NUMBERS, true, false, null, {tags: ['x', 1]}, [1, 'two']];
const TABLES = ['todos', 'lists', '1'];
const ROWS = ['t1', 't2', 't3', '10', '2', 'ü'];
const CELL_IDS = ['text', 'done', 'n', 'meta'];
const VALUE_IDS = ['owner', 'counter', 'theme'];

let now = 1_780_000_000_000;
const STORES = 4;
const stores = [];
const captured = [];
for (let i = 0; i < STORES; i++) {
  const store = createMergeableStore('store-' + i, () => now);
  store.addDidFinishTransactionListener(() => (captured[i] = wire(store.__[2](false))));
  stores.push(store);
}
const hashes = (store) => store.getMergeableContentHashes();
const content = (store) => wire(store.__[1]());

const randomEdit = () => {
  const r = random();
  if (r < 0.55) return ['setCell', pick(TABLES), pick(ROWS), pick(CELL_IDS), pick(CELLS)];
  if (r < 0.7) return ['delCell', pick(TABLES), pick(ROWS), pick(CELL_IDS)];
  if (r < 0.78) return ['delRow', pick(TABLES), pick(ROWS)];
  if (r < 0.93) return ['setValue', pick(VALUE_IDS), pick(CELLS)];
  return ['delValue', pick(VALUE_IDS)];
};
const applyEdit = (store, [kind, ...args]) => store[kind](...args);

// The synchronizer's pull (createCustomSynchronizer.getChangesFromOtherStore), recorded.
const mergeTablesStamps = (tablesStamp, [tableStamps2, tablesTime2]) => {
  const latest = (a = '', b = '') => (a > b ? a : b);
  for (const [tableId, [rowStamps2, tableTime2]] of Object.entries(tableStamps2)) {
    const tableStamp = (tablesStamp[0][tableId] ??= [{}]);
    for (const [rowId, [cellStamps2, rowTime2]] of Object.entries(rowStamps2)) {
      const rowStamp = (tableStamp[0][rowId] ??= [{}]);
      for (const [cellId, [cell2, cellTime2]] of Object.entries(cellStamps2)) {
        rowStamp[0][cellId] = cellTime2 ? [cell2, cellTime2] : [cell2];
      }
      rowStamp[1] = latest(rowStamp[1], rowTime2);
    }
    tableStamp[1] = latest(tableStamp[1], tableTime2);
  }
  tablesStamp[1] = latest(tablesStamp[1], tablesTime2);
};
const pull = (to, from) => {
  const requests = [];
  const ask = (type, body, answer) => {
    const response = wire(answer(body));
    requests.push([type, wire(body), wire(response)]);
    return response;
  };
  const [tablesHash, valuesHash] = hashes(to);
  const [otherTablesHash, otherValuesHash] = hashes(from);
  let tablesChanges = [{}];
  if (tablesHash != otherTablesHash) {
    const [newTables, differing] = ask(4, to.getMergeableTableHashes(),
      (b) => from.getMergeableTableDiff(b));
    tablesChanges = newTables;
    if (Object.keys(differing).length) {
      const [newRows, differingRows] = ask(5, to.getMergeableRowHashes(differing),
        (b) => from.getMergeableRowDiff(b));
      mergeTablesStamps(tablesChanges, newRows);
      if (Object.keys(differingRows).length) {
        mergeTablesStamps(tablesChanges, ask(6, to.getMergeableCellHashes(differingRows),
          (b) => from.getMergeableCellDiff(b)));
      }
    }
  }
  const valuesChanges = valuesHash == otherValuesHash ? [{}]
    : ask(7, to.getMergeableValueHashes(), (b) => from.getMergeableValueDiff(b));
  const changes = [tablesChanges, valuesChanges, 1];
  to.__[4](JSON.parse(JSON.stringify(changes), (_k, v) => (v === UNDEFINED ? undefined : v)));
  return {requests, changes: wire(changes)};
};

const BAD = () => [
  ['future HLC', [[{todos: [{t1: [{text: ['x', futureHlc()]}]}]}], [{}], 1]],
  ['malformed HLC', [[{todos: [{t1: [{text: ['x', 'not-an-hlc']}]}]}], [{}], 1]],
  ['four items', [[{}], [{}], 1, 1]],
  ['third item not 1', [[{}], [{}], 2]],
  ['tables not an object', [[5], [{}], 1]],
  ['value stamp too long', [[{}], [{owner: ['x', '', 1, 2]}], 1]],
  ['bad hash type', [[{}], [{owner: ['x', '', 'h']}], 1]],
];
const encodeHlc = (ms, counter, client) => {
  const B64 = '-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz';
  let out = '';
  for (const s of [36, 30, 24, 18, 12, 6, 0]) out += B64[Math.floor(ms / 2 ** s) & 63];
  for (const s of [18, 12, 6, 0]) out += B64[(counter >> s) & 63];
  return out + client;
};
const futureHlc = () => encodeHlc(now + 6 * 60 * 1000, 0, 'zzzzz');

const steps = [];
for (let step = 0; step < 400; step++) {
  now += pick([0, 0, 0, 1, 7, 1000]);
  const i = Math.floor(random() * STORES);
  const r = random();
  if (r < 0.6) {
    const edits = random() < 0.2 ? [randomEdit(), randomEdit()] : [randomEdit()];
    captured[i] = undefined;
    stores[i].transaction(() => edits.forEach((edit) => applyEdit(stores[i], edit)));
    const changes = captured[i];
    const to = [...Array(STORES).keys()].filter((j) => j != i && random() < 0.5);
    to.forEach((j) => stores[j].__[4](JSON.parse(JSON.stringify(changes),
      (_k, v) => (v === UNDEFINED ? undefined : v))));
    steps.push({op: 'edit', now, store: i, edits, changes, broadcastTo: to,
      hashes: stores.map(hashes)});
  } else if (r < 0.95) {
    const j = (i + 1 + Math.floor(random() * (STORES - 1))) % STORES;
    steps.push({op: 'pull', now, to: i, from: j, ...pull(stores[i], stores[j]),
      hashes: stores.map(hashes)});
  } else {
    const [why, changes] = pick(BAD());
    stores[i].applyMergeableChanges(changes);
    steps.push({op: 'invalid', now, store: i, why, changes: wire(changes),
      hashes: stores.map(hashes)});
  }
  if (step % 50 == 49) steps.push({op: 'check', contents: stores.map(content)});
}
for (let round = 0; round < 2; round++) {
  for (let i = 0; i < STORES; i++) {
    for (let j = 0; j < STORES; j++) {
      if (i != j) {
        steps.push({op: 'pull', now, to: i, from: j, ...pull(stores[i], stores[j]),
          hashes: stores.map(hashes)});
      }
    }
  }
}
steps.push({op: 'check', contents: stores.map(content)});
const converged = stores.every((s) => JSON.stringify(hashes(s)) == JSON.stringify(hashes(stores[0])));
if (!converged) throw new Error('stores did not converge');

const loaded = createMergeableStore('loaded', () => now);
loaded.__[3](JSON.parse(JSON.stringify(content(stores[0])),
  (_k, v) => (v === UNDEFINED ? undefined : v)));

const hashInputs = ['', 'a', 'buy milk', 'ünïcödé 🎉', '\ud800x', 'todos:12345', '\u2028'];
const numbers = [...NUMBERS, -0, 1e-6, 1e-5, 123e-20, 1e300, 2 ** 31, 4294967295];
process.stdout.write(JSON.stringify({
  tinybase: '10.0.1',
  seed,
  hashes: hashInputs.map((s) => [s, getHash(s)]),
  json: [...numbers, ...STRINGS, true, false, null].map((v) => [v, JSON.stringify(v)]),
  stores: STORES,
  uniqueIds: stores.map((_s, i) => 'store-' + i),
  steps,
  loaded: {content: content(stores[0]), hashes: hashes(loaded)},
}) + '\n');
