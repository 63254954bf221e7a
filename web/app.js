// app: the Gatehouse page — sign-in, then Settings › Network › Listeners: the table, the
// create/edit form (built by form.js from the schema), delete with confirmation, and live
// refresh from the JMAP push stream. Routes live in the URL hash:
//   #/listeners   #/listeners/new   #/listeners/<id>

import * as api from './client.js';
import * as forms from './form.js';

const { el } = forms;

const TYPE = 'x:NetworkListener';
const STATUS_EVERY_MS = 5000;
const $ = (sel) => document.querySelector(sel);

const state = {
  type: null, // the schema of x:NetworkListener; null while signed out
  session: null, // the JMAP session object (for eventSourceUrl)
  listeners: new Map(), // id → listener, as /get returned it
  listState: null, // the state string of the listeners we hold
  status: {}, // id → {live: n}
  events: null, // the EventSource
  reconnectTimer: null,
  statusTimer: null,
  refreshing: null,
  again: false,
  editing: undefined, // undefined: no form; null: new listener; else the id being edited
  editOriginal: null,
  flash: '', // the notice to show after the next navigation
};

// ---------- small helpers ----------

function showView(id) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== id;
}

function notice(text) {
  $('#notice').textContent = text || ''; // always present, so screen readers announce it
}

/** Navigates to `hash` and shows `message` there. */
function go(hash, message) {
  if (location.hash === hash) {
    route();
    notice(message);
  } else {
    state.flash = message;
    location.hash = hash;
  }
}

function pageError(text) {
  $('#page-error').textContent = text || '';
}

function setLive(mode) {
  const n = $('#live');
  const text = { on: 'Live', connecting: 'Connecting…', off: 'Live updates off' }[mode];
  n.textContent = text || '';
  n.className = `live live-${mode}`;
  n.hidden = !text;
  n.title = mode === 'on' ? 'Changes made anywhere appear here at once' : '';
  document.documentElement.dataset.live = mode || '';
}

const protocolProp = () => state.type.properties.find((p) => p.name === 'protocol');

function protocolLabel(value) {
  const e = (protocolProp()?.enum || []).find((x) => x.value === value);
  return e ? e.label : value;
}

/** plain / STARTTLS / implicit, as the listener really behaves (HTTP has no STARTTLS). */
function tlsMode(o) {
  if (!o.useTls) return 'plain';
  if (o.tlsImplicit) return 'implicit';
  return o.protocol === 'http' ? 'plain' : 'STARTTLS';
}

function sameListener(a, b) {
  if (!a || !b) return a === b;
  return state.type.properties.every((p) => JSON.stringify(a[p.name] ?? null) === JSON.stringify(b[p.name] ?? null));
}

// ---------- signing in and out ----------

function handleError(e) {
  if (e instanceof api.AuthError) {
    // Several requests in flight may fail together: the first one says why.
    if (state.type) showSignIn('Your session has ended. Sign in again.');
    else if ($('#signin-view').hidden) showSignIn('');
    return;
  }
  console.error(e);
  pageError(e.message || String(e));
}

function showSignIn(message) {
  stopLive();
  state.type = null;
  state.listeners.clear();
  state.listState = null;
  state.session = null;
  state.editing = undefined;
  $('#crumbs').hidden = true;
  $('#signout').hidden = true;
  setLive('');
  notice(message);
  pageError('');
  showView('signin-view');
  document.title = 'Sign in — Gatehouse';
  $('#secret').focus();
}

