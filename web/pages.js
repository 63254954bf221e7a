// pages: the page of one object type, generated from its schema: for a collection a list
// (server-side filter, sort and paging through /query + /get), a create/edit form and
// delete; for a singleton its form. Also the once-shown secret after a create, and the
// few touches that make particular types clearer (a listener's TLS mode, live
// connections and the certificate it serves), kept in `extras` at the end.

import * as api from './client.js';
import * as forms from './form.js';
import { buildFilter, certificateFor, differences, enumFilterProps, servesThisPage, textFilterProps, tlsMode } from './model.js';
import { can, go, notice, pageError, handleError, saw, setCrumbs, notFound, takeDraft } from './app.js';

const { el } = forms;
const PAGE_SIZE = 100;
const $ = (sel) => document.querySelector(sel);
const form = () => $('#object-form');

/** What is on screen: {kind: 'list'|'form'|'secret', page, ...}; null when nothing. */
let view = null;
/** Per page: the list's filter, sort and position, kept while moving around. */
const listParams = new Map();
let reloadTimer = null;
/** Counts the views shown: an answer that arrives after the user moved on is dropped. */
let shown = 0;
let status = {};

const lower = (s) => String(s).charAt(0).toLowerCase() + String(s).slice(1);
/** What names an object to a person: its name, else its first list column (an address), else its id. */
const nameOf = (o, t) => {
  if (!o) return '';
  const first = t && (t.listColumns || [])[0];
  const v = o.name ?? (first ? o[first] : undefined) ?? o.id;
  return Array.isArray(v) ? v.join(', ') : String(v ?? '');
};
const propOf = (t, name) => t.properties.find((p) => p.name === name);

// ---------- entry points used by app.js ----------

export function wire() {
  form().addEventListener('submit', onSubmit);
  form().addEventListener('change', () => view?.page && extra(view.page)?.formChanged?.(view));
  $('#form-reload').addEventListener('click', reloadForm);
  $('#form-delete').addEventListener('click', () => view?.original && confirmDelete(view.page, view.original));
  $('#list-tools').addEventListener('submit', (e) => e.preventDefault());
  $('#list-filter').addEventListener('input', () => {
    const p = params(view.page);
    p.text = $('#list-filter').value;
    p.position = 0;
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => loadList(), 250);
  });
  $('#page-prev').addEventListener('click', () => turnPage(-1));
  $('#page-next').addEventListener('click', () => turnPage(1));
}

/** Leaves whatever is shown (timers, state). */
export function leave() {
  clearTimeout(reloadTimer);
  $('#secret-fields').replaceChildren(); // a once-shown secret leaves the page with its view
  view = null;
  shown++;
}

/** Shows page: its list (id undefined), a new object (id "new") or one object. */
export async function show(page, id) {
  const t = page.t;
  if (t.singleton) {
    if (id !== undefined) return notFound(`${t.label} has one page`, `${t.label} is a single object: it has no "${id}".`, `#/${page.slug}`, `Go to ${t.label}`);
    return openForm(page, 'singleton');
  }
  if (id === undefined) return showList(page);
  if (id === 'new') return openForm(page, null);
  return openForm(page, id);
}

/** A type changed (or, with type null, the stream reopened): refresh what shows it. */
export function changed(type, newState) {
  if (!view) return;
  if (type && type !== view.page.typeName && !(extra(view.page)?.watches || []).includes(type)) return;
  if (view.kind === 'list') {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => loadList(), 50);
  } else if (view.kind === 'form' && view.id !== null) {
    checkStale();
  }
  if (view.kind === 'form' && type && type !== view.page.typeName) extra(view.page)?.formChanged?.(view, true);
}

/** Every few seconds while visible: live counts and the like. */
export function tick() {
  if (view?.kind === 'list') extra(view.page)?.tick?.(view);
}

/** The form's typed values, to restore after a new sign-in; null when no form is open. */
export function draft() {
  if (view?.kind !== 'form' || view.readOnly) return null;
  return { hash: location.hash, values: forms.snapshot(form()) };
}

function params(page) {
  if (!listParams.has(page.slug)) listParams.set(page.slug, { text: '', enums: {}, sort: null, position: 0 });
  return listParams.get(page.slug);
}

// ---------- the list ----------

function defaultSort(t) {
  const name = propOf(t, 'name');
  return name && name.sortable ? { property: 'name', asc: true } : null;
}

