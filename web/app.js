// app: the Gatehouse console — sign-in, the navigation built from the schema, routing, the
// overview, and live refresh from the JMAP push stream. Every object type the server's
// schema describes gets its page (pages.js) without page code of its own. Routes live in
// the URL hash:
//   #/overview   #/<page>   #/<page>/new   #/<page>/<id>
// where <page> is the last segment of the type's navigation path ("Listeners" → listeners).

import * as api from './client.js';
import * as forms from './form.js';
import * as pages from './pages.js';
import { pagesFromSchema, sectionRank } from './model.js';

const { el } = forms;
const STATUS_EVERY_MS = 5000;
const DRAFT_KEY = 'gatehouse-draft';
const $ = (sel) => document.querySelector(sel);

const state = {
  types: null, // the schema's types; null while signed out
  me: null, // GET /api/me
  pages: [], // one per readable type: {slug, typeName, t, nav}
  session: null,
  events: null,
  reconnectTimer: null,
  statusTimer: null,
  seen: {}, // type → the state string of what the page shows
  flash: '',
  unmountOverview: null,
  signingIn: false,
};

// ---------- small helpers ----------

function showView(id) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== id;
}

export function notice(text) {
  $('#notice').textContent = text || ''; // always present, so screen readers announce it
}

export function pageError(text) {
  const n = $('#page-error');
  n.textContent = text || '';
}

