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
  const wrap = el('div', { class: `field${isCheck ? ' check' : ''}${(p.list && p.type === 'Enum') || p.type === 'Text' ? ' wide' : ''}`, 'data-prop': p.name });
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

/**
 * Turns a SetError into {property → message} for the fields it concerns, plus `rest` for a
 * message that concerns no field of the form.
 */
export function setErrorMessages(type, setError) {
  const known = new Set(type.properties.map((p) => p.name));
  const desc = setError.description || describeType(setError.type);
  let props = (setError.properties || []).map(baseProperty).filter((n) => known.has(n));
  if (!props.length && setError.type === 'alreadyExists' && known.has('name')) props = ['name'];
  const byField = {};
  for (const n of props) byField[n] = desc;
  return { byField, rest: props.length ? null : desc };
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
    err.textContent = msg;
    err.hidden = false;
    form.querySelector(`#${fieldId(p)}`)?.setAttribute('aria-invalid', 'true');
    err.closest('.field')?.classList.add('invalid');
    shown.push({ name: p.name, label: p.label || p.name, message: msg, id: fieldId(p) });
  }
  return shown;
}

/** Focuses a field's control (the first checkbox of a group). */
export function focusField(form, id) {
  const node = form.querySelector(`#${id}`);
  if (!node) return;
  const target = node.matches('input, select, textarea') ? node : node.querySelector('input, select, textarea');
  target?.focus();
}
