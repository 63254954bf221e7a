// form: builds an object's create/edit form from its schema (GET /api/schema), reads it
// back into JMAP values, and shows SetErrors beside the fields they name. Knows nothing
// about listeners: every field, label, default and rule comes from the schema.

const NUMBER_TYPES = new Set(['UnsignedInt']);

/** Makes an element: attributes (false/null/undefined ones left out), then children. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

const fieldId = (p) => `f-${p.name}`;
const errorId = (p) => `e-${p.name}`;
const helpId = (p) => `h-${p.name}`;

function enumLabel(p, value) {
  const e = (p.enum || []).find((x) => x.value === value);
  return e ? e.label : String(value);
}

/** A value shown to a person: "on", "none", "1m", "SMTP", "a, b". */
export function formatValue(p, v) {
  if (v === undefined || v === null) return 'none';
  if (Array.isArray(v)) return v.length ? v.map((x) => formatValue({ ...p, list: false }, x)).join(', ') : 'none';
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (p.type === 'Enum') return enumLabel(p, v);
  return String(v);
}

function ruleText(p) {
  if (p.rule) return p.rule;
  const parts = [];
  if (p.min !== undefined && p.max !== undefined) parts.push(`${p.min}–${p.max}`);
  else if (p.min !== undefined) parts.push(`at least ${p.min}`);
  else if (p.max !== undefined) parts.push(`at most ${p.max}`);
  if (p.minItems) parts.push(`at least ${p.minItems} item${p.minItems > 1 ? 's' : ''}`);
  return parts.join('; ');
}

function metaText(p, editing) {
  const parts = [];
  const emptyList = Array.isArray(p.default) && p.default.length === 0;
  if ('default' in p && !(p.required && emptyList)) parts.push(`Default: ${formatValue(p, p.default)}`);
  else if (p.nullable) parts.push('Default: none (the system default applies)');
  const rule = ruleText(p);
  if (rule) parts.push(`Rule: ${rule}`);
  if (p.list && p.type !== 'Enum') parts.push('One per line');
  if (p.mutability === 'createOnly' && !/create only/i.test(rule)) parts.push(editing ? 'Set at create only' : 'Cannot be changed later');
  if (p.mutability === 'writeOnly') parts.push('Never shown again once saved');
  return parts.join(' · ');
}

function control(p, editing) {
  const id = fieldId(p);
  const describedBy = `${helpId(p)} ${errorId(p)}`;
  const readOnly = editing && p.mutability === 'createOnly';
  if (p.type === 'Boolean' && !p.list) {
    return el('input', { type: 'checkbox', id, name: p.name, 'aria-describedby': describedBy, disabled: readOnly });
  }
  if (p.type === 'Enum' && p.list) {
    const box = el('div', { class: 'choices', id, role: 'group', 'aria-labelledby': `l-${p.name}`, 'aria-describedby': describedBy });
    for (const opt of p.enum || []) {
      const cid = `${id}-${opt.value}`;
      box.append(el('span', { class: 'choice' },
        el('input', { type: 'checkbox', id: cid, name: p.name, value: opt.value, disabled: readOnly }),
        el('label', { for: cid, text: opt.label })));
    }
    return box;
  }
  if (p.type === 'Enum') {
    const sel = el('select', { id, name: p.name, 'aria-describedby': describedBy, disabled: readOnly });
    if (p.nullable && !('default' in p)) sel.append(el('option', { value: '', text: '— none —' }));
    for (const opt of p.enum || []) sel.append(el('option', { value: opt.value, text: opt.label }));
    return sel;
  }
  if (p.list || p.type === 'Text') {
    return el('textarea', {
      id, name: p.name, rows: p.type === 'Text' ? 6 : 3, spellcheck: 'false', autocapitalize: 'off',
      'aria-describedby': describedBy, readonly: readOnly,
      placeholder: p.mutability === 'writeOnly' && editing ? 'Unchanged — type to replace' : undefined,
    });
  }
  return el('input', {
    type: p.mutability === 'writeOnly' ? 'password' : 'text',
    inputmode: NUMBER_TYPES.has(p.type) ? 'numeric' : undefined,
    id, name: p.name, spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off',
    'aria-describedby': describedBy, readonly: readOnly, maxlength: p.maxLength,
    placeholder: p.mutability === 'writeOnly' && editing ? 'Unchanged — type to replace' : undefined,
  });
}

