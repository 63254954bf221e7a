// Browser tests of the console as a whole, in Debian's chromium driven by playwright-core,
// against the running daemon (GATEHOUSE_URL, GATEHOUSE_ADMIN_SECRET; run.sh sets both): a
// page for every type, the overview route, certificates, the once-shown secret, lists past
// one page, the defects a new user met (each with its test), accessibility with axe-core in
// light and dark, and the layout from 390 to 1440 px wide. The tests run in order.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, mkdirSync, rmSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, 'artifacts');
const BASE = (process.env.GATEHOUSE_URL || '').replace(/\/$/, '');
const SECRET = process.env.GATEHOUSE_ADMIN_SECRET || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const NL = 'x:NetworkListener';
const USING = ['urn:ietf:params:jmap:core', 'urn:stalwart:jmap'];
const T = { timeout: 90_000 };
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let context;
let page;
let profile;
const pageErrors = [];
const consoleErrors = [];

// ---------- helpers ----------

async function call(method, args, token = SECRET) {
  const res = await fetch(`${BASE}/api`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ using: USING, methodCalls: [[method, args, 'c']] }),
  });
  assert.equal(res.status, 200, `POST /api: ${res.status}`);
  const [[name, out]] = (await res.json()).methodResponses;
  assert.equal(name, method, JSON.stringify(out));
  return out;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const shot = (name, opts = {}) => page.screenshot({ path: join(ARTIFACTS, `console-${name}.png`), fullPage: true, ...opts });
const heading = (name) => page.getByRole('heading', { name, level: 1 });
const sections = () => page.getByRole('navigation', { name: 'Sections' });

async function signIn(secret = SECRET) {
  await page.locator('#secret').fill(secret);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

async function open(hash, title) {
  const url = `${BASE}/${hash}`;
  // Going to the URL the page is already on would keep the view as it is: start afresh.
  if (page.url() === url) await page.reload();
  else await page.goto(url);
  await heading(title).waitFor();
}

/** axe-core over the whole page; returns the violations as readable lines. */
async function axe(label) {
  // Evaluated over the DevTools protocol, so the page's Content-Security-Policy (scripts
  // from 'self' only) does not apply to it.
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(AXE);
  const v = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((x) => `${x.id}: ${x.help} — ${x.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`);
  });
  return v.map((line) => `${label}: ${line}`);
}

// ---------- set-up ----------

before(async () => {
  assert.ok(BASE && SECRET, 'GATEHOUSE_URL and GATEHOUSE_ADMIN_SECRET must be set (tests/browser/run.sh sets them)');
  mkdirSync(ARTIFACTS, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), 'gatehouse-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(10_000);
  page.on('pageerror', (e) => pageErrors.push(e));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.origin === new URL(BASE).origin || u.protocol === 'data:') return route.continue();
    pageErrors.push(new Error(`request outside the daemon: ${u.href}`));
    return route.abort();
  });
});

/** Removes what these tests made, so the tests that follow (and their screenshots) see a
 * daemon as they would alone. */
async function cleanUp() {
  for (const [type, keep] of [[NL, (o) => ['draft-kept', 'stale-one'].includes(o.name)],
    ['x:ApiKey', (o) => /^bulk-|^shown-once$/.test(o.name)], ['x:Destination', (o) => o.name === 'live-dest']]) {
    const ids = (await call(`${type}/get`, { ids: null })).list.filter(keep).map((o) => o.id);
    if (ids.length) await call(`${type}/set`, { destroy: ids });
  }
  await call('x:SystemSettings/set', { update: { singleton: { proxyTrustedNetworks: [] } } });
}