function showList(page) {
  const t = page.t;
  view = { kind: 'list', page, rows: [], total: 0 };
  const label = page.nav[page.nav.length - 1];
  $('#list-title').textContent = label;
  $('#objects-caption').textContent = label;
  document.title = `${label} — Gatehouse`;
  setCrumbs(page);
  const newLink = $('#new-object');
  newLink.hidden = !can(t, 'Create');
  newLink.href = `#/${page.slug}/new`;
  newLink.textContent = `New ${lower(t.label)}`;
  $('#list-intro').textContent = extra(page)?.intro || `Every ${lower(t.label)} change applies at once, with no restart. The list follows changes made anywhere (another browser, the command line, the API).`;
  renderTools(page);
  renderHead(page);
  $('#objects tbody').replaceChildren();
  $('#empty').hidden = true;
  $('#pager').hidden = true;
  showViewOf('list-view');
  return loadList();
}

function showViewOf(id) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== id;
}

function renderTools(page) {
  const t = page.t;
  const p = params(page);
  const textProps = textFilterProps(t);
  const box = $('#list-filter');
  box.closest('.tool').hidden = !textProps.length;
  box.value = p.text || '';
  $('#list-filter-label').textContent = `Filter by ${textProps.map((q) => lower(q.label || q.name)).join(' or ')}`;
  const host = $('#list-tools .tool-enums');
  host.replaceChildren(...enumFilterProps(t).map((q) => {
    const id = `filter-${q.name}`;
    const sel = el('select', { id },
      el('option', { value: '', text: 'Any' }),
      ...(q.enum || []).map((e) => el('option', { value: e.value, text: e.label })));
    sel.value = p.enums[q.name] || '';
    sel.addEventListener('change', () => {
      p.enums[q.name] = sel.value;
      p.position = 0;
      loadList();
    });
    return el('div', { class: 'tool' }, el('label', { for: id, text: q.label || q.name }), sel);
  }));
  $('#list-tools').hidden = !textProps.length && !enumFilterProps(t).length;
}

function columnsOf(page) {
  const ex = extra(page);
  const cols = (page.t.listColumns || ['name']).map((name) => ({ name, p: propOf(page.t, name) })).filter((c) => c.p);
  if (!cols.length) cols.push({ name: 'id', p: propOf(page.t, 'id') || { name: 'id', label: 'Id' } });
  return ex?.columns ? ex.columns(cols) : cols;
}

function renderHead(page) {
  const p = params(page);
  const sort = p.sort || defaultSort(page.t);
  const tr = $('#objects thead tr');
  const ths = columnsOf(page).map((c) => {
    const label = c.label || c.p.label || c.name;
    const th = el('th', { role: 'columnheader', scope: 'col', class: c.num ? 'num' : undefined });
    if (c.p && c.p.sortable) {
      const active = sort && sort.property === c.name;
      th.setAttribute('aria-sort', active ? (sort.asc ? 'ascending' : 'descending') : 'none');
      const b = el('button', { type: 'button', class: 'sort', 'data-key': `sort:${c.name}` },
        el('span', { text: label }), el('span', { class: 'sort-mark', 'aria-hidden': 'true', text: active ? (sort.asc ? '▲' : '▼') : '' }));
      b.addEventListener('click', () => {
        p.sort = { property: c.name, asc: active ? !sort.asc : true };
        p.position = 0;
        renderHead(page);
        loadList();
        $(`[data-key="sort:${c.name}"]`)?.focus();
      });
      th.append(b);
    } else {
      th.textContent = label;
    }
    return th;
  });
  ths.push(el('th', { role: 'columnheader', scope: 'col' }, el('span', { class: 'visually-hidden', text: 'Actions' })));
  tr.replaceChildren(...ths);
}

