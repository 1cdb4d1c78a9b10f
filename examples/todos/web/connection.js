// Keeps a MergeableStore synced with /ws/{list} across disconnects and server restarts.
//
// Each attempt opens a WebSocket and a TinyBase WsSynchronizer on the same store. When the
// socket closes (deploy, restart, network), the synchronizer is destroyed and a new attempt is
// scheduled after an exponential backoff with jitter (0.5 s doubling to 10 s, ±25 %), reset
// once a connection opens. Edits made while disconnected stay in the store; on reconnect the
// synchronizer's ContentHashes make the server and the other tabs pull them.
import {createWsSynchronizer} from 'tinybase/synchronizers/synchronizer-ws-client';

const FIRST_DELAY = 500;
const MAX_DELAY = 10_000;

export const backoff = (attempt) => {
  const delay = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** attempt);
  return delay * (0.75 + Math.random() * 0.5);
};

export const keepSynced = (store, url, onStatus) => {
  let attempt = 0;
  const connect = async () => {
    onStatus('connecting');
    let synchronizer;
    let ended = false;
    const end = () => { // once per attempt, whichever of close or failure comes first
      if (!ended) {
        ended = true;
        synchronizer?.destroy().catch(() => 0);
        retry();
      }
    };
    try {
      const webSocket = new WebSocket(url);
      webSocket.addEventListener('close', end);
      synchronizer = await createWsSynchronizer(store, webSocket, 1, undefined, undefined,
        (error) => console.debug('sync:', error?.message ?? error));
      await synchronizer.startSync();
      if (!ended) {
        attempt = 0;
        onStatus('connected');
      }
    } catch {
      end();
    }
  };
  const retry = () => {
    const delay = backoff(attempt++);
    onStatus('reconnecting', delay);
    setTimeout(connect, delay);
  };
  connect();
};
