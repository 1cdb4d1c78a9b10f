// The todo list: rows of the "todos" table ({text, done, created}) in a TinyBase
// MergeableStore, rendered on every change and synced by connection.js.
import {createMergeableStore} from 'tinybase/mergeable-store';
import {keepSynced} from './connection.js';

const list = new URLSearchParams(location.search).get('list') || 'default';
const store = createMergeableStore();
const $ = (id) => document.getElementById(id);

const newId = () => crypto.randomUUID().replaceAll('-', '').slice(0, 16);

const render = () => {
  const rows = Object.entries(store.getTable('todos'))
    .sort(([, a], [, b]) => (a.created ?? 0) - (b.created ?? 0));
  $('todos').replaceChildren(...rows.map(([id, todo]) => item(id, todo)));
};

const item = (id, {text = '', done = false}) => {
  const li = document.createElement('li');
  li.dataset.id = id;
  li.classList.toggle('done', done);
  const box = Object.assign(document.createElement('input'), {type: 'checkbox', checked: done});
  box.addEventListener('change', () => store.setCell('todos', id, 'done', box.checked));
  const label = Object.assign(document.createElement('span'), {className: 'text', textContent: text});
  const remove = Object.assign(document.createElement('button'),
    {className: 'delete', textContent: '✕', title: 'Delete'});
  remove.addEventListener('click', () => store.delRow('todos', id));
  li.append(box, label, remove);
  return li;
};

$('add').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('new-todo').value.trim();
  if (text) {
    store.setRow('todos', newId(), {text, done: false, created: Date.now()});
    $('new-todo').value = '';
  }
});

const showStatus = (state, delay) => {
  $('status').dataset.state = state;
  $('status').textContent =
    state == 'reconnecting' ? `reconnecting in ${(delay / 1000).toFixed(1)} s` : state;
};

$('list-name').textContent = list;
store.addTablesListener(render);
render();
keepSynced(store, `${location.protocol == 'https:' ? 'wss' : 'ws'}://${location.host}/ws/${encodeURIComponent(list)}`, showStatus);
window.todos = {store, list};
