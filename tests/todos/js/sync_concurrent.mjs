// A and B write the same cells in the same tick, before either hears of the other: both end
// identical, and each cell holds the write with the larger HLC (last writer wins).
//   node sync_concurrent.mjs <ws-base> <room> <cells>
import {args, open, run, same, tables, until} from './sync_lib.mjs';

const hlcOf = (client, cellId) =>
  client.store.getMergeableContent()[0][0].todos[0].t1[0][cellId][1];

run(async () => {
  const [room, count] = [args[0], Number(args[1])];
  const a = await open(room);
  const b = await open(room);
  const writes = [];
  for (let i = 0; i < count; i++) {
    const [first, second] = i % 2 ? [b, a] : [a, b]; // neither always writes last
    first.store.setCell('todos', 't1', `c${i}`, `${first == a ? 'A' : 'B'}${i}`);
    second.store.setCell('todos', 't1', `c${i}`, `${second == a ? 'A' : 'B'}${i}`);
    writes.push({cell: `c${i}`, a: hlcOf(a, `c${i}`), b: hlcOf(b, `c${i}`)});
  }
  await until('both to agree', () =>
    same(a, b) && writes.every(({cell, a: ha, b: hb}) => hlcOf(a, cell) == (ha > hb ? ha : hb)));
  return {writes, a: tables(a), b: tables(b)};
});