function field(p, editing) {
  const isCheck = p.type === 'Boolean' && !p.list;
  const label = el('label', { id: `l-${p.name}`, for: p.type === 'Enum' && p.list ? undefined : fieldId(p) },
    el('span', { text: p.label || p.name }),
    p.required && !editing ? el('span', { class: 'req', text: ' (required)' }) : null);
  const code = el('code', { class: 'prop', text: p.name });
  const help = el('p', { class: 'help', id: helpId(p) },
    p.description ? el('span', { text: /[.!?]$/.test(p.description) ? `${p.description} ` : `${p.description}. ` }) : null,
    el('span', { class: 'meta', text: metaText(p, editing) }));
  const error = el('p', { class: 'field-error', id: errorId(p), hidden: true });
  const input = control(p, editing);
  const wrap = el('div', { class: `field${isCheck ? ' check' : ''}${(p.list && p.type === 'Enum') || p.type === 'Text' ? ' wide' : ''}`, 'data-prop': p.name, 'data-write-only': p.mutability === 'writeOnly' });
  if (isCheck) wrap.append(el('div', { class: 'check-row' }, input, label, code), help, error);
  else wrap.append(el('div', { class: 'label-row' }, label, code), help, input, error);
  return wrap;
}

/** Fills `form` with one fieldset per schema group; returns nothing. */
export function buildForm(form, type, editing) {
  const fields = form.querySelector('.fields-host');
  fields.replaceChildren();
  const props = type.properties.filter((p) => p.mutability !== 'serverSet');
  const groups = [...(type.groups || [])];
  for (const p of props) if (!groups.includes(p.group || 'Other')) groups.push(p.group || 'Other');
  for (const g of groups) {
    const inGroup = props.filter((p) => (p.group || 'Other') === g);
    if (!inGroup.length) continue;
    const gid = `g-${g.replace(/[^A-Za-z0-9]+/g, '-').toLowerCase()}`;
    const fs = el('fieldset', { class: 'group', id: gid }, el('legend', { text: g }));
    const grid = el('div', { class: 'fields' });
    for (const p of inGroup) grid.append(field(p, editing));
    fs.append(grid);
    fields.append(fs);
  }
}

/** Puts an object's values (or the defaults, for a new one) into the form. */
export function fillForm(form, type, obj) {
  for (const p of type.properties) {
    if (p.mutability === 'serverSet') continue;
    const v = obj ? obj[p.name] : p.default;
    if (p.type === 'Boolean' && !p.list) {
      form.querySelector(`#${fieldId(p)}`).checked = Boolean(v);
    } else if (p.type === 'Enum' && p.list) {
      const set = new Set(v || []);
      for (const cb of form.querySelectorAll(`#${fieldId(p)} input`)) cb.checked = set.has(cb.value);
    } else if (p.list) {
      const t = form.querySelector(`#${fieldId(p)}`);
      t.value = (v || []).join('\n');
      t.rows = Math.max(3, (v || []).length + 1);
    } else {
      const input = form.querySelector(`#${fieldId(p)}`);
      input.value = v === undefined || v === null || p.mutability === 'writeOnly' ? '' : String(v);
    }
  }
}

function readOne(form, p) {
  const node = form.querySelector(`#${fieldId(p)}`);
  if (p.type === 'Boolean' && !p.list) return { value: node.checked };
  if (p.type === 'Enum' && p.list) return { value: [...node.querySelectorAll('input:checked')].map((c) => c.value) };
  if (p.list) return { value: node.value.split(/[\s,]+/).filter(Boolean) };
  const text = node.value.trim();
  if (text === '') return { value: null, empty: true };
  if (NUMBER_TYPES.has(p.type)) {
    if (!/^\d+$/.test(text)) return { error: 'Enter a whole number, for example 1024.' };
    return { value: Number(text) };
  }
  return { value: p.type === 'Text' ? node.value : text };
}