after(async () => {
  if (BASE && SECRET) await cleanUp().catch((e) => console.error(`clean-up: ${e.message}`));
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

// ---------- sign-in ----------

test('a fresh load logs no 401, and the sign-in page says where the secret comes from', T, async () => {
  const statuses = [];
  page.on('response', (r) => statuses.push(r.status()));
  await page.goto(`${BASE}/`);
  await heading('Sign in').waitFor();
  await page.waitForLoadState('networkidle');
  assert.ok(!statuses.includes(401), `responses: ${statuses.join(', ')}`);
  assert.deepEqual(consoleErrors.filter((e) => /401|Unauthorized/.test(e)), [], 'no 401 in the console');
  const text = await page.locator('#signin-view').innerText();
  assert.match(text, /printed once/);
  assert.match(text, /GATEHOUSE_ADMIN_SECRET/);
  assert.equal(await page.locator('#secret').getAttribute('aria-describedby'), 'signin-error secret-source');
});

test('"Signing in…" is shown while the server holds the answer back', T, async () => {
  // The server slows repeated failures down by several seconds; holding the answer here
  // makes the same wait without slowing the other tests.
  let release;
  const held = new Promise((r) => {
    release = r;
  });
  await page.route('**/auth/session', async (route) => {
    await held;
    await route.continue();
  });
  await page.locator('#secret').fill(SECRET);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const button = page.locator('#signin-submit');
  await page.waitForFunction(() => document.querySelector('#signin-submit').textContent === 'Signing in…');
  assert.equal(await button.isDisabled(), true, 'a second click cannot send the secret again');
  assert.match(await page.locator('#signin-wait').innerText(), /Signing in/);
  await shot('signing-in');
  release();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  await page.unroute('**/auth/session');
  assert.equal(await page.locator('#signin-wait').innerText(), '');
});

// ---------- pages from the schema ----------

test('sign-in opens the overview, whose module draws each listener from /api/stats', T, async () => {
  await heading('Overview').waitFor();
  assert.equal(new URL(page.url()).hash, '#/overview');
  await page.locator('#overview-host').getByText(/^Updated /).waitFor();
  await page.locator('#overview-host svg[role="img"]').first().waitFor();
  assert.match(await page.getByRole('navigation', { name: 'Breadcrumb' }).innerText(), /Overview/);
});

test('every type of the schema has its page, reached through its navigation path', T, async () => {
  const schema = await (await fetch(`${BASE}/api/schema`, { headers: { Authorization: `Bearer ${SECRET}` } })).json();
  const expected = {
    'x:NetworkListener': ['Settings', 'Network', 'Listeners'],
    'x:Destination': ['Settings', 'Network', 'Destinations'],
    'x:Certificate': ['Settings', 'TLS', 'Certificates'],
    'x:ApiKey': ['Settings', 'Authentication', 'API keys'],
    'x:SystemSettings': ['System settings'],
  };
  for (const [type, nav] of Object.entries(expected)) assert.deepEqual(schema.types[type].nav, nav, type);
  for (const [type, t] of Object.entries(schema.types)) {
    const label = t.nav[t.nav.length - 1];
    await sections().getByRole('link', { name: label, exact: true }).click();
    await heading(t.singleton ? t.label : label).waitFor();
    const crumbs = await page.getByRole('navigation', { name: 'Breadcrumb' }).innerText();
    assert.match(crumbs.replace(/\s+/g, ' '), new RegExp(t.nav.join('\\s*›?\\s*')), `${type}: breadcrumb ${crumbs}`);
    assert.equal(await sections().locator('[aria-current="page"]').innerText(), label);
    if (!t.singleton) assert.ok(await page.locator('#list-view').isVisible() && (await page.locator('#objects').count()) === 1, `${type} has a list`);
    else assert.ok(await page.locator('#object-form').isVisible(), `${type} has a form`);
  }
});

test('a type added to the schema gets a page with no page code; one without a path goes under Other', T, async () => {
  await page.route('**/api/schema', async (route) => {
    const res = await route.fetch();
    const body = await res.json();
    const base = body.types['x:Destination'];
    body.types['x:Widget'] = { ...base, name: 'Widget', label: 'Widget', permissionPrefix: 'sysWidget', nav: ['Settings', 'Security', 'Widgets'] };
    body.types['x:Gadget'] = { ...base, name: 'Gadget', label: 'Gadget', permissionPrefix: 'sysGadget' };
    delete body.types['x:Gadget'].nav;
    await route.fulfill({ response: res, json: body });
  });
  await page.goto(`${BASE}/#/overview`);
  await page.reload();
  await heading('Overview').waitFor();
  const security = sections().locator('li.section', { has: page.locator('.section-name', { hasText: 'Security' }) });
  await security.getByRole('link', { name: 'Widgets' }).waitFor();
  const other = sections().locator('li.section', { has: page.locator('.section-name', { hasText: 'Other' }) });
  await other.getByRole('link', { name: 'Gadget' }).waitFor();
  await security.getByRole('link', { name: 'Widgets' }).click();
  await heading('Widgets').waitFor();
  assert.equal(new URL(page.url()).hash, '#/widgets');
  await page.unroute('**/api/schema');
  await page.reload();
  await heading('Widgets').waitFor({ state: 'detached' });
});

test('a listener that does not exist gets a clear not-found page', T, async () => {
  await page.goto(`${BASE}/#/listeners`);
  await heading('Listeners').waitFor();
  await page.goto(`${BASE}/#/listeners/doesnotexist`);
  await heading('Network listener not found').waitFor();
  assert.match(await page.locator('#notfound-text').innerText(), /no network listener with id "doesnotexist"/);
  assert.equal(await page.locator('#page-error').innerText(), '', 'no empty error banner');
  assert.ok(await page.getByRole('link', { name: 'Back to listeners' }).isVisible());
  await page.goto(`${BASE}/#/nosuchpage`);
  await heading('Page not found').waitFor();
});

// ---------- the defects, each with its test ----------

test('several errors at once: each field shows its own message, once; the summary links to each', T, async () => {
  await open('#/listeners/new', 'New network listener');
  await page.locator('#f-bind').fill(`127.0.0.1:${await freePort()}`);
  await page.locator('#f-maxConnections').fill('0');
  await page.locator('#f-tlsTimeout').fill('5x');
  await page.locator('#f-socketTtl').fill('300');
  await page.locator('#f-overrideProxyTrustedNetworks').fill('10.0.0.1/8');
  await page.getByRole('button', { name: 'Create network listener' }).click();
  await page.locator('#form-summary').waitFor();
  const err = (p) => page.locator(`.field[data-prop="${p}"] .field-error`).innerText();
  const shown = {};
  for (const p of ['maxConnections', 'tlsTimeout', 'socketTtl', 'overrideProxyTrustedNetworks']) shown[p] = await err(p);
  assert.match(shown.maxConnections, /below the minimum of 1/);
  assert.match(shown.tlsTimeout, /not a duration/);
  assert.match(shown.socketTtl, /above the maximum of 255/);
  assert.match(shown.overrideProxyTrustedNetworks, /10\.0\.0\.1\/8/);
  for (const [p, text] of Object.entries(shown)) {
    for (const other of ['below the minimum', 'not a duration', 'above the maximum', '10.0.0.1']) {
      const mine = text.includes(other);
      const count = Object.values(shown).filter((t) => t.includes(other)).length;
      if (mine) assert.equal(count, 1, `"${other}" is shown at one field only (${p})`);
    }
    assert.ok(!/maxConnections|tlsTimeout|socketTtl|overrideProxyTrustedNetworks/.test(text), `${p}: no raw property names in "${text}"`);
  }
  assert.equal(await page.locator('.field-error:not([hidden])').count(), 4);
  const links = await page.locator('#form-summary-list a').allInnerTexts();
  assert.deepEqual([...links].sort(), ['Max connections', 'TLS timeout', 'Time to live', 'Trusted proxy networks'], 'one link per field, by its label');
  const summary = await page.locator('#form-summary').innerText();
  assert.ok(!summary.includes('below the minimum'), 'the summary does not repeat the messages');
  assert.match(summary, /4 fields need a change/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-maxConnections', 'focus on the first field in error');
  await shot('several-errors');
});

test('a bind error for entry 2 points at line 2', T, async () => {
  await open('#/listeners/new', 'New network listener');
  const port = await freePort();
  await page.locator('#f-bind').fill(`127.0.0.1:${port}\n127.0.0.1:99999`);
  await page.getByRole('button', { name: 'Create network listener' }).click();
  const error = page.locator('.field[data-prop="bind"] .field-error');
  await error.waitFor();
  assert.match(await error.innerText(), /^Line 2 \(127\.0\.0\.1:99999\)/);
  const sel = await page.evaluate(() => {
    const t = document.activeElement;
    return t.id === 'f-bind' ? t.value.slice(t.selectionStart, t.selectionEnd) : null;
  });
  assert.equal(sel, '127.0.0.1:99999', 'focus selects the line in error');
});

test('typed input survives the end of the session and comes back after sign-in', T, async () => {
  await open('#/listeners/new', 'New network listener');
  const port = await freePort();
  await page.locator('#f-name').fill('draft-kept');
  await page.locator('#f-bind').fill(`127.0.0.1:${port}`);
  await page.locator('#f-socketBacklog').fill('77');
  await page.locator('#f-useTls').uncheck();
  await context.clearCookies(); // as when the key is deleted or the daemon restarts
  await page.getByRole('button', { name: 'Create network listener' }).click();
  await heading('Sign in').waitFor();
  await page.getByRole('status').getByText('what you typed is kept').waitFor();
  await signIn();
  await heading('New network listener').waitFor();
  assert.equal(await page.locator('#f-name').inputValue(), 'draft-kept');
  assert.equal(await page.locator('#f-bind').inputValue(), `127.0.0.1:${port}`);
  assert.equal(await page.locator('#f-socketBacklog').inputValue(), '77');
  assert.equal(await page.locator('#f-useTls').isChecked(), false);
  await page.getByRole('status').getByText('What you typed before the session ended is back').waitFor();
  const stored = await page.evaluate(() => JSON.stringify({ ...sessionStorage }));
  assert.ok(!stored.includes('draft-kept'), 'the draft is dropped once restored');
  await page.getByRole('button', { name: 'Create network listener' }).click();
  await page.getByRole('status').getByText('Created network listener draft-kept').waitFor().catch(async (e) => {
    await shot('draft-failed');
    throw e;
  });
});

test('changing the listener that serves this page warns before saving', T, async () => {
  const list = await call(`${NL}/get`, { ids: null });
  const http = list.list.find((l) => l.name === 'http');
  await open(`#/listeners/${http.id}`, 'Edit network listener http');
  let sent = false;
  const watch = (r) => {
    if (r.method() === 'POST' && (r.postData() || '').includes(`${NL}/set`)) sent = true;
  };
  page.on('request', watch);
  await page.locator('#f-bind').fill(`127.0.0.1:${await freePort()}`);
  await page.getByRole('button', { name: 'Save changes' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByText('serves this page').waitFor();
  await shot('serving-listener-warning', { fullPage: false });
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'hidden' });
  assert.equal(sent, false, 'nothing is sent without confirmation');
  // implicit TLS on the plain listener serving the page cuts it off too
  await page.locator('#f-bind').fill(http.bind.join('\n'));
  await page.locator('#f-tlsImplicit').check();
  await page.getByRole('button', { name: 'Save changes' }).click();
  await dialog.getByText('implicit TLS').waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  page.off('request', watch);
  assert.equal(sent, false);
  // a harmless change asks nothing
  await page.locator('#f-tlsImplicit').uncheck();
  await page.locator('#f-socketBacklog').fill('2048');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByRole('status').getByText('Saved network listener http').waitFor();
});

test('"changed elsewhere" lists what differs and what "save anyway" overwrites', T, async () => {
  const port = await freePort();
  const r = await call(`${NL}/set`, { create: { n: { name: 'stale-one', bind: [`127.0.0.1:${port}`] } } });
  const id = r.created.n.id;
  await open(`#/listeners/${id}`, 'Edit network listener stale-one');
  await page.waitForFunction(() => document.documentElement.dataset.live === 'on');
  await page.locator('#f-maxConnections').fill('300');
  await call(`${NL}/set`, { update: { [id]: { maxConnections: 200, socketBacklog: 55 } } });
  const banner = page.locator('#form-stale');
  await banner.getByText('changed elsewhere').waitFor();
  const items = await page.locator('#form-stale-list li').allInnerTexts();
  assert.ok(items.some((t) => /Max connections: was 8192, now 200 — you changed it too/.test(t)), items.join(' | '));
  assert.ok(items.some((t) => /Backlog: was 1024, now 55/.test(t)), items.join(' | '));
  assert.match(await page.locator('#form-stale-save').innerText(), /replaces the other change to Max connections/);
  assert.equal(await page.locator('#form-submit').innerText(), 'Save anyway');
  await shot('changed-elsewhere');
  await page.locator('#form-submit').click();
  await page.getByRole('status').getByText('Saved network listener stale-one').waitFor();
  const after = (await call(`${NL}/get`, { ids: [id] })).list[0];
  assert.equal(after.maxConnections, 300, 'the user\'s value');
  assert.equal(after.socketBacklog, 55, 'the other change is kept');
});

// ---------- certificates, secrets, long lists ----------

test('certificates show subject, issuer, names, key type and expiry, never the key', T, async () => {
  await open('#/certificates', 'Certificates');
  const rowText = await page.locator('#objects tbody tr[data-name="self-signed"]').innerText();
  assert.match(rowText, /ECDSA P-256/);
  assert.match(rowText, /UTC/);
  await page.getByRole('link', { name: 'Edit self-signed' }).click();
  await heading('Edit certificate self-signed').waitFor();
  const details = await page.locator('.details').innerText();
  for (const label of ['Subject', 'Issuer', 'Names', 'Key type', 'Valid until', 'SHA-256 fingerprint']) assert.match(details, new RegExp(label));
  assert.match(details, /CN=/);
  assert.match(details, /ECDSA P-256/);
  const all = await page.evaluate(() => document.body.innerText + [...document.querySelectorAll('input, textarea')].map((i) => i.value).join('\n'));
  assert.ok(!all.includes('PRIVATE KEY'), 'the private key is never on the page');
  assert.equal(await page.locator('#f-privateKey').inputValue(), '');
  await shot('certificate');
});

test('the listener form says which certificate the listener serves', T, async () => {
  await open('#/listeners/new', 'New network listener');
  const hint = page.locator('#cert-hint');
  await hint.getByText('Without SNI').waitFor();
  assert.match(await hint.innerText(), /self-signed .*ECDSA P-256/);
  await page.locator('#f-useTls').uncheck();
  await hint.getByText('Without SNI').waitFor({ state: 'detached' });
});

test('an API key\'s secret is shown once after create, with a copy button, and never again', T, async () => {
  await open('#/api-keys/new', 'New API key');
  await page.locator('#f-name').fill('shown-once');
  await page.locator('#f-permissions-sysNetworkListenerGet').check();
  await page.getByRole('button', { name: 'Create API key' }).click();
  await heading('Copy the secret now').waitFor();
  const secret = await page.locator('#once-secret').inputValue();
  assert.match(secret, /^gh_/);
  await page.getByRole('button', { name: 'Copy secret' }).click();
  await page.getByText(/Copied\.|Ctrl\+C/).waitFor();
  const clip = await page.evaluate(() => navigator.clipboard.readText().catch(() => null));
  if (clip !== null) assert.equal(clip, secret);
  await shot('secret-once');
  const me = await (await fetch(`${BASE}/api/me`, { headers: { Authorization: `Bearer ${secret}` } })).json();
  assert.equal(me.username, 'shown-once', 'the secret shown works');
  await page.getByRole('link', { name: 'Done' }).click();
  await heading('API keys').waitFor();
  await page.getByRole('link', { name: 'Edit shown-once' }).click();
  await heading('Edit API key shown-once').waitFor();
  const text = await page.evaluate(() => document.body.innerText + [...document.querySelectorAll('input, textarea')].map((i) => i.value).join('\n'));
  assert.ok(!text.includes(secret), 'never shown again');
});

test('lists page past 100 entries, filter through the server and sort by column', T, async () => {
  const create = {};
  for (let i = 0; i < 105; i++) create[`k${i}`] = { name: `bulk-${String(i).padStart(3, '0')}`, permissions: [] };
  const r = await call('x:ApiKey/set', { create });
  assert.equal(Object.keys(r.created).length, 105);
  await open('#/api-keys', 'API keys');
  await page.locator('#page-info').getByText(/^1–100 of 10\d$/).waitFor();
  assert.equal(await page.locator('#objects tbody tr').count(), 100);
  const queries = [];
  page.on('request', (q) => {
    if ((q.postData() || '').includes('x:ApiKey/query')) queries.push(JSON.parse(q.postData()).methodCalls[0][1]);
  });
  await page.getByRole('button', { name: 'Next' }).click();
  await page.locator('#page-info').getByText(/^101–10\d of 10\d$/).waitFor();
  assert.equal(queries.at(-1).position, 100);
  await page.getByRole('button', { name: 'Previous' }).click();
  await page.locator('#page-info').getByText(/^1–100/).waitFor();

  await page.getByLabel('Filter by name').fill('bulk-01');
  await page.locator('#objects tbody tr').nth(9).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#objects tbody tr').length === 10);
  assert.deepEqual(queries.at(-1).filter, { name: 'bulk-01' }, 'the server filters');
  assert.ok(await page.locator('#pager').isHidden(), 'one page: no pager');

  const sortButton = page.locator('#objects thead button', { hasText: 'Name' });
  const nameHeader = page.locator('#objects thead th', { has: page.locator('button.sort', { hasText: 'Name' }) });
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'ascending');
  await sortButton.click();
  await page.waitForFunction(() => document.querySelector('#objects tbody tr')?.dataset.name === 'bulk-019');
  assert.deepEqual(queries.at(-1).sort, [{ property: 'name', isAscending: false }]);
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'descending');
  await page.getByLabel('Filter by name').fill('');
  await shot('api-keys-sorted');
});

test('live refresh works on every list, not only listeners', T, async () => {
  await open('#/destinations', 'Destinations');
  await page.waitForFunction(() => document.documentElement.dataset.live === 'on');
  await call('x:Destination/set', { create: { d: { name: 'live-dest', protocol: 'smtp', address: '127.0.0.1:2525' } } });
  await page.locator('#objects tbody tr[data-name="live-dest"]').waitFor();
});

test('the system settings singleton is a form; saving keeps you on it', T, async () => {
  await open('#/system-settings', 'System settings');
  assert.ok(await page.locator('#form-delete').isHidden());
  await page.locator('#f-proxyTrustedNetworks').fill('10.9.0.0/16');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByRole('status').getByText('Saved system settings').waitFor();
  const s = await call('x:SystemSettings/get', { ids: ['singleton'] });
  assert.deepEqual(s.list[0].proxyTrustedNetworks, ['10.9.0.0/16']);
});

// ---------- accessibility and layout ----------

const VIEWS = [
  ['#/overview', 'Overview'],
  ['#/listeners', 'Listeners'],
  ['#/listeners/new', 'New network listener'],
  ['#/destinations', 'Destinations'],
  ['#/certificates', 'Certificates'],
  ['#/api-keys', 'API keys'],
  ['#/api-keys/new', 'New API key'],
  ['#/system-settings', 'System settings'],
  ['#/listeners/doesnotexist', 'Network listener not found'],
];

test('axe-core finds no violations on any page, in light and in dark', T, async () => {
  const found = [];
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    for (const [hash, title] of VIEWS) {
      await open(hash, title);
      await page.waitForTimeout(150);
      found.push(...(await axe(`${scheme} ${hash}`)));
    }
    // with errors shown, the stale banner and the delete dialog
    await open('#/listeners/new', 'New network listener');
    await page.locator('#f-bind').fill('127.0.0.1:99999');
    await page.locator('#f-socketTtl').fill('300');
    await page.getByRole('button', { name: 'Create network listener' }).click();
    await page.locator('#form-summary').waitFor();
    found.push(...(await axe(`${scheme} form errors`)));
    await open('#/listeners', 'Listeners');
    await page.getByRole('button', { name: 'Delete stale-one' }).click();
    await page.getByRole('dialog').waitFor();
    found.push(...(await axe(`${scheme} delete dialog`)));
    await page.keyboard.press('Escape');
  }
  await page.emulateMedia({ colorScheme: 'light' });
  await page.goto(`${BASE}/#/overview`);
  assert.deepEqual(found, []);
});