/** Reads one page of the list: /query (filter, sort, position) and /get of its ids. */
async function loadList() {
  const v = view;
  if (!v || v.kind !== 'list') return;
  const { page } = v;
  const T = page.typeName;
  const p = params(page);
  const sort = p.sort || defaultSort(page.t);
  const q = { position: p.position, limit: PAGE_SIZE, calculateTotal: true };
  const filter = buildFilter(page.t, p);
  if (filter) q.filter = filter;
  if (sort) q.sort = [{ property: sort.property, isAscending: sort.asc }];
  try {
    let rows;
    let total;
    try {
      const rs = await api.jmap([
        [`${T}/query`, q, 'q'],
        [`${T}/get`, { '#ids': { resultOf: 'q', name: `${T}/query`, path: '/ids' } }, 'g'],
      ]);
      const qr = api.result(rs, 'q');
      const g = api.result(rs, 'g');
      const byId = new Map(g.list.map((o) => [o.id, o]));
      rows = qr.ids.map((id) => byId.get(id)).filter(Boolean);
      total = qr.total ?? rows.length;
      saw(T, g.state);
    } catch (e) {
      if (!(e instanceof api.MethodError) || e.type !== 'forbidden') throw e;
      // A key that may get but not query: everything, unfiltered, in one page.
      const g = await api.call(`${T}/get`, { ids: null });
      rows = g.list;
      total = rows.length;
      saw(T, g.state);
      notice('This key may read but not query: the list shows everything, without filter or paging.');
    }
    if (view !== v) return;
    if (rows.length === 0 && p.position > 0 && total > 0) {
      p.position = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
      return loadList();
    }
    v.rows = rows;
    v.total = total;
    renderRows(page);
    extra(page)?.tick?.(v);
  } catch (e) {
    handleError(e);
  }
}

function turnPage(dir) {
  const p = params(view.page);
  p.position = Math.max(0, p.position + dir * PAGE_SIZE);
  loadList().then(() => $('#list-title').focus());
}

function focusKey() {
  return document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : undefined;
}

