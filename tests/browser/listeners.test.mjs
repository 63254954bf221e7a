// Browser tests of the listeners page (and the console's sign-in, permissions and live refresh), in Debian's chromium driven by playwright-core,
// against a running daemon: GATEHOUSE_URL (its http listener) and GATEHOUSE_ADMIN_SECRET.
// run.sh starts the daemon and sets both. The tests run in order and share one page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, mkdirSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, 'artifacts');
const BASE = (process.env.GATEHOUSE_URL || '').replace(/\/$/, '');
const SECRET = process.env.GATEHOUSE_ADMIN_SECRET || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TYPE = 'x:NetworkListener';
const USING = ['urn:ietf:params:jmap:core', 'urn:stalwart:jmap'];
const T = { timeout: 60_000 };

let context;
let page;
let profile;
const pageErrors = [];

// ---------- helpers ----------

async function api(methodCalls) {
  const res = await fetch(`${BASE}/api`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${SECRET}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ using: USING, methodCalls }),
  });
  assert.equal(res.status, 200, `POST /api: ${res.status}`);
  return (await res.json()).methodResponses;
}

async function call(method, args) {
  const [[name, res]] = await api([[method, args, 'c']]);
  assert.equal(name, method, JSON.stringify(res));
  return res;
}

async function listenerByName(name) {
  const r = await call(`${TYPE}/get`, { ids: null });
  return r.list.find((l) => l.name === name);
}

async function createByApi(props) {
  const r = await call(`${TYPE}/set`, { create: { n: props } });
  assert.ok(r.created && r.created.n, JSON.stringify(r));
  return r.created.n.id;
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

/** `preferred` when it is free (for a readable screenshot), else any free port. */
function portOr(preferred) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(freePort()));
    s.listen(preferred, '127.0.0.1', () => s.close(() => resolve(preferred)));
  });
}

/** Resolves true when a TCP connection to 127.0.0.1:port is accepted, false when refused. */
function tcpConnects(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(3000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const shot = (name, opts = {}) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true, ...opts });
const row = (name) => page.locator(`#objects tbody tr[data-name="${name}"]`);

/** Clicks `button` and returns the arguments of the x:NetworkListener/set the page sends. */
async function setArgsOf(button) {
  const [req] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/api' && (r.postData() || '').includes(`${TYPE}/set`)),
    button.click(),
  ]);
  const body = JSON.parse(req.postData());
  assert.equal(req.headers()['x-gatehouse-csrf'], '1', 'the page sends the CSRF header');
  assert.deepEqual(body.using, USING);
  return body.methodCalls.find((c) => c[0] === `${TYPE}/set`)[1];
}

async function openList() {
  await page.goto(`${BASE}/#/listeners`);
  await page.locator('#list-title').waitFor();
}

async function waitLive() {
  await page.waitForFunction(() => document.documentElement.dataset.live === 'on', null, { timeout: 10_000 });
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
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(10_000);
  page.on('pageerror', (e) => pageErrors.push(e));
  // The page must never reach outside the daemon (no CDN, no fonts).
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.origin === new URL(BASE).origin || u.protocol === 'data:') return route.continue();
    pageErrors.push(new Error(`request outside the daemon: ${u.href}`));
    return route.abort();
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

// ---------- tests ----------

