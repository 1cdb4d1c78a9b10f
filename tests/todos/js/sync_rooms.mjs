// Two rooms, two clients each: every edit reaches its own room's other client and nobody else.
//   node sync_rooms.mjs <ws-base> <room1> <room2>
import {args, open, run, tables, until} from './sync_lib.mjs';

run(async () => {
  const [one, two] = args;
  const a = await open(one);
  const a2 = await open(one);
  const b = await open(two);
  const b2 = await open(two);
  a.store.setRow('todos', 'x', {text: `only in ${one}`});
  b.store.setRow('todos', 'y', {text: `only in ${two}`});
  await until('each room to sync', () => a2.store.hasRow('todos', 'x') && b2.store.hasRow('todos', 'y'));
  b.store.setRow('todos', 'z', {text: `later in ${two}`}); // a barrier for anything misrouted
  await until('the barrier', () => b2.store.hasRow('todos', 'z'));
  return {[one]: [tables(a), tables(a2)], [two]: [tables(b), tables(b2)]};
});
