// Join a room as a fresh client, alone, and wait for <n> todos: only the server can send them.
//   node sync_read.mjs <ws-base> <room> <n>
import {args, open, run, tables, until} from './sync_lib.mjs';

run(async () => {
  const [room, n] = [args[0], Number(args[1])];
  const client = await open(room);
  await until(`${n} todos`, () => client.store.getRowCount('todos') >= n);
  return {tables: tables(client), values: client.store.getValues()};
});