function renderRows(page) {
  const key = focusKey();
  const tbody = $('#objects tbody');
  tbody.replaceChildren(...view.rows.map((o) => row(page, o)));
  const p = params(page);
  const filtered = Boolean(buildFilter(page.t, p));
  $('#empty').textContent = filtered ? 'Nothing matches the filter.' : `No ${lower(page.nav[page.nav.length - 1])} yet.`;
  $('#empty').hidden = view.rows.length > 0;
  $('#objects').closest('.table-wrap').hidden = view.rows.length === 0;
  const pager = $('#pager');
  pager.hidden = view.total <= PAGE_SIZE && p.position === 0;
  $('#page-info').textContent = view.rows.length ? `${p.position + 1}–${p.position + view.rows.length} of ${view.total}` : '';
  $('#page-prev').disabled = p.position === 0;
  $('#page-next').disabled = p.position + view.rows.length >= view.total;
  if (key) tbody.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

/** A cell's content: the value as a person reads it (lists one per line). */
function cellContent(c, o) {
  if (c.render) return c.render(o);
  const v = o[c.name];
  if (Array.isArray(v) && v.length && c.p.type !== 'Enum') {
    return el('ul', { class: 'values' }, ...v.map((x) => el('li', {}, el('code', { text: String(x) }))));
  }
  if (c.p.type === 'UTCDate' && v) return el('time', { datetime: v, text: v.replace('T', ' ').replace('Z', ' UTC') });
  return document.createTextNode(forms.formatValue(c.p, v));
}

function row(page, o) {
  const t = page.t;
  const href = `#/${page.slug}/${encodeURIComponent(o.id)}`;
  const name = nameOf(o, t);
  const cols = columnsOf(page);
  const cells = cols.map((c, i) => {
    const label = c.label || c.p.label || c.name;
    if (i === 0) return el('th', { role: 'rowheader', scope: 'row' }, el('a', { href, 'data-key': `open:${o.id}`, text: String(o[c.name] ?? o.id) }));
    return el('td', { role: 'cell', 'data-label': label, class: c.num ? `num ${c.class || ''}` : c.class }, cellContent(c, o));
  });
  const actions = el('td', { role: 'cell', class: 'row-actions' });
  const mayEdit = can(t, 'Update');
  actions.append(el('a', { href, class: 'button small quiet', 'data-key': `edit:${o.id}`, 'aria-label': `${mayEdit ? 'Edit' : 'View'} ${name}`, text: mayEdit ? 'Edit' : 'View' }));
  if (can(t, 'Destroy')) {
    const del = el('button', { type: 'button', class: 'button small danger', 'data-key': `delete:${o.id}`, 'aria-label': `Delete ${name}`, text: 'Delete' });
    del.addEventListener('click', () => confirmDelete(page, o));
    actions.append(del);
  }
  cells.push(actions);
  // Explicit roles keep the table a table for screen readers when the phone layout
  // turns its rows into cards (display: block drops the semantics in some browsers).
  return el('tr', { role: 'row', 'data-id': o.id, 'data-name': name }, ...cells);
}

// ---------- the form ----------

async function fetchOne(page, id) {
  const r = await api.call(`${page.typeName}/get`, { ids: [id] });
  saw(page.typeName, r.state);
  return r.list.find((o) => o.id === id) || null;
}

async function openForm(page, id) {
  const t = page.t;
  const editing = id !== null;
  let obj = null;
  const mine = shown;
  if (editing) {
    try {
      obj = await fetchOne(page, id);
    } catch (e) {
      return handleError(e);
    }
    if (mine !== shown) return;
    if (!obj) {
      setCrumbs(page, 'Not found');
      return notFound(`${t.label} not found`, `There is no ${lower(t.label)} with id "${id}". It may have been deleted, or the address is mistyped.`, `#/${page.slug}`, `Back to ${lower(page.nav[page.nav.length - 1])}`);
    }
  } else if (!can(t, 'Create')) {
    setCrumbs(page, 'New');
    return notFound(`No permission to create`, `Your credential may not create a ${lower(t.label)} (it lacks ${t.permissionPrefix}Create).`, `#/${page.slug}`, 'Back to the list');
  }
  const readOnly = editing ? !can(t, 'Update') : false;
  view = { kind: 'form', page, id, original: obj, readOnly };
  const f = form();
  forms.clearErrors(f);
  forms.buildForm(f, t, editing);
  forms.fillForm(f, t, obj);
  for (const fs of f.querySelectorAll('fieldset')) fs.disabled = readOnly;
  const title = t.singleton ? t.label : editing ? `${readOnly ? '' : 'Edit '}${readOnly ? t.label : lower(t.label)} ${nameOf(obj, t)}` : `New ${lower(t.label)}`;
  $('#form-title').textContent = title;
  $('#form-id').textContent = editing && !t.singleton ? `id ${obj.id}` : '';
  $('#form-submit').textContent = editing ? 'Save changes' : `Create ${lower(t.label)}`;
  $('#form-submit').hidden = readOnly;
  $('#form-submit').disabled = false;
  $('#form-readonly').hidden = !readOnly;
  $('#form-cancel').textContent = readOnly ? 'Back' : 'Cancel';
  $('#form-cancel').href = t.singleton ? '#/overview' : `#/${page.slug}`;
  $('#form-delete').hidden = !editing || t.singleton || !can(t, 'Destroy');
  $('#form-delete').textContent = `Delete ${lower(t.label)}…`;
  $('#form-summary').hidden = true;
  $('#form-stale').hidden = true;
  $('#form-summary-title').textContent = `The ${lower(t.label)} was not saved`;
  renderDetails(page, obj);
  setCrumbs(page, t.singleton ? null : editing ? nameOf(obj, t) : 'New');
  document.title = `${title} — Gatehouse`;
  showViewOf('form-view');
  extra(page)?.formOpened?.(view);
  const d = takeDraft(location.hash);
  if (d && !readOnly) {
    forms.restore(f, d.values);
    extra(page)?.formChanged?.(view);
    notice('What you typed before the session ended is back. Check it and save.');
  }
}

/** Values the server sets (a certificate's subject, names, expiry …), shown read-only. */
function renderDetails(page, obj) {
  const host = $('#form-extra');
  host.replaceChildren();
  if (!obj) return;
  const shown = page.t.properties.filter((p) => p.mutability === 'serverSet' && p.name !== 'id' && !p.returnedOnce);
  if (!shown.length) return;
  const dl = el('dl', { class: 'details' });
  for (const p of shown) {
    const v = obj[p.name];
    dl.append(el('dt', { text: p.label || p.name }),
      el('dd', { 'data-prop': p.name }, Array.isArray(v) ? el('ul', { class: 'values' }, ...v.map((x) => el('li', {}, el('code', { text: String(x) })))) : document.createTextNode(forms.formatValue(p, v))));
  }
  host.append(el('section', { class: 'group details-group', 'aria-labelledby': 'details-title' }, el('h2', { id: 'details-title', text: 'Details from the server' }), dl));
}

async function checkStale() {
  const v = view;
  let cur;
  try {
    cur = await fetchOne(v.page, v.id);
  } catch (e) {
    return handleError(e);
  }
  if (view !== v) return;
  v.current = cur;
  const t = v.page.t;
  const banner = $('#form-stale');
  const list = $('#form-stale-list');
  if (!cur) {
    $('#form-stale-text').textContent = `This ${lower(t.label)} was deleted elsewhere. It can no longer be saved.`;
    list.replaceChildren();
    $('#form-stale-save').textContent = '';
    $('#form-reload').hidden = true;
    $('#form-submit').disabled = true;
    banner.hidden = false;
    return;
  }
  const diff = differences(t, v.original, cur);
  if (!diff.length) {
    banner.hidden = true;
    return;
  }
  const mine = Object.keys(forms.readForm(form(), t, v.original).values);
  $('#form-stale-text').textContent = `This ${lower(t.label)} was changed elsewhere since you opened it:`;
  list.replaceChildren(...diff.map((p) => el('li', {},
    el('strong', { text: p.label || p.name }), document.createTextNode(`: was ${forms.formatValue(p, v.original[p.name])}, now ${forms.formatValue(p, cur[p.name])}`),
    mine.includes(p.name) ? el('span', { class: 'clash', text: ' — you changed it too' }) : null)));
  const clash = diff.filter((p) => mine.includes(p.name));
  $('#form-stale-save').textContent = clash.length
    ? `Save anyway sends only the fields you changed, and replaces the other change to ${clash.map((p) => p.label || p.name).join(', ')} with your value.`
    : 'Save anyway sends only the fields you changed; the other changes are kept.';
  $('#form-reload').hidden = false;
  if (!v.readOnly) $('#form-submit').textContent = 'Save anyway';
  banner.hidden = false;
}

function reloadForm() {
  const v = view;
  const cur = v.current;
  if (!cur) return;
  v.original = cur;
  forms.clearErrors(form());
  forms.fillForm(form(), v.page.t, cur);
  renderDetails(v.page, cur);
  extra(v.page)?.formChanged?.(v);
  $('#form-stale').hidden = true;
  $('#form-submit').textContent = 'Save changes';
  $('#form-title').focus();
}

function showFormErrors(byField, rest) {
  const t = view.page.t;
  const shown = forms.showErrors(form(), t, byField);
  const list = $('#form-summary-list');
  // The summary links to each field once; the message itself is read at the field.
  list.replaceChildren(...shown.map((s) => {
    const a = el('a', { href: `#${s.id}`, text: s.label });
    a.addEventListener('click', (e) => {
      e.preventDefault();
      forms.focusField(form(), s.id);
    });
    return el('li', {}, a);
  }));
  $('#form-summary-text').textContent = rest || (shown.length > 1 ? `${shown.length} fields need a change: the reason is given at each.` : 'One field needs a change: the reason is given at the field.');
  $('#form-summary').hidden = false;
  if (shown.length) forms.focusField(form(), shown[0].id);
  else $('#form-summary').focus();
}

/** Asks before a change that may cut this page off; resolves true to go on. */
function confirmDialog(title, text, warning, okText) {
  const dialog = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  const warn = $('#confirm-warning');
  warn.hidden = !warning;
  warn.textContent = warning || '';
  $('#confirm-ok').textContent = okText;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true }));
}