test('sign in: a wrong secret is refused, the right one opens the listeners page', T, async () => {
  await page.goto(`${BASE}/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await shot('01-sign-in');

  await page.getByLabel('Administrator secret or API key').fill('not-the-secret');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#signin-error').getByText('not accepted').waitFor();
  assert.equal(await page.locator('#secret').getAttribute('aria-invalid'), 'true');

  await page.getByLabel('Administrator secret or API key').fill(SECRET);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  assert.equal(new URL(page.url()).hash, '#/overview', 'the overview is the first page');
  await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Listeners' }).click();
  await page.getByRole('heading', { name: 'Listeners' }).waitFor();
  await row('http').waitFor();
  assert.match(await page.getByRole('navigation', { name: 'Breadcrumb' }).innerText(), /Settings\s*›?\s*Network\s*›?\s*Listeners/);

  const cookie = (await context.cookies(BASE)).find((c) => c.name === 'gh_session');
  assert.ok(cookie, 'the session cookie is set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.expires, -1, 'kept only for the browser session');
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  assert.ok(!stored.includes(SECRET), 'the secret is not kept by the page');
});

test('the cookie alone does not authorise API calls: the CSRF header is required', T, async () => {
  const r = await page.evaluate(async () => {
    const body = JSON.stringify({ using: ['urn:ietf:params:jmap:core', 'urn:stalwart:jmap'], methodCalls: [['Core/echo', {}, 'e']] });
    const bare = await fetch('/api', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    const marked = await fetch('/api', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Gatehouse-Csrf': '1' }, body });
    return [bare.status, marked.status];
  });
  assert.ok(r[0] === 401 || r[0] === 403, `without the header: ${r[0]}`);
  assert.equal(r[1], 200);
});

test('the form shows every field of the schema, grouped, with its default and rule', T, async () => {
  const res = await fetch(`${BASE}/api/schema`, { headers: { Authorization: `Bearer ${SECRET}` } });
  const type = (await res.json()).types[TYPE];
  await page.getByRole('link', { name: 'New network listener' }).click();
  await page.getByRole('heading', { name: 'New network listener' }).waitFor();
  const legends = await page.locator('#object-form legend').allInnerTexts();
  assert.deepEqual(legends, ['Listener', 'TLS', 'Proxy networks', 'Socket options']);
  for (const p of type.properties) {
    if (p.mutability === 'serverSet') continue;
    const field = page.locator(`.field[data-prop="${p.name}"]`);
    assert.equal(await field.count(), 1, `a field for ${p.name}`);
    const group = await field.evaluate((f) => f.closest('fieldset').querySelector('legend').textContent);
    assert.equal(group, p.group, `${p.name} is in group ${p.group}`);
    const help = await field.locator('.help').innerText();
    if ('default' in p) assert.match(help, /Default:/, `${p.name} shows its default`);
    if (p.rule) assert.ok(help.includes(p.rule), `${p.name} shows its rule`);
  }
  // Every control has a label a screen reader can announce.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('#object-form input, #object-form select, #object-form textarea')]
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-labelledby') && !c.getAttribute('aria-label'))
    .map((c) => c.id));
  assert.deepEqual(unlabelled, []);
  await shot('02-new-listener-form');
});

let smtpPort;
test('create a listener; its port accepts TCP connections', T, async () => {
  smtpPort = await freePort();
  await page.locator('#f-name').fill('web-smtp');
  await page.locator('#f-protocol').selectOption('smtp');
  await page.locator('#f-bind').fill(`127.0.0.1:${smtpPort}`);
  const args = await setArgsOf(page.getByRole('button', { name: 'Create network listener' }));
  assert.deepEqual(Object.values(args.create)[0], { name: 'web-smtp', bind: [`127.0.0.1:${smtpPort}`] },
    'a new listener sends only what differs from the defaults');
  await row('web-smtp').waitFor();
  await page.getByRole('status').getByText('Created network listener web-smtp').first().waitFor();
  assert.match(await row('web-smtp').innerText(), new RegExp(`127\\.0\\.0\\.1:${smtpPort}`));
  assert.match(await row('web-smtp').locator('td[data-label="TLS mode"]').innerText(), /STARTTLS/);
  assert.equal(await tcpConnects(smtpPort), true, 'connect to the new listener');
  const l = await listenerByName('web-smtp');
  assert.deepEqual(l.bind, [`127.0.0.1:${smtpPort}`]);
  assert.equal(l.protocol, 'smtp');
  await shot('03-created');
});

test('edit fields: the change reaches the server and the table', T, async () => {
  await page.getByRole('link', { name: 'Edit web-smtp' }).click();
  await page.getByRole('heading', { name: 'Edit network listener web-smtp' }).waitFor();
  assert.equal(await page.locator('#f-name').getAttribute('readonly'), '', 'name is set at create only');
  await page.locator('#f-maxConnections').fill('100');
  assert.match(await page.locator('#tls-mode-hint').innerText(), /STARTTLS/);
  await page.locator('#f-tlsImplicit').check();
  assert.match(await page.locator('#tls-mode-hint').innerText(), /implicit/, 'the TLS mode follows the boxes');
  const args = await setArgsOf(page.getByRole('button', { name: 'Save changes' }));
  assert.deepEqual(Object.values(args.update)[0], { maxConnections: 100, tlsImplicit: true }, 'an edit sends a patch of the changes');
  await page.getByRole('status').getByText('Saved network listener web-smtp').first().waitFor();
  await row('web-smtp').locator('td[data-label="TLS mode"]', { hasText: 'implicit' }).waitFor();
  const l = await listenerByName('web-smtp');
  assert.equal(l.maxConnections, 100);
  assert.equal(l.tlsImplicit, true);
  assert.equal(l.socketBacklog, 1024, 'fields not touched keep their values');
});

test('server errors are shown beside the field they concern', T, async () => {
  // A value under its minimum: socketTtl 0.
  await page.getByRole('link', { name: 'Edit web-smtp' }).click();
  await page.locator('#f-socketTtl').fill('0');
  await page.getByRole('button', { name: 'Save changes' }).click();
  const ttlError = page.locator('.field[data-prop="socketTtl"] .field-error');
  await ttlError.waitFor();
  assert.ok((await ttlError.innerText()).length > 3, 'the error says what is wrong');
  assert.equal(await page.locator('#f-socketTtl').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('.field-error:not([hidden])').count(), 1, 'only the field concerned is marked');
  assert.ok(await page.locator('#form-summary').isVisible(), 'a summary is announced');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-socketTtl', 'focus moves to the field');
  await shot('04-error-socketTtl');
  assert.equal((await listenerByName('web-smtp')).socketTtl ?? null, null, 'nothing was stored');

  // A bind address another listener holds.
  await page.getByRole('link', { name: 'Cancel' }).click();
  await page.getByRole('link', { name: 'New network listener' }).click();
  await page.locator('#f-name').fill('web-clash');
  await page.locator('#f-bind').fill(`127.0.0.1:${smtpPort}`);
  await page.getByRole('button', { name: 'Create network listener' }).click();
  const bindError = page.locator('.field[data-prop="bind"] .field-error');
  await bindError.waitFor();
  assert.equal(await page.locator('#f-bind').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('.field-error:not([hidden])').count(), 1);
  await shot('05-error-bind');
  assert.equal(await listenerByName('web-clash'), undefined, 'nothing was stored');

  // A name that is taken.
  await page.locator('#f-name').fill('web-smtp');
  await page.locator('#f-bind').fill(`127.0.0.1:${await freePort()}`);
  await page.getByRole('button', { name: 'Create network listener' }).click();
  await page.locator('.field[data-prop="name"] .field-error').waitFor();
  assert.ok(await page.locator('.field[data-prop="bind"] .field-error').isHidden(), 'the old bind error is gone');
  await page.getByRole('link', { name: 'Cancel' }).click();
  await page.locator('#list-title').waitFor();
});

test('a change made through the API appears without reloading the page', T, async () => {
  await openList();
  await waitLive();
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  const port = await freePort();
  const id = await createByApi({ name: 'from-api', protocol: 'imap', bind: [`127.0.0.1:${port}`] });
  await row('from-api').waitFor({ timeout: 10_000 });
  assert.match(await row('from-api').innerText(), /IMAP/);

  const port2 = await freePort();
  await call(`${TYPE}/set`, { update: { [id]: { bind: [`127.0.0.1:${port}`, `127.0.0.1:${port2}`], useTls: false } } });
  await row('from-api').getByText(`127.0.0.1:${port2}`).waitFor({ timeout: 10_000 });
  await row('from-api').locator('td[data-label="TLS mode"]', { hasText: 'plain' }).waitFor();

  await call(`${TYPE}/set`, { destroy: [id] });
  await row('from-api').waitFor({ state: 'detached', timeout: 10_000 });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
});

test('an edit form says when its listener changes elsewhere, and can load the new values', T, async () => {
  await openList();
  await waitLive();
  await page.getByRole('link', { name: 'Edit web-smtp' }).click();
  await page.getByRole('heading', { name: 'Edit network listener web-smtp' }).waitFor();
  assert.ok(await page.locator('#form-stale').isHidden());
  const { id } = await listenerByName('web-smtp');
  await call(`${TYPE}/set`, { update: { [id]: { socketBacklog: 77 } } });
  await page.locator('#form-stale').getByText('changed elsewhere').waitFor({ timeout: 10_000 });
  assert.equal(await page.locator('#f-socketBacklog').inputValue(), '1024', 'what the user sees is not overwritten');
  await page.getByRole('button', { name: 'Load the current values' }).click();
  assert.equal(await page.locator('#f-socketBacklog').inputValue(), '77');
  assert.ok(await page.locator('#form-stale').isHidden());
  await page.getByRole('link', { name: 'Cancel' }).click();
  await page.locator('#list-title').waitFor();
});

test('delete asks for confirmation; cancel keeps the listener, confirm removes it', T, async () => {
  // The listener serving this page carries a warning.
  await page.getByRole('button', { name: 'Delete http' }).click();
  await page.getByRole('dialog').getByText('serves this page').waitFor();
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'hidden' });
  assert.ok(await row('http').isVisible(), 'Escape cancels');

  await page.getByRole('button', { name: 'Delete web-smtp' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  assert.match(await dialog.innerText(), /web-smtp/);
  assert.ok(await dialog.getByText('serves this page').isHidden(), 'no warning for other listeners');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the safe choice has focus');
  await shot('06-confirm-delete', { fullPage: false });
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'hidden' });
  assert.ok(await row('web-smtp').isVisible(), 'cancel keeps it');
  assert.ok(await listenerByName('web-smtp'));

  await page.getByRole('button', { name: 'Delete web-smtp' }).click();
  await dialog.getByRole('button', { name: 'Delete network listener' }).click();
  await row('web-smtp').waitFor({ state: 'detached' });
  await page.getByRole('status').getByText('Deleted network listener web-smtp').first().waitFor();
  assert.equal(await listenerByName('web-smtp'), undefined);
  assert.equal(await tcpConnects(smtpPort), false, 'its port no longer accepts');
});

test('keyboard: the page can be used without a mouse', T, async () => {
  await openList();
  let found = false;
  for (let i = 0; i < 40 && !found; i++) {
    await page.keyboard.press('Tab');
    found = await page.evaluate(() => document.activeElement.id === 'new-object');
  }
  assert.ok(found, 'Tab reaches "New network listener"');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'the focused control shows a focus ring');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'New network listener' }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'form-title', 'focus moves to the new view');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-name', 'the first field comes next');
});

test('screenshots: the listeners page with a few listeners, wide and on a phone', T, async () => {
  const made = [
    { name: 'submission', protocol: 'smtp', bind: [`127.0.0.1:${await portOr(10587)}`] },
    { name: 'imaps', protocol: 'imap', tlsImplicit: true, bind: [`127.0.0.1:${await portOr(10993)}`, `[::1]:${await portOr(10993)}`] },
    { name: 'pop3', protocol: 'pop3', bind: [`127.0.0.1:${await portOr(10110)}`] },
    { name: 'lmtp', protocol: 'lmtp', useTls: false, bind: [`127.0.0.1:${await portOr(10024)}`] },
  ];
  for (const m of made) {
    try {
      await createByApi(m);
    } catch {
      // The port was taken meanwhile, or there is no IPv6 loopback here: any free port will do.
      m.bind = [`127.0.0.1:${await freePort()}`];
      await createByApi(m);
    }
  }
  const open = net.connect({ host: '127.0.0.1', port: Number(made[0].bind[0].split(':')[1]) });
  await new Promise((r) => open.once('connect', r));
  await openList();
  for (const m of made) await row(m.name).waitFor();
  await page.waitForTimeout(300);
  await page.setViewportSize({ width: 1200, height: 560 });
  await page.evaluate(() => document.activeElement?.blur());
  await page.mouse.move(0, 0);
  await page.screenshot({ path: join(ARTIFACTS, 'listeners.png') });
  if (process.env.GATEHOUSE_UPDATE_SCREENSHOT === '1') {
    copyFileSync(join(ARTIFACTS, 'listeners.png'), join(HERE, '..', '..', 'docs', 'screenshot.png'));
  }

  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: join(ARTIFACTS, 'listeners-dark.png') });
  await page.emulateMedia({ colorScheme: 'light' });

  await page.setViewportSize({ width: 390, height: 844 });
  await shot('phone-listeners');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  const rows = page.getByRole('table', { name: 'Listeners' }).getByRole('row');
  const all = (await call(`${TYPE}/get`, { ids: null })).list.length;
  assert.equal(await rows.count(), all + 1, 'the cards are still table rows to a screen reader');
  await page.getByRole('link', { name: 'Edit imaps' }).click();
  await page.getByRole('heading', { name: 'Edit network listener imaps' }).waitFor();
  await shot('phone-form');
  const formOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(formOverflow <= 0, `the form fits a phone (${formOverflow}px too wide)`);
  open.destroy();
  await page.setViewportSize({ width: 1280, height: 800 });
});

test('sign out ends the session', T, async () => {
  await openList();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  const status = await page.evaluate(async () => (await fetch('/api/schema', { headers: { 'X-Gatehouse-Csrf': '1' } })).status);
  assert.equal(status, 401);
  await page.reload();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
});

test('an API key that may not read listeners is told so at sign-in', T, async () => {
  const r = await call('x:ApiKey/set', { create: { k: { name: 'web-nothing', permissions: [] } } });
  const secret = r.created && r.created.k && r.created.k.secret;
  assert.ok(secret, JSON.stringify(r));
  await page.locator('#secret').fill(secret);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#signin-error').getByText('nothing can be shown').waitFor();
  assert.ok(await page.getByRole('heading', { name: 'Sign in' }).isVisible());
});

test('an API key without write permissions sees no New, Edit or Delete', T, async () => {
  const r = await call('x:ApiKey/set', { create: { k: { name: 'web-viewer', permissions: ['sysNetworkListenerGet', 'sysNetworkListenerQuery'] } } });
  const secret = r.created && r.created.k && r.created.k.secret;
  assert.ok(secret, JSON.stringify(r));
  await page.locator('#secret').fill(secret);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor(); // back on the page it was on
  const sections = page.getByRole('navigation', { name: 'Sections' });
  assert.equal(await sections.getByRole('link', { name: 'Certificates' }).count(), 0, 'pages the key may not read are not offered');
  await sections.getByRole('link', { name: 'Listeners' }).click();
  await row('http').waitFor();
  assert.equal(await page.getByRole('link', { name: /^New / }).count(), 0, 'no New');
  assert.equal(await page.getByRole('link', { name: 'Edit http' }).count(), 0, 'no Edit');
  assert.equal(await page.getByRole('button', { name: 'Delete http' }).count(), 0, 'no Delete');
  await page.getByRole('link', { name: 'View http' }).click();
  await page.locator('#form-readonly').waitFor();
  assert.ok(await page.locator('#form-submit').isHidden(), 'no Save');
  assert.ok(await page.locator('#form-delete').isHidden(), 'no Delete in the form');
  assert.equal(await page.locator('#f-maxConnections').isDisabled(), true, 'the fields are read-only');
  await page.goto(`${BASE}/#/listeners/new`);
  await page.getByRole('heading', { name: 'No permission to create' }).waitFor();
  assert.match(await page.locator('#notfound-text').innerText(), /sysNetworkListenerCreate/);
  await shot('07-api-key-read-only');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
});

test('when the session ends, the page asks to sign in again', T, async () => {
  await page.locator('#secret').fill(SECRET);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  await openList();
  await row('http').waitFor();
  await waitLive();
  await context.clearCookies(); // as after a daemon restart: the cookie no longer works
  const port = await freePort();
  await createByApi({ name: 'after-expiry', protocol: 'pop3', bind: [`127.0.0.1:${port}`] });
  await page.getByRole('heading', { name: 'Sign in' }).waitFor({ timeout: 10_000 });
  await page.getByRole('status').getByText('session has ended').waitFor();
});

test('the page raised no script errors and made no outside requests', () => {
  assert.deepEqual(pageErrors.map((e) => e.message), []);
});