function same(a, b) {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/**
 * Reads the form into JMAP values. For a new object: the properties that differ from
 * their defaults (and the required ones). For an edit: a patch of the changed ones.
 * Returns {values, errors} where errors maps property → message found before sending.
 */
export function readForm(form, type, original) {
  const values = {};
  const errors = {};
  for (const p of type.properties) {
    if (p.mutability === 'serverSet') continue;
    if (original && p.mutability === 'createOnly') continue;
    const r = readOne(form, p);
    if (r.error) {
      errors[p.name] = r.error;
      continue;
    }
    if (p.mutability === 'writeOnly') {
      if (!r.empty) values[p.name] = r.value;
      continue;
    }
    if (original) {
      if (!same(r.value, original[p.name])) values[p.name] = r.value;
    } else if (r.empty) {
      // left empty: the server picks the default (or derives the value, as for a name)
    } else if (p.required || !same(r.value, p.default)) {
      values[p.name] = r.value;
    }
  }
  return { values, errors };
}

/** The property a SetError names: "bind/127.0.0.1:25" → "bind". */
function baseProperty(name) {
  return String(name).split('/')[0];
}

const escapeRe = (t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Splits the server's description ("maxConnections: 0 is below …; socketTtl: 300 is above …")
 * into one message per property it names. Returns {parts: {prop → message}, other: text that
 * names no property}.
 */
export function splitDescription(type, desc) {
  const names = type.properties.map((p) => p.name).sort((a, b) => b.length - a.length);
  const re = new RegExp(`(?:^|; )(${names.map(escapeRe).join('|')})(?:/[^:;]*)?: `, 'g');
  const marks = [...String(desc || '').matchAll(re)].map((m) => ({ name: m[1], at: m.index, start: m.index + m[0].length }));
  const parts = {};
  let other = marks.length ? desc.slice(0, marks[0].at) : String(desc || '');
  marks.forEach((m, i) => {
    const text = desc.slice(m.start, i + 1 < marks.length ? marks[i + 1].at : undefined).trim();
    parts[m.name] = parts[m.name] ? `${parts[m.name]}; ${text}` : text;
  });
  other = other.replace(/;\s*$/, '').trim();
  return { parts, other };
}

/** Puts field labels in place of raw property names ("useTls" → "Use TLS") in a message. */
export function humanize(type, text) {
  let out = String(text);
  for (const p of type.properties) {
    if (!/[A-Z]/.test(p.name) || !p.label) continue; // plain words ("name") read fine as they are
    out = out.replace(new RegExp(`\\b${escapeRe(p.name)}\\b`, 'g'), `"${p.label}"`);
  }
  return out.charAt(0).toUpperCase() + out.slice(1);
}

/**
 * Turns a SetError into {property → message} for the fields it concerns, plus `rest` for a
 * message that concerns no field of the form. Each field gets only its own part of the
 * description, worded with labels rather than property names.
 */
export function setErrorMessages(type, setError) {
  const known = new Set(type.properties.map((p) => p.name));
  const desc = setError.description || describeType(setError.type);
  let props = [...new Set((setError.properties || []).map(baseProperty).filter((n) => known.has(n)))];
  if (!props.length && setError.type === 'alreadyExists' && known.has('name')) props = ['name'];
  const { parts, other } = splitDescription(type, desc);
  const byField = {};
  for (const n of props) byField[n] = humanize(type, parts[n] || other || desc);
  for (const [n, text] of Object.entries(parts)) if (!byField[n] && known.has(n)) byField[n] = humanize(type, text);
  const used = Object.keys(byField).length;
  return { byField, rest: used ? null : humanize(type, desc) };
}

/**
 * For a list typed one per line: the line a message is about ("entry 2", or a value the
 * message quotes), as {line (1-based), message reworded to name the line}; null when none.
 */
export function lineOfMessage(text, message) {
  const lines = String(text).split('\n');
  const entries = []; // entry n (1-based, as the server counts) → line index
  lines.forEach((l, i) => {
    for (const tok of l.split(/[\s,]+/).filter(Boolean)) entries.push(i);
  });
  const m = /^entry (\d+): /i.exec(message);
  if (m && entries[Number(m[1]) - 1] !== undefined) {
    const line = entries[Number(m[1]) - 1] + 1;
    return { line, message: `Line ${line} (${lines[line - 1].trim()}): ${message.slice(m[0].length)}` };
  }
  const hits = lines.map((l, i) => ({ l: l.trim(), i })).filter((x) => x.l && message.includes(x.l));
  if (!hits.length) return null;
  const hit = /listed twice/.test(message) && hits.length > 1 ? hits[1] : hits[0];
  return { line: hit.i + 1, message: `Line ${hit.i + 1}: ${message}` };
}

function describeType(t) {
  switch (t) {
    case 'invalidProperties': return 'A value is not valid.';
    case 'alreadyExists': return 'One with that name already exists.';
    case 'forbidden': return 'Your key does not have the permission for this change.';
    case 'notFound': return 'It no longer exists (it may have been deleted elsewhere).';
    case 'singleton': return 'This object cannot be created or deleted.';
    case 'tooLarge': return 'Too many values.';
    default: return `The server refused the change (${t}).`;
  }
}

/** Clears every field error. */
export function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error')) {
    e.hidden = true;
    e.textContent = '';
  }
  for (const f of form.querySelectorAll('[aria-invalid]')) f.removeAttribute('aria-invalid');
  for (const f of form.querySelectorAll('.field.invalid')) f.classList.remove('invalid');
  for (const f of form.querySelectorAll('[data-error-line]')) delete f.dataset.errorLine;
}