async function onSubmit(e) {
  e.preventDefault();
  const v = view;
  if (!v || v.kind !== 'form' || v.readOnly) return;
  const { page, id } = v;
  const t = page.t;
  const T = page.typeName;
  const f = form();
  const editing = id !== null;
  forms.clearErrors(f);
  $('#form-summary').hidden = true;
  const { values, errors } = forms.readForm(f, t, v.original);
  if (Object.keys(errors).length) return showFormErrors(errors, null);
  if (editing && !Object.keys(values).length) {
    go(t.singleton ? location.hash : `#/${page.slug}`, 'Nothing was changed.');
    return;
  }
  const warning = editing ? extra(page)?.updateWarning?.(v.original, values) : null;
  if (warning && !(await confirmDialog(`Save ${lower(t.label)} ${nameOf(v.original, t)}?`, 'Changes apply at once, before the server answers.', warning, 'Save anyway'))) return;
  const submit = $('#form-submit');
  submit.disabled = true;
  f.setAttribute('aria-busy', 'true');
  try {
    const r = await api.call(`${T}/set`, editing ? { update: { [id]: values } } : { create: { new1: values } });
    const err = editing ? r.notUpdated && r.notUpdated[id] : r.notCreated && r.notCreated.new1;
    if (err) {
      const { byField, rest } = forms.setErrorMessages(t, err);
      return showFormErrors(byField, rest);
    }
    saw(T, r.newState);
    const created = !editing && r.created && r.created.new1;
    const name = editing ? nameOf(v.original, t) : nameOf(created, t) || values.name || '';
    const once = t.properties.filter((p) => p.returnedOnce && created && created[p.name]);
    if (once.length) return showSecret(page, created, once);
    if (t.singleton) {
      await openForm(page, 'singleton');
      notice(`Saved ${lower(t.label)}.`);
      $('#form-title').focus();
      return;
    }
    go(`#/${page.slug}`, editing ? `Saved ${lower(t.label)} ${name}.` : `Created ${lower(t.label)} ${name}.`);
  } catch (ex) {
    if (ex instanceof api.AuthError) return handleError(ex);
    showFormErrors({}, ex.message);
  } finally {
    submit.disabled = false;
    f.removeAttribute('aria-busy');
  }
}