test('from 390 to 1440 px wide: nothing scrolls sideways; on a phone the menu folds', T, async () => {
  for (const width of [390, 768, 1024, 1440]) {
    await page.setViewportSize({ width, height: 900 });
    for (const [hash, title] of VIEWS) {
      await open(hash, title);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${hash} at ${width}px: ${overflow}px too wide`);
    }
    const menuOpen = await page.locator('#menu').evaluate((d) => d.open);
    assert.equal(menuOpen, width >= 896, `${width}px: menu ${menuOpen ? 'open' : 'folded'}`);
    if (width === 390) {
      await open('#/certificates', 'Certificates');
      await shot('phone-certificates');
    }
  }
  await page.setViewportSize({ width: 390, height: 844 });
  await open('#/overview', 'Overview');
  await page.getByText('Menu', { exact: true }).click();
  await sections().getByRole('link', { name: 'API keys' }).click();
  await heading('API keys').waitFor();
  assert.equal(await page.locator('#menu').evaluate((d) => d.open), false, 'the menu folds again after choosing');
  await page.setViewportSize({ width: 1280, height: 800 });
});

test('keyboard only: Tab through the navigation to a page, Enter opens it', T, async () => {
  await open('#/overview', 'Overview');
  let found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await page.keyboard.press('Tab');
    found = await page.evaluate(() => document.activeElement.textContent === 'Certificates');
  }
  assert.ok(found, 'Tab reaches Certificates in the navigation');
  assert.notEqual(await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle), 'none', 'with a focus ring');
  await page.keyboard.press('Enter');
  await heading('Certificates').waitFor();
  await page.waitForFunction(() => document.activeElement.id === 'list-title'); // focus moves to the page heading
  // the sort buttons and the filter are reachable too
  let sort = false;
  for (let i = 0; i < 10 && !sort; i++) {
    await page.keyboard.press('Tab');
    sort = await page.evaluate(() => document.activeElement.classList.contains('sort'));
  }
  assert.ok(sort, 'a sortable column header is a button reached by Tab');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#objects thead th[aria-sort="descending"]'));
});

test('screenshot for the README: the listeners page', T, async () => {
  await page.setViewportSize({ width: 1280, height: 640 });
  await open('#/listeners', 'Listeners');
  await page.evaluate(() => document.activeElement?.blur());
  await page.mouse.move(0, 0);
  await page.screenshot({ path: join(ARTIFACTS, 'console.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: join(ARTIFACTS, 'console-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });
});

test('no script errors, no outside requests', () => {
  assert.deepEqual(pageErrors.map((e) => e.message), []);
});
