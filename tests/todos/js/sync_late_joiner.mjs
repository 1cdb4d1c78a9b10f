// A and B sync; C edits offline, then joins: C gets everything, A and B get C's edits.
//   node sync_late_joiner.mjs <ws-base> <room>
import {createMergeableStore} from 'tinybase/mergeable-store';
import {args, open, run, same, tables, until} from './sync_lib.mjs';

run(async () => {
  const [room] = args;
  const a = await open(room);
  const b = await open(room);
  a.store.setRow('todos', 't1', {text: 'from A', done: false});
  b.store.setRow('todos', 't2', {text: 'from B', done: false});
  b.store.setValue('owner', 'bob');
  await until('A and B to agree', () => same(a, b) && a.store.hasRow('todos', 't2'));
  const offline = createMergeableStore();
  offline.setRow('todos', 'c1', {text: 'offline on C', done: false});
  offline.setCell('todos', 't1', 'done', true); // later than A's write: it wins
  const c = await open(room, offline);
  await until('all three to agree', () =>
    same(a, b, c) && a.store.hasRow('todos', 'c1') && c.store.hasRow('todos', 't2')
    && a.store.getValue('owner') == 'bob' && c.store.getValue('owner') == 'bob');
  return {a: tables(a), b: tables(b), c: tables(c), values: c.store.getValues()};
});