// ---------- the once-shown secret ----------

function showSecret(page, created, once) {
  const t = page.t;
  view = { kind: 'secret', page };
  $('#secret-intro').textContent = `${t.label} ${nameOf(created, t)} was created. Its ${once.map((p) => lower(p.label || p.name)).join(' and ')} ${once.length > 1 ? 'are' : 'is'} below.`;
  $('#secret-fields').replaceChildren(...once.map((p) => {
    const id = `once-${p.name}`;
    const input = el('input', { id, type: 'text', readonly: true, value: String(created[p.name]), spellcheck: 'false', autocomplete: 'off', class: 'secret-value' });
    const copied = el('span', { class: 'muted', role: 'status', 'aria-live': 'polite' });
    const button = el('button', { type: 'button', class: 'button', text: `Copy ${lower(p.label || p.name)}` });
    button.addEventListener('click', async () => {
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        copied.textContent = 'Copied.';
      } catch {
        copied.textContent = 'Copying was not allowed: the text is selected, press Ctrl+C (⌘C).';
      }
    });
    return el('div', { class: 'field secret-field' }, el('label', { for: id, text: p.label || p.name }), el('div', { class: 'copy-row' }, input, button), copied);
  }));
  $('#secret-done').href = `#/${page.slug}`;
  setCrumbs(page, nameOf(created, t));
  document.title = `Copy the secret — Gatehouse`;
  showViewOf('secret-view');
  $('#secret-title').focus();
}

// ---------- delete ----------

async function confirmDelete(page, o) {
  const t = page.t;
  const ex = extra(page);
  const ok = await confirmDialog(`Delete ${lower(t.label)} ${nameOf(o, t)}?`, ex?.deleteText?.(o) || 'It is removed at once; this cannot be undone.', ex?.deleteWarning?.(o), `Delete ${lower(t.label)}`);
  if (!ok) return;
  try {
    const r = await api.call(`${page.typeName}/set`, { destroy: [o.id] });
    const err = r.notDestroyed && r.notDestroyed[o.id];
    if (err) {
      pageError(`${t.label} ${nameOf(o, t)} was not deleted: ${forms.humanize(t, err.description || err.type)}`);
      return;
    }
    saw(page.typeName, r.newState);
    go(`#/${page.slug}`, `Deleted ${lower(t.label)} ${nameOf(o, t)}.`);
  } catch (e) {
    handleError(e);
  }
}

// ---------- what particular types add ----------

function extra(page) {
  return extras[page.typeName];
}

