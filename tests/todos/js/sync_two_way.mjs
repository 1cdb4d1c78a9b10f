// Two clients in one room: A's row reaches B, B's edits reach A, a delete travels too.
//   node sync_two_way.mjs <ws-base> <room>
import {args, open, run, same, tables, until} from './sync_lib.mjs';

run(async () => {
  const [room] = args;
  const a = await open(room);
  const b = await open(room);
  a.store.setRow('todos', 't1', {text: 'from A', done: false});
  await until('B to see A', () => b.store.getCell('todos', 't1', 'text') == 'from A');
  b.store.setCell('todos', 't1', 'done', true);
  b.store.setRow('todos', 't2', {text: 'from B', done: false});
  await until('A to see B', () => a.store.hasRow('todos', 't2') && same(a, b));
  const both = tables(a);
  a.store.delRow('todos', 't2');
  await until('B to see the delete', () => !b.store.hasRow('todos', 't2'));
  return {both, afterDelete: {a: tables(a), b: tables(b)}};
});
