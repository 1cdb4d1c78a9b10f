// The real TinyBase Remote Persister (tinybase@10.0.1) against examples/todos.
// Usage: node persister_client.mjs <scenario> <base-url>   (base: http://127.0.0.1:PORT/api)
// Prints one JSON line: {"ok": bool, ...scenario facts, "errors": [...ignored errors]}.
// Every onIgnoredError call is recorded (the persister swallows load and save failures), so the
// Python side can fail on any error it did not expect.
import {createStore} from 'tinybase';
import {createRemotePersister} from 'tinybase/persisters/persister-remote';

const [scenario, base] = process.argv.slice(2);
const errors = [];
const describe = (error) =>
  error instanceof Response ? `HTTP ${error.status}` : String(error?.message ?? error);

const open = (user, autoLoadSeconds = 1) => {
  const store = createStore();
  const persister = createRemotePersister(
    store,
    `${base}/${user}/load`,
    `${base}/${user}/save`,
    autoLoadSeconds,
    (error) => errors.push({user, error: describe(error)}),
  );
  return {store, persister};
};

const todos = (store, rows) => {
  store.transaction(() => {
    for (const [id, text, done] of rows) store.setRow('todos', id, {text, done});
  });
};

const content = (store) => [store.getTables(), store.getValues()];

const until = async (check, seconds) => {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return check();
};

// Whether the server has answered an auto-load poll (HEAD) with 304, from its /metrics.
const polledUnchanged = async () => {
  const text = await (await fetch(new URL('/metrics', base))).text();
  return text.split('\n').some((line) => line.startsWith('durable_http_requests_total{') &&
    line.includes('method="HEAD"') && line.includes('status="304"'));
};

const untilAsync = async (check, seconds) => {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return false;
};

const scenarios = {
  // save in one store, load into a fresh one: identical content
  async save_load() {
    const a = open('alice');
    todos(a.store, [['t1', 'buy milk', false], ['t2', 'walk the dog', true]]);
    a.store.setValue('owner', 'alice');
    a.store.setCell('todos', 't1', 'meta', {tags: ['x']}); // an object cell (\uFFFD + JSON)
    await a.persister.save();
    const b = open('alice');
    await b.persister.load();
    return {saved: content(a.store), loaded: content(b.store)};
  },
  // a second save replaces the first (rows deleted and changed stay so)
  async overwrite() {
    const a = open('bob');
    todos(a.store, [['t1', 'one', false], ['t2', 'two', false]]);
    await a.persister.save();
    a.store.delRow('todos', 't1');
    a.store.setCell('todos', 't2', 'done', true);
    todos(a.store, [['t3', 'three', false]]);
    await a.persister.save();
    const b = open('bob');
    await b.persister.load();
    return {saved: content(a.store), loaded: content(b.store)};
  },
  // two users never see each other's lists; a user with nothing saved loads nothing
  async isolated() {
    const alice = open('alice');
    const bob = open('bob');
    todos(alice.store, [['a1', 'alice only', false]]);
    todos(bob.store, [['b1', 'bob only', true]]);
    await Promise.all([alice.persister.save(), bob.persister.save()]);
    const [a2, b2, carol] = [open('alice'), open('bob'), open('carol')];
    await Promise.all([a2.persister.load(), b2.persister.load()]);
    const before = errors.length;
    await carol.persister.load([{todos: {c0: {text: 'initial', done: false}}}, {}]);
    return {
      alice: content(a2.store),
      bob: content(b2.store),
      carol: content(carol.store),
      carol_errors: errors.slice(before).map((e) => e.error),
    };
  },
  // a second client's auto-load picks up the first client's save through ETag polling
  async autoload() {
    const a = open('dana');
    todos(a.store, [['t1', 'first', false]]);
    await a.persister.save();
    const b = open('dana', 0.1);
    await b.persister.startAutoLoad();
    const first = content(b.store);
    const polled = await untilAsync(polledUnchanged, 10); // polls see 304 while nothing changes
    const started = Date.now();
    todos(a.store, [['t2', 'second', false]]);
    await a.persister.save();
    const seen = await until(() => b.store.hasRow('todos', 't2'), 10);
    const millis = Date.now() - started;
    await b.persister.stopAutoLoad();
    return {first, polled, seen, millis, saved: content(a.store), loaded: content(b.store)};
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios)}`);
  process.exit(2);
}
const facts = await run();
console.log(JSON.stringify({ok: true, ...facts, errors}));