const extras = {
  'x:NetworkListener': {
    intro: 'Every listener runs live: changes apply before the server answers, with no restart. The table follows changes made anywhere (another browser, the command line, the API).',
    watches: ['x:Certificate'],
    columns(cols) {
      const out = cols.map((c) => (c.name === 'tlsImplicit'
        ? { name: 'tlsMode', label: 'TLS mode', p: { name: 'tlsMode' }, render: (o) => el('span', { class: `badge tls-${tlsMode(o).toLowerCase()}`, text: tlsMode(o) }) }
        : c));
      out.push({ name: 'live', label: 'Live connections', p: { name: 'live' }, num: true, class: 'live-count', render: (o) => document.createTextNode(liveText(o.id)) });
      return out;
    },
    async tick() {
      try {
        const s = await api.getStatus();
        status = (s && s.listeners) || {};
      } catch (e) {
        if (e instanceof api.AuthError) return handleError(e);
        status = {};
      }
      for (const tr of document.querySelectorAll('#objects tbody tr')) {
        const cell = tr.querySelector('.live-count');
        if (cell) cell.textContent = liveText(tr.dataset.id);
      }
    },
    deleteText: (o) => `It stops accepting connections on ${(o.bind || []).join(', ') || 'its addresses'} at once. Connections already open finish normally.`,
    deleteWarning: (o) => (servesThisPage(o) ? 'This listener serves this page: after deleting it, reach the management API through another HTTP listener.' : null),
    updateWarning(original, patch) {
      if (!servesThisPage(original)) return null;
      const after = { ...original, ...patch };
      for (const [k, val] of Object.entries(patch)) if (val === null) delete after[k];
      if (!servesThisPage(after)) {
        return `This listener serves this page: with these changes it no longer listens on port ${location.port || '80'} for HTTP, so this page will stop answering. Reach the management API through another HTTP listener afterwards.`;
      }
      if (tlsMode(after) === 'implicit' && tlsMode(original) !== 'implicit') {
        return 'This listener serves this page over plain HTTP: with implicit TLS it will answer only HTTPS, so this page will stop answering until you open it again with https://.';
      }
      return null;
    },
    formOpened(v) {
      const group = $('#g-tls');
      if (group && $('#f-useTls') && $('#f-tlsImplicit')) {
        group.querySelector('legend').after(
          el('p', { class: 'mode-hint', id: 'tls-mode-hint', 'aria-live': 'polite' }),
          el('div', { class: 'cert-hint', id: 'cert-hint' }));
      }
      v.certs = null;
      this.formChanged(v, true);
    },
    async formChanged(v, reloadCerts) {
      const hint = $('#tls-mode-hint');
      if (!hint) return;
      const mode = tlsMode({ useTls: $('#f-useTls').checked, tlsImplicit: $('#f-tlsImplicit').checked, protocol: $('#f-protocol')?.value });
      const why = {
        plain: 'connections are not encrypted',
        STARTTLS: 'clients upgrade with the protocol\'s STARTTLS command',
        implicit: 'the TLS handshake comes first',
      }[mode];
      hint.textContent = `TLS mode: ${mode} — ${why}.`;
      const box = $('#cert-hint');
      if (mode === 'plain') {
        box.replaceChildren();
        return;
      }
      const certType = 'x:Certificate';
      if (reloadCerts || !v.certs) {
        try {
          v.certs = (await api.call(`${certType}/get`, { ids: null })).list;
        } catch (e) {
          if (e instanceof api.AuthError) return handleError(e);
          v.certs = [];
          box.replaceChildren(el('p', { class: 'muted', text: 'Which certificate this listener serves cannot be shown: your credential may not read certificates.' }));
          return;
        }
      }
      renderCertHint(box, v.certs);
    },
  },
};

function liveText(id) {
  const s = status[id];
  return s && typeof s.live === 'number' ? String(s.live) : '—';
}

function certLine(c) {
  if (!c) return 'none';
  return `${c.name} (${(c.subjectNames || []).join(', ') || 'no names'}; ${c.keyType || 'key type unknown'}; valid until ${String(c.notAfter || '?').replace('T', ' ').replace('Z', ' UTC')})`;
}

function renderCertHint(box, certs) {
  if (!certs.length) {
    box.replaceChildren(el('p', { class: 'banner warn', text: 'There is no certificate: TLS handshakes on this listener will fail. Add one under Settings › TLS › Certificates.' }));
    return;
  }
  const fallback = certificateFor(certs, '');
  const named = [];
  for (const c of certs) {
    for (const n of c.subjectNames || []) {
      if (certificateFor(certs, n.startsWith('*.') ? `a.${n.slice(2)}` : n) === c) named.push({ n, c });
    }
  }
  box.replaceChildren(
    el('p', { class: 'cert-title', text: 'Certificate this listener serves (every TLS listener shares the certificate store):' }),
    el('ul', { class: 'values cert-list' },
      el('li', {}, el('strong', { text: 'Without SNI, or for a name no certificate lists: ' }), document.createTextNode(certLine(fallback))),
      ...named.map(({ n, c }) => el('li', {}, el('strong', { text: `SNI ${n}: ` }), document.createTextNode(c === fallback ? `${c.name} (the same)` : certLine(c))))),
    el('p', { class: 'muted small', text: 'A TLS 1.2 client that offers only ECDSA (or only RSA) suites gets a certificate of that key type when one matches as well.' }));
}
