// Serves worker.mjs with Miniflare's defaults (SQLite-backed objects, state under --persist) on
// 127.0.0.1:--port until SIGINT/SIGTERM (the benchmarks poll /healthz for readiness).
import { Miniflare } from "miniflare";
import { fileURLToPath } from "node:url";

const argv = process.argv.slice(2);
const opt = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const port = Number(opt("port", 8788));
const persist = opt("persist", undefined);

const mf = new Miniflare({
  modules: true,
  scriptPath: fileURLToPath(new URL("./worker.mjs", import.meta.url)),
  compatibilityDate: "2025-04-01",
  host: "127.0.0.1",
  port,
  durableObjects: {
    COUNTER: { className: "Counter", useSQLite: true },
    ROOM: { className: "Room", useSQLite: true },
  },
  durableObjectsPersist: persist ?? false,
});
await mf.ready;
const stop = async () => { await mf.dispose(); process.exit(0); };
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
