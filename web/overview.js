// overview: live charts per listener — connections, TLS handshakes, hand-offs, refusals and
// bans per second — computed from successive polls of GET /api/stats (cumulative counters,
// the same ones /metrics/prometheus sums). Plain SVG; every chart has a table beside it
// with the same numbers for screen readers and for reading exact values.
//
//   import { mount } from './overview.js';
//   const unmount = mount(document.querySelector('main'));   // later: unmount()

const POLL_MS = 2000;
const KEEP = 90; // points per series: three minutes at one poll every two seconds

// Each series: the counter in /api/stats, its label, and a dash pattern so the lines stay
// apart without colour.
const SERIES = [
  { key: 'accepted', label: 'Connections', dash: '' },
  { key: 'handshakes', label: 'TLS handshakes', dash: '6 3' },
  { key: 'handoffs', label: 'Hand-offs', dash: '2 3' },
  { key: 'refused', label: 'Refusals', dash: '8 3 2 3' },
  { key: 'bans', label: 'Bans', dash: '1 2' },
];

const STYLE = `
.gh-ov { display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(min(100%, 22rem), 1fr)); }
.gh-ov-head { grid-column: 1 / -1; display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: baseline; }
.gh-ov-head h2 { margin: 0; font-size: 1.25rem; }
.gh-ov-status { color: var(--muted, #57606a); font-size: .875rem; }
.gh-ov-card { background: var(--panel, #fff); color: var(--text, #1b1f24); border: 1px solid var(--line, #d5dae0);
  border-radius: var(--radius, 6px); padding: .75rem; min-width: 0; }
.gh-ov-card h3 { margin: 0 0 .25rem; font-size: 1rem; overflow-wrap: anywhere; }
.gh-ov-card .gh-ov-sub { color: var(--muted, #57606a); font-size: .8125rem; margin: 0 0 .5rem; }
.gh-ov-card svg { display: block; width: 100%; height: auto; }
.gh-ov-grid { stroke: var(--line, #d5dae0); stroke-width: 1; }
.gh-ov-axis { fill: var(--muted, #57606a); font-size: 10px; }
.gh-ov-line { fill: none; stroke-width: 2; vector-effect: non-scaling-stroke; }
.gh-ov-s0 { --c: #1f5fbf; } .gh-ov-s1 { --c: #8250df; } .gh-ov-s2 { --c: #1a7f37; }
.gh-ov-s3 { --c: #bc4c00; } .gh-ov-s4 { --c: #b42318; }
@media (prefers-color-scheme: dark) {
  .gh-ov-s0 { --c: #5b9cf5; } .gh-ov-s1 { --c: #b392f0; } .gh-ov-s2 { --c: #56d364; }
  .gh-ov-s3 { --c: #f0883e; } .gh-ov-s4 { --c: #ff7b72; }
}
.gh-ov-line { stroke: var(--c); }
.gh-ov-table { width: 100%; border-collapse: collapse; font-size: .8125rem; margin-top: .5rem; }
.gh-ov-table caption { text-align: left; color: var(--muted, #57606a); padding-bottom: .25rem; }
.gh-ov-table th, .gh-ov-table td { padding: .125rem .25rem; border-top: 1px solid var(--line, #d5dae0); }
.gh-ov-table th { text-align: left; font-weight: normal; }
.gh-ov-table thead th { color: var(--muted, #57606a); font-size: .75rem; }
.gh-ov-table thead th + th { text-align: right; }
.gh-ov-table td { text-align: right; font-variant-numeric: tabular-nums; }
.gh-ov-key { display: inline-block; width: 1.5rem; height: 0; vertical-align: middle; margin-right: .375rem;
  border-top: 2px solid var(--c); }
.gh-ov-key.d1 { border-top-style: dashed; } .gh-ov-key.d2, .gh-ov-key.d4 { border-top-style: dotted; }
.gh-ov-key.d3 { border-top-style: dashed; }
.gh-ov-empty { grid-column: 1 / -1; color: var(--muted, #57606a); }
`;

function injectStyle(doc) {
  if (doc.getElementById('gh-overview-style')) return;
  const s = doc.createElement('style');
  s.id = 'gh-overview-style';
  s.textContent = STYLE;
  doc.head.appendChild(s);
}

async function defaultFetch() {
  const res = await fetch('/api/stats', {
    credentials: 'same-origin',
    headers: { 'X-Gatehouse-Csrf': '1' },
    cache: 'no-store',
  });
  if (!res.ok) throw new Error(res.status === 401 ? 'signed out' : `HTTP ${res.status}`);
  return res.json();
}

/** Per-second rates between two polls of one listener; a counter that went down (a
 * restart) counts as zero. */
export function rates(prev, cur, seconds) {
  const out = {};
  for (const { key } of SERIES) {
    const d = (cur[key] ?? 0) - (prev[key] ?? 0);
    out[key] = seconds > 0 && d > 0 ? d / seconds : 0;
  }
  return out;
}

function fmt(v) {
  if (v === 0) return '0';
  if (v < 10) return v.toFixed(1);
  return Math.round(v).toLocaleString('en');
}

const SVG = 'http://www.w3.org/2000/svg';
const W = 320;
const H = 120;
const PAD_L = 40;
const PAD_B = 4;