async function onSignIn(e) {
  e.preventDefault();
  const input = $('#secret');
  const err = $('#signin-error');
  const button = e.target.querySelector('button');
  err.hidden = true;
  input.removeAttribute('aria-invalid');
  if (!input.value) {
    err.textContent = 'Enter the administrator secret or an API key.';
    err.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  button.disabled = true;
  try {
    await api.signIn(input.value);
    input.value = '';
    notice('');
    await start();
  } catch (ex) {
    if (ex instanceof api.AuthError) {
      err.textContent = 'That secret was not accepted. Check it and try again.';
    } else if (state.type) {
      // Signed in, but the listeners cannot be read (a key without the get permission).
      err.textContent = `Signed in, but the listeners cannot be shown: ${ex.message}`;
      state.type = null;
    } else {
      err.textContent = ex.message;
    }
    err.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  } finally {
    button.disabled = false;
  }
}

async function onSignOut() {
  stopLive();
  try {
    await api.signOut();
  } catch (e) {
    pageError(e.message);
  }
  showSignIn('You are signed out.');
}

/** Loads what the page needs once signed in; AuthError means "not signed in". */
async function start() {
  const schema = await api.getSchema();
  const type = schema && schema.types && schema.types[TYPE];
  if (!type) throw new api.ApiError(`The server's schema does not describe ${TYPE}.`);
  state.type = type;
  await loadAll();
  $('#crumbs').hidden = false;
  $('#signout').hidden = false;
  route();
  startLive();
}

// ---------- data ----------

async function loadAll() {
  const r = await api.call(`${TYPE}/get`, { ids: null });
  state.listeners = new Map(r.list.map((o) => [o.id, o]));
  state.listState = r.state;
}

/** Brings the listeners up to date through /changes; false when the server cannot. */
async function applyChanges() {
  let since = state.listState;
  for (let round = 0; round < 50; round++) {
    const ref = (path) => ({ resultOf: 'c', name: `${TYPE}/changes`, path });
    const rs = await api.jmap([
      [`${TYPE}/changes`, { sinceState: since }, 'c'],
      [`${TYPE}/get`, { '#ids': ref('/created') }, 'g1'],
      [`${TYPE}/get`, { '#ids': ref('/updated') }, 'g2'],
    ]);
    const ch = api.result(rs, 'c');
    for (const g of ['g1', 'g2']) for (const o of api.result(rs, g).list) state.listeners.set(o.id, o);
    for (const id of ch.destroyed || []) state.listeners.delete(id);
    since = ch.newState;
    if (!ch.hasMoreChanges) {
      state.listState = since;
      return true;
    }
  }
  return false;
}

async function refreshOnce() {
  let done = false;
  if (state.listState) {
    try {
      done = await applyChanges();
    } catch (e) {
      if (e instanceof api.AuthError) throw e;
      done = false; // cannotCalculateChanges and the like: load everything instead
    }
  }
  if (!done) await loadAll();
  afterData();
}

/** Re-reads the listeners; concurrent calls are folded into one more round. */
function refresh() {
  if (!state.type) return Promise.resolve();
  if (state.refreshing) {
    state.again = true;
    return state.refreshing;
  }
  state.refreshing = (async () => {
    try {
      do {
        state.again = false;
        await refreshOnce();
      } while (state.again);
    } catch (e) {
      handleError(e);
    } finally {
      state.refreshing = null;
    }
  })();
  return state.refreshing;
}

function afterData() {
  renderTable();
  if (state.editing) checkStale();
  loadStatus();
}

async function loadStatus() {
  if (!state.type) return;
  try {
    const s = await api.getStatus();
    state.status = (s && s.listeners) || {};
  } catch (e) {
    if (e instanceof api.AuthError) return handleError(e);
    state.status = {};
  }
  renderStatus();
}

// ---------- live refresh ----------

function startLive() {
  stopLive();
  connectPush();
  state.statusTimer = setInterval(() => {
    if (document.visibilityState === 'visible' && !$('#list-view').hidden) loadStatus();
  }, STATUS_EVERY_MS);
}

function stopLive() {
  if (state.events) state.events.close();
  state.events = null;
  clearTimeout(state.reconnectTimer);
  clearInterval(state.statusTimer);
}

async function connectPush() {
  if (!state.session) {
    try {
      state.session = await api.getSession();
    } catch (e) {
      if (e instanceof api.AuthError) return handleError(e);
      state.session = {}; // fall back to the conventional endpoint
    }
  }
  if (!state.type) return;
  const es = new EventSource(api.eventSourceUrl(state.session, '*', 'no', 30));
  state.events = es;
  setLive('connecting');
  es.addEventListener('open', () => {
    setLive('on');
    refresh(); // catches up on anything missed while (re)connecting
  });
  es.addEventListener('state', (ev) => onStateChange(ev.data));
  es.addEventListener('error', () => {
    if (state.events !== es) return;
    if (es.readyState !== EventSource.CLOSED) {
      setLive('connecting'); // the browser retries by itself
      return;
    }
    // The server refused the stream (signed out, restarted): check, then try again.
    setLive('off');
    state.events = null;
    state.reconnectTimer = setTimeout(async () => {
      try {
        await api.getStatus();
        if (state.type && !state.events) connectPush();
      } catch (e) {
        handleError(e);
      }
    }, 3000);
  });
}

function onStateChange(data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  for (const account of Object.values((msg && msg.changed) || {})) {
    const s = account && account[TYPE];
    if (s !== undefined && s !== state.listState) {
      refresh();
      return;
    }
  }
}

// ---------- the table ----------

function focusKey() {
  return document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : undefined;
}

function renderTable() {
  if (!state.type) return;
  const key = focusKey();
  const tbody = $('#listeners tbody');
  const rows = [...state.listeners.values()].sort((a, b) => String(a.name).localeCompare(String(b.name)));
  tbody.replaceChildren(...rows.map(row));
  $('#empty').hidden = rows.length > 0;
  $('#listeners').closest('.table-wrap').hidden = rows.length === 0;
  renderStatus();
  if (key) tbody.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

function row(o) {
  const href = `#/listeners/${encodeURIComponent(o.id)}`;
  const mode = tlsMode(o);
  const binds = el('ul', { class: 'binds' }, ...(o.bind || []).map((b) => el('li', {}, el('code', { text: b }))));
  const del = el('button', { type: 'button', class: 'button small danger', 'data-key': `delete:${o.id}`, 'aria-label': `Delete ${o.name}`, text: 'Delete' });
  del.addEventListener('click', () => confirmDelete(o.id));
  // Explicit roles keep the table a table for screen readers when the phone layout
  // turns its rows into cards (display: block drops the semantics in some browsers).
  return el('tr', { role: 'row', 'data-id': o.id, 'data-name': o.name },
    el('th', { role: 'rowheader', scope: 'row' }, el('a', { href, 'data-key': `open:${o.id}`, text: o.name })),
    el('td', { role: 'cell', 'data-label': 'Protocol', text: protocolLabel(o.protocol) }),
    el('td', { role: 'cell', 'data-label': 'Bind addresses' }, binds),
    el('td', { role: 'cell', 'data-label': 'TLS mode' }, el('span', { class: `badge tls-${mode.toLowerCase()}`, text: mode })),
    el('td', { role: 'cell', 'data-label': 'Live connections', class: 'num live-count', text: '—' }),
    el('td', { role: 'cell', class: 'row-actions' },
      el('a', { href, class: 'button small quiet', 'data-key': `edit:${o.id}`, 'aria-label': `Edit ${o.name}`, text: 'Edit' }),
      del));
}

function renderStatus() {
  for (const tr of document.querySelectorAll('#listeners tbody tr')) {
    const s = state.status[tr.dataset.id];
    tr.querySelector('.live-count').textContent = s && typeof s.live === 'number' ? String(s.live) : '—';
  }
}

function showList() {
  state.editing = undefined;
  state.editOriginal = null;
  renderTable();
  showView('list-view');
  document.title = 'Listeners — Gatehouse';
  loadStatus();
}

// ---------- the form ----------

const form = () => $('#listener-form');

function openForm(id) {
  const editing = id !== null;
  const obj = editing ? state.listeners.get(id) : null;
  if (editing && !obj) {
    location.replace('#/listeners');
    pageError(`There is no listener with id ${id}; it may have been deleted.`);
    return;
  }
  state.editing = id;
  state.editOriginal = obj;
  forms.buildForm(form(), state.type, editing);
  forms.fillForm(form(), state.type, obj);
  $('#form-title').textContent = editing ? `Edit listener ${obj.name}` : 'New listener';
  $('#form-id').textContent = editing ? `id ${obj.id}` : '';
  $('#form-submit').textContent = editing ? 'Save changes' : 'Create listener';
  $('#form-submit').disabled = false;
  $('#form-delete').hidden = !editing;
  $('#form-summary').hidden = true;
  $('#form-stale').hidden = true;
  addTlsModeHint();
  showView('form-view');
  document.title = `${editing ? `Edit ${obj.name}` : 'New listener'} — Gatehouse`;
}

/** Under the TLS group: what a client will meet with the boxes as they are ticked now. */
function addTlsModeHint() {
  const group = $('#g-tls');
  if (!group || !$('#f-useTls') || !$('#f-tlsImplicit')) return;
  group.querySelector('legend').after(el('p', { class: 'mode-hint', id: 'tls-mode-hint', 'aria-live': 'polite' }));
  updateTlsModeHint();
}

function updateTlsModeHint() {
  const hint = $('#tls-mode-hint');
  if (!hint) return;
  const mode = tlsMode({ useTls: $('#f-useTls').checked, tlsImplicit: $('#f-tlsImplicit').checked, protocol: $('#f-protocol')?.value });
  const why = {
    plain: 'connections are not encrypted',
    STARTTLS: 'clients upgrade with the protocol\'s STARTTLS command',
    implicit: 'the TLS handshake comes first',
  }[mode];
  hint.textContent = `TLS mode: ${mode} — ${why}.`;
}

function checkStale() {
  const cur = state.listeners.get(state.editing);
  const banner = $('#form-stale');
  if (!cur) {
    $('#form-stale-text').textContent = 'This listener was deleted elsewhere.';
    $('#form-reload').hidden = true;
    $('#form-submit').disabled = true;
    banner.hidden = false;
  } else if (!sameListener(cur, state.editOriginal)) {
    $('#form-stale-text').textContent = 'This listener was changed elsewhere since you opened it.';
    $('#form-reload').hidden = false;
    banner.hidden = false;
  }
}

function reloadForm() {
  const cur = state.listeners.get(state.editing);
  if (!cur) return;
  state.editOriginal = cur;
  forms.clearErrors(form());
  forms.fillForm(form(), state.type, cur);
  updateTlsModeHint();
  $('#form-stale').hidden = true;
  $('#form-title').focus();
}

function showFormErrors(byField, rest) {
  const shown = forms.showErrors(form(), state.type, byField);
  const list = $('#form-summary-list');
  list.replaceChildren(...shown.map((s) => {
    const a = el('a', { href: `#${s.id}`, text: `${s.label}: ${s.message}` });
    a.addEventListener('click', (e) => {
      e.preventDefault();
      forms.focusField(form(), s.id);
    });
    return el('li', {}, a);
  }));
  $('#form-summary-text').textContent = rest || (shown.length > 1 ? 'Correct the fields marked below.' : 'Correct the field marked below.');
  $('#form-summary').hidden = false;
  if (shown.length) forms.focusField(form(), shown[0].id);
  else $('#form-summary').focus();
}

async function onSubmit(e) {
  e.preventDefault();
  const f = form();
  const id = state.editing;
  const editing = id !== null;
  forms.clearErrors(f);
  $('#form-summary').hidden = true;
  const { values, errors } = forms.readForm(f, state.type, state.editOriginal);
  if (Object.keys(errors).length) return showFormErrors(errors, null);
  if (editing && !Object.keys(values).length) {
    go('#/listeners', 'Nothing was changed.');
    return;
  }
  const submit = $('#form-submit');
  submit.disabled = true;
  f.setAttribute('aria-busy', 'true');
  try {
    const r = await api.call(`${TYPE}/set`, editing ? { update: { [id]: values } } : { create: { new1: values } });
    const err = editing ? r.notUpdated && r.notUpdated[id] : r.notCreated && r.notCreated.new1;
    if (err) {
      const { byField, rest } = forms.setErrorMessages(state.type, err);
      return showFormErrors(byField, rest);
    }
    const name = editing ? state.editOriginal.name : (r.created && r.created.new1 && r.created.new1.name) || values.name || '';
    state.editing = undefined;
    await refresh();
    go('#/listeners', editing ? `Saved listener ${name}.` : `Created listener ${name}.`);
  } catch (ex) {
    if (ex instanceof api.AuthError) return handleError(ex);
    showFormErrors({}, ex.message);
  } finally {
    submit.disabled = false;
    f.removeAttribute('aria-busy');
  }
}

// ---------- delete ----------

/** True when the listener serves the page being looked at (deleting it cuts this page off). */
function servesThisPage(o) {
  if (o.protocol !== 'http') return false;
  const port = location.port || (location.protocol === 'https:' ? '443' : '80');
  return (o.bind || []).some((b) => b.endsWith(`:${port}`));
}

async function confirmDelete(id) {
  const o = state.listeners.get(id);
  if (!o) return;
  const dialog = $('#confirm');
  $('#confirm-title').textContent = `Delete listener ${o.name}?`;
  $('#confirm-text').textContent = `It stops accepting connections on ${(o.bind || []).join(', ') || 'its addresses'} at once. Connections already open finish normally.`;
  const warn = $('#confirm-warning');
  warn.hidden = !servesThisPage(o);
  warn.textContent = 'This listener serves this page: after deleting it, reach the management API through another HTTP listener.';
  dialog.returnValue = '';
  dialog.showModal();
  await new Promise((resolve) => dialog.addEventListener('close', resolve, { once: true }));
  if (dialog.returnValue !== 'delete') return;
  try {
    const r = await api.call(`${TYPE}/set`, { destroy: [id] });
    const err = r.notDestroyed && r.notDestroyed[id];
    if (err) {
      pageError(`Listener ${o.name} was not deleted: ${err.description || err.type}`);
      return;
    }
    state.listeners.delete(id);
    if (state.editing === id) state.editing = undefined;
    go('#/listeners', `Deleted listener ${o.name}.`);
    refresh();
  } catch (ex) {
    handleError(ex);
  }
}

// ---------- routing and start-up ----------

function route() {
  if (!state.type) return;
  pageError('');
  const h = location.hash || '#/listeners';
  const m = h.match(/^#\/listeners\/(.+)$/);
  if (h === '#/listeners/new') openForm(null);
  else if (m) openForm(decodeURIComponent(m[1]));
  else {
    if (h !== '#/listeners') history.replaceState(null, '', '#/listeners');
    showList();
  }
  const title = $('#main .view:not([hidden]) h1');
  if (title) title.focus({ preventScroll: false });
}

function wire() {
  $('#signin-form').addEventListener('submit', onSignIn);
  $('#signout').addEventListener('click', onSignOut);
  form().addEventListener('submit', onSubmit);
  form().addEventListener('change', updateTlsModeHint);
  $('#form-reload').addEventListener('click', reloadForm);
  $('#form-delete').addEventListener('click', () => confirmDelete(state.editing));
  window.addEventListener('hashchange', () => {
    notice(state.flash);
    state.flash = '';
    route();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.type) loadStatus();
  });
}

async function boot() {
  wire();
  try {
    await start();
  } catch (e) {
    if (e instanceof api.AuthError) showSignIn('');
    else {
      showSignIn('');
      handleError(e);
    }
  }
}

boot();
