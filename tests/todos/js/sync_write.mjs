// Write <n> todos (and a value) into a room, then leave.
//   node sync_write.mjs <ws-base> <room> <n>
import {args, open, run, tables} from './sync_lib.mjs';

run(async () => {
  const [room, n] = [args[0], Number(args[1])];
  const client = await open(room);
  client.store.transaction(() => {
    for (let i = 0; i < n; i++) client.store.setRow('todos', `t${i}`, {text: `todo ${i}`, done: i % 2 == 0});
    client.store.setValue('title', `list ${room}`);
  });
  return {tables: tables(client)};
});