function el(doc, name, attrs = {}, text) {
  const ns = name.startsWith('svg:');
  const e = ns ? doc.createElementNS(SVG, name.slice(4)) : doc.createElement(name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A nice upper bound for the y axis: 1, 2, 5 × 10^n. */
function ceiling(max) {
  if (max <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (max <= m * p) return m * p;
  return 10 * p;
}

function drawChart(doc, svg, history) {
  svg.replaceChildren();
  let max = 0;
  for (const point of history) for (const { key } of SERIES) max = Math.max(max, point[key]);
  const top = ceiling(max);
  const y = (v) => H - PAD_B - (v / top) * (H - PAD_B - 8);
  const x = (i) => PAD_L + (i / (KEEP - 1)) * (W - PAD_L - 2);
  for (const f of [0, 0.5, 1]) {
    const yy = y(top * f);
    svg.appendChild(el(doc, 'svg:line', { class: 'gh-ov-grid', x1: PAD_L, x2: W, y1: yy, y2: yy }));
    svg.appendChild(el(doc, 'svg:text', { class: 'gh-ov-axis', x: PAD_L - 4, y: yy + 3, 'text-anchor': 'end' },
      fmt(top * f)));
  }
  const offset = KEEP - history.length;
  SERIES.forEach(({ key, dash }, s) => {
    if (history.length < 2) return;
    const d = history.map((p, i) => `${i ? 'L' : 'M'}${x(offset + i).toFixed(1)},${y(p[key]).toFixed(1)}`).join('');
    const attrs = { class: `gh-ov-line gh-ov-s${s}`, d, 'data-series': key };
    if (dash) attrs['stroke-dasharray'] = dash;
    svg.appendChild(el(doc, 'svg:path', attrs));
  });
}

function makeCard(doc, id) {
  const card = el(doc, 'section', { class: 'gh-ov-card', 'data-listener': id });
  const title = el(doc, 'h3', { id: `gh-ov-t-${id}` });
  const sub = el(doc, 'p', { class: 'gh-ov-sub' });
  const svg = el(doc, 'svg:svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `gh-ov-t-${id}`,
    preserveAspectRatio: 'none',
  });
  const table = el(doc, 'table', { class: 'gh-ov-table' });
  table.appendChild(el(doc, 'caption', {}, 'Events per second over the last poll, and since start'));
  const thead = el(doc, 'thead');
  const hr = el(doc, 'tr');
  hr.append(el(doc, 'th', { scope: 'col' }, 'Event'), el(doc, 'th', { scope: 'col' }, 'Per second'),
    el(doc, 'th', { scope: 'col' }, 'Since start'));
  thead.appendChild(hr);
  table.appendChild(thead);
  const tbody = el(doc, 'tbody');
  const cells = {};
  SERIES.forEach(({ key, label }, s) => {
    const tr = el(doc, 'tr');
    const th = el(doc, 'th', { scope: 'row' });
    th.appendChild(el(doc, 'span', { class: `gh-ov-key gh-ov-s${s} d${s}`, 'aria-hidden': 'true' }));
    th.appendChild(doc.createTextNode(label));
    const rate = el(doc, 'td', { 'data-rate': key }, '0');
    const total = el(doc, 'td', { 'data-total': key }, '0');
    tr.append(th, rate, total);
    tbody.appendChild(tr);
    cells[key] = { rate, total };
  });
  table.appendChild(tbody);
  card.append(title, sub, svg, table);
  return { card, title, sub, svg, cells, history: [] };
}

/** Renders the overview into container and starts polling; returns the unmount function. */
export function mount(container, { fetchStats = defaultFetch, interval = POLL_MS } = {}) {
  const doc = container.ownerDocument;
  injectStyle(doc);
  const root = el(doc, 'div', { class: 'gh-ov' });
  const head = el(doc, 'div', { class: 'gh-ov-head' });
  head.appendChild(el(doc, 'h2', {}, 'Overview'));
  const status = el(doc, 'span', { class: 'gh-ov-status', role: 'status', 'aria-live': 'polite' }, 'Loading…');
  head.appendChild(status);
  root.appendChild(head);
  container.appendChild(root);

  const cards = new Map();
  let last = null;
  let timer = null;
  let stopped = false;

  function update(stats) {
    const seconds = last ? (stats.time - last.time) / 1000 : 0;
    const ids = Object.keys(stats.listeners).sort((a, b) =>
      stats.listeners[a].name.localeCompare(stats.listeners[b].name));
    for (const [id, c] of cards) {
      if (!stats.listeners[id]) {
        c.card.remove();
        cards.delete(id);
      }
    }
    for (const id of ids) {
      const cur = stats.listeners[id];
      let c = cards.get(id);
      if (!c) {
        c = makeCard(doc, id);
        cards.set(id, c);
      }
      root.appendChild(c.card); // keeps the cards in name order
      const prev = last && last.listeners[id];
      const r = prev ? rates(prev, cur, seconds) : null;
      if (r) {
        c.history.push(r);
        if (c.history.length > KEEP) c.history.shift();
      }
      c.title.textContent = cur.name;
      c.sub.textContent = `${cur.protocol} · ${cur.active} open now`;
      for (const { key } of SERIES) {
        c.cells[key].rate.textContent = r ? fmt(r[key]) : '–';
        c.cells[key].total.textContent = (cur[key] ?? 0).toLocaleString('en');
      }
      drawChart(doc, c.svg, c.history);
    }
    root.querySelector('.gh-ov-empty')?.remove();
    if (!ids.length) root.appendChild(el(doc, 'p', { class: 'gh-ov-empty' }, 'No listeners.'));
    last = stats;
    status.textContent = `Updated ${new Date(stats.time).toLocaleTimeString()}`;
  }

  async function poll() {
    try {
      const stats = await fetchStats();
      if (stopped) return;
      update(stats);
    } catch (e) {
      if (stopped) return;
      status.textContent = `Cannot update: ${e.message}`;
    }
    if (!stopped) timer = setTimeout(poll, interval);
  }
  poll();

  return function unmount() {
    stopped = true;
    clearTimeout(timer);
    root.remove();
  };
}