/** Navigates to `hash` and shows `message` there. */
export function go(hash, message) {
  if (location.hash === hash) {
    route();
    notice(message);
  } else {
    state.flash = message;
    location.hash = hash;
  }
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

/** May the signed-in credential do `op` (Get, Query, Create, Update, Destroy) on type t? */
export function can(t, op) {
  const me = state.me;
  if (!me || !me.signedIn) return false;
  return Boolean(me.admin || (me.permissions || []).includes(`${t.permissionPrefix}${op}`));
}

// ---------- pages and navigation from the schema ----------

function renderNav(current) {
  const tree = { children: new Map() };
  for (const p of state.pages) {
    let node = tree;
    for (const seg of p.nav.slice(0, -1)) {
      if (!node.children.has(seg)) node.children.set(seg, { children: new Map(), pages: [] });
      node = node.children.get(seg);
    }
    (node.pages ||= []).push(p);
  }
  // Pages and sections of one level in SECTION_ORDER; within it, as the schema lists them.
  const list = (node) => {
    const items = [];
    for (const p of node.pages || []) {
      items.push({ rank: sectionRank(p.nav[p.nav.length - 1]), li: el('li', {}, el('a', { href: `#/${p.slug}`, 'aria-current': p === current ? 'page' : undefined, text: p.nav[p.nav.length - 1] })) });
    }
    for (const [name, child] of node.children) {
      items.push({ rank: sectionRank(name), li: el('li', { class: 'section' }, el('span', { class: 'section-name', text: name }), list(child)) });
    }
    items.sort((a, b) => a.rank - b.rank);
    return el('ul', {}, ...items.map((i) => i.li));
  };
  const root = list(tree);
  root.prepend(el('li', {}, el('a', { href: '#/overview', 'aria-current': current === 'overview' ? 'page' : undefined, text: 'Overview' })));
  $('#sections').replaceChildren(root);
}

/** The breadcrumb: the page's navigation path, then the object being looked at. */
export function setCrumbs(page, last) {
  const ol = $('#crumbs ol');
  const items = [];
  if (!page) items.push(el('li', {}, el('span', { 'aria-current': 'page', text: 'Overview' })));
  else {
    page.nav.slice(0, -1).forEach((s) => items.push(el('li', { text: s })));
    const name = page.nav[page.nav.length - 1];
    items.push(el('li', {}, last ? el('a', { href: `#/${page.slug}`, text: name }) : el('span', { 'aria-current': 'page', text: name })));
    if (last) items.push(el('li', {}, el('span', { 'aria-current': 'page', text: last })));
  }
  ol.replaceChildren(...items);
}

// ---------- signing in and out ----------

function saveDraft() {
  const d = pages.draft();
  if (d) sessionStorage.setItem(DRAFT_KEY, JSON.stringify(d));
}

export function takeDraft(hash) {
  const raw = sessionStorage.getItem(DRAFT_KEY);
  if (!raw) return null;
  try {
    const d = JSON.parse(raw);
    if (d.hash !== hash) return null;
    sessionStorage.removeItem(DRAFT_KEY);
    return d;
  } catch {
    sessionStorage.removeItem(DRAFT_KEY);
    return null;
  }
}

export function handleError(e) {
  if (e instanceof api.AuthError) {
    // Several requests in flight may fail together: the first one says why.
    if (state.types) {
      saveDraft();
      showSignIn(sessionStorage.getItem(DRAFT_KEY)
        ? 'Your session has ended. Sign in again: what you typed is kept and comes back after sign-in.'
        : 'Your session has ended. Sign in again.');
    } else if ($('#signin-view').hidden) showSignIn('');
    return;
  }
  console.error(e);
  pageError(e.message || String(e));
}

function showSignIn(message) {
  stopLive();
  leaveOverview();
  pages.leave();
  state.types = null;
  state.me = null;
  state.pages = [];
  state.session = null;
  state.seen = {};
  $('#crumbs').hidden = true;
  $('#menu').hidden = true;
  $('#signout').hidden = true;
  $('#whoami').hidden = true;
  setLive('');
  notice(message);
  pageError('');
  showView('signin-view');
  document.title = 'Sign in — Gatehouse';
  $('#secret').focus();
}

function signInBusy(busy) {
  state.signingIn = busy;
  const button = $('#signin-submit');
  button.disabled = busy;
  button.textContent = busy ? 'Signing in…' : 'Sign in';
  $('#signin-wait').textContent = busy ? 'Signing in… after several refused attempts the server waits a few seconds before answering.' : '';
  $('#signin-form').setAttribute('aria-busy', busy ? 'true' : 'false');
}

async function onSignIn(e) {
  e.preventDefault();
  if (state.signingIn) return;
  const input = $('#secret');
  const err = $('#signin-error');
  err.hidden = true;
  input.removeAttribute('aria-invalid');
  if (!input.value) {
    err.textContent = 'Enter the administrator secret or an API key.';
    err.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  signInBusy(true);
  try {
    await api.signIn(input.value);
    input.value = '';
    notice('');
    await start();
  } catch (ex) {
    if (ex instanceof api.AuthError) {
      err.textContent = 'That secret was not accepted. Check it and try again.';
    } else if (state.types) {
      err.textContent = `Signed in, but the console cannot be shown: ${ex.message}`;
      state.types = null;
    } else {
      err.textContent = ex.message;
    }
    err.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  } finally {
    signInBusy(false);
  }
}

async function onSignOut() {
  stopLive();
  sessionStorage.removeItem(DRAFT_KEY);
  try {
    await api.signOut();
  } catch (e) {
    pageError(e.message);
  }
  showSignIn('You are signed out.');
}

/** Loads what the console needs once signed in; AuthError means "not signed in". */
async function start() {
  const me = await api.getMe();
  if (!me || !me.signedIn) throw new api.AuthError('not signed in');
  const schema = await api.getSchema();
  const types = schema && schema.types;
  if (!types || !Object.keys(types).length) throw new api.ApiError('The server sent no schema.');
  state.types = types;
  state.me = me;
  state.pages = pagesFromSchema(types, (t) => can(t, 'Get'));
  if (!state.pages.length) {
    state.types = null;
    await api.signOut();
    throw new api.ApiError('Signed in, but nothing can be shown: this credential may not read anything (it holds no …Get permission).');
  }
  $('#crumbs').hidden = false;
  $('#menu').hidden = false;
  $('#signout').hidden = false;
  const who = $('#whoami');
  who.textContent = me.admin ? 'administrator' : `key ${me.username}`;
  who.hidden = false;
  fitMenu();
  if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/overview');
  route();
  startLive();
}

// ---------- live refresh ----------

function startLive() {
  stopLive();
  connectPush();
  state.statusTimer = setInterval(() => {
    if (document.visibilityState === 'visible') pages.tick();
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
  if (!state.types) return;
  const es = new EventSource(api.eventSourceUrl(state.session, '*', 'no', 30));
  state.events = es;
  setLive('connecting');
  es.addEventListener('open', () => {
    setLive('on');
    pages.changed(null); // catches up on anything missed while (re)connecting
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
        const me = await api.getMe();
        if (!me.signedIn) throw new api.AuthError('session ended');
        if (state.types && !state.events) connectPush();
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
    for (const [type, s] of Object.entries(account || {})) {
      if (state.seen[type] !== s) pages.changed(type, s);
    }
  }
}

/** Remembers the state of a type as the page shows it (push events that match are skipped). */
export function saw(type, s) {
  if (s) state.seen[type] = s;
}

// ---------- overview ----------

function leaveOverview() {
  const un = state.unmountOverview;
  state.unmountOverview = null;
  if (typeof un === 'function') {
    try {
      un();
    } catch (e) {
      console.error(e);
    }
  }
}

async function showOverview() {
  showView('overview-view');
  setCrumbs(null);
  document.title = 'Overview — Gatehouse';
  const host = $('#overview-host');
  host.replaceChildren(el('p', { class: 'muted', text: 'Loading the overview…' }));
  let mod;
  try {
    mod = await import('./overview.js');
  } catch {
    host.replaceChildren(el('p', { class: 'muted', text: 'Overview not available: this build of the console has no overview module.' }));
    return;
  }
  if ($('#overview-view').hidden) return; // the user moved on meanwhile
  host.replaceChildren();
  try {
    state.unmountOverview = mod.mount(host);
  } catch (e) {
    host.replaceChildren(el('p', { class: 'muted', text: `Overview not available: ${e.message}` }));
  }
}

// ---------- routing and start-up ----------

export function notFound(title, text, backHash, backText) {
  showView('notfound-view');
  $('#notfound-title').textContent = title;
  $('#notfound-text').textContent = text;
  const back = $('#notfound-back');
  back.href = backHash;
  back.textContent = backText;
  document.title = `${title} — Gatehouse`;
}

function focusHeading() {
  const title = $('#main .view:not([hidden]) h1');
  if (title) title.focus({ preventScroll: false });
}

async function route() {
  if (!state.types) return;
  pageError('');
  leaveOverview();
  pages.leave();
  const h = location.hash || '#/overview';
  const m = /^#\/([^/]+)(?:\/(.+))?$/.exec(h);
  const slug = m ? m[1] : 'overview';
  const page = state.pages.find((p) => p.slug === slug);
  renderNav(slug === 'overview' ? 'overview' : page);
  closeMenuOnPhone();
  if (slug === 'overview') {
    await showOverview();
  } else if (!page) {
    setCrumbs(null);
    notFound('Page not found', `There is no page "${decodeURIComponent(slug)}" in this console, or your credential may not read it.`, '#/overview', 'Go to the overview');
  } else {
    await pages.show(page, m[2] === undefined ? undefined : decodeURIComponent(m[2]));
  }
  focusHeading();
}

export function hashChanged() {
  notice(state.flash);
  state.flash = '';
  route();
}

/** On a wide screen the navigation stays open; on a phone it folds into "Menu". */
const wide = window.matchMedia('(min-width: 56rem)');
function fitMenu() {
  $('#menu').open = wide.matches;
}
function closeMenuOnPhone() {
  if (!wide.matches) $('#menu').open = false;
}

function wire() {
  $('#signin-form').addEventListener('submit', onSignIn);
  $('#signout').addEventListener('click', onSignOut);
  window.addEventListener('hashchange', hashChanged);
  wide.addEventListener('change', fitMenu);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.types) pages.tick();
  });
  pages.wire();
}

async function boot() {
  wire();
  try {
    await start();
  } catch (e) {
    showSignIn('');
    if (!(e instanceof api.AuthError)) handleError(e);
  }
}

boot();