/**
 * Shows messages beside their fields. Returns the list of {name, label, message, id} for
 * an error summary, in form order.
 */
export function showErrors(form, type, byField) {
  const shown = [];
  for (const p of type.properties) {
    const msg = byField[p.name];
    if (!msg) continue;
    const err = form.querySelector(`#${errorId(p)}`);
    if (!err) continue;
    const control = form.querySelector(`#${fieldId(p)}`);
    let text = msg;
    if (p.list && p.type !== 'Enum' && control) {
      const at = lineOfMessage(control.value, msg);
      if (at) {
        text = at.message;
        control.dataset.errorLine = String(at.line);
      }
    }
    err.textContent = text;
    err.hidden = false;
    form.querySelector(`#${fieldId(p)}`)?.setAttribute('aria-invalid', 'true');
    err.closest('.field')?.classList.add('invalid');
    shown.push({ name: p.name, label: p.label || p.name, message: text, id: fieldId(p) });
  }
  return shown;
}

/** Focuses a field's control (the first checkbox of a group). */
export function focusField(form, id) {
  const node = form.querySelector(`#${id}`);
  if (!node) return;
  const target = node.matches('input, select, textarea') ? node : node.querySelector('input, select:not([disabled]), textarea');
  target?.focus();
  // A list error about one line selects that line, so the user sees which one it is.
  const line = Number(node.dataset.errorLine || 0);
  if (line && node.tagName === 'TEXTAREA') {
    const lines = node.value.split('\n');
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    node.setSelectionRange(start, start + (lines[line - 1] || '').length);
  }
}

/** The values typed into the form, by control id (never write-only fields: no secrets). */
export function snapshot(form) {
  const out = {};
  for (const c of form.querySelectorAll('input, select, textarea')) {
    if (!c.id || c.type === 'password' || c.closest('[data-write-only]')) continue;
    out[c.id] = c.type === 'checkbox' ? c.checked : c.value;
  }
  return out;
}

/** Puts a snapshot back. */
export function restore(form, snap) {
  for (const [id, v] of Object.entries(snap || {})) {
    const c = form.querySelector(`#${CSS.escape(id)}`);
    if (!c || c.disabled || c.readOnly) continue;
    if (c.type === 'checkbox') c.checked = Boolean(v);
    else c.value = v;
  }
}
