// Browser test of web/overview.js, the live charts per listener, in Debian's chromium driven
// by playwright-core, against a running daemon (GATEHOUSE_URL, GATEHOUSE_ADMIN_SECRET; run.sh
// sets both). A small test page on the daemon's origin imports /overview.js after signing in
// through POST /auth/session, while the test opens SMTP connections; the charts and their
// tables must show them. GATEHOUSE_UPDATE_SCREENSHOT=1 refreshes docs/overview.png.

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
const USING = ['urn:ietf:params:jmap:core', 'urn:stalwart:jmap'];
const T = { timeout: 90_000 };
const TEST_PAGE = `${BASE}/overview-test.html`;
const HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Overview</title><link rel="stylesheet" href="/style.css"></head>
<body><main id="main" style="padding:1rem"></main>
<script type="module">
  import { mount } from '/overview.js';
  window.unmountOverview = mount(document.getElementById('main'));
</script></body></html>`;

let context;
let page;
let profile;
let smtpPort;
let listenerId;
const pageErrors = [];
let statsRequests = 0;

async function call(method, args) {
  const res = await fetch(`${BASE}/api`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${SECRET}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ using: USING, methodCalls: [[method, args, 'c']] }),
  });
  assert.equal(res.status, 200);
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

/** One SMTP session: connect, read the greeting, QUIT. */
function smtpSession(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setTimeout(5000, () => s.destroy());
    s.once('data', () => s.end('QUIT\r\n'));
    s.on('close', resolve);
    s.on('error', resolve);
  });
}

/** Sessions for ms milliseconds, a few at a time with a pause between (bounded), at a rate
 * that swells and ebbs so the chart has a shape. */
async function traffic(ms) {
  const start = Date.now();
  let n = 0;
  while (Date.now() < start + ms && n < 3000) {
    const phase = Math.sin(((Date.now() - start) / 6000) * Math.PI);
    const batch = 2 + Math.round(6 * Math.abs(phase));
    await Promise.all(Array.from({ length: batch }, () => smtpSession(smtpPort)));
    n += batch;
    await new Promise((r) => setTimeout(r, 40));
  }
  return n;
}

before(async () => {
  assert.ok(BASE && SECRET, 'GATEHOUSE_URL and GATEHOUSE_ADMIN_SECRET must be set (run.sh)');
  mkdirSync(ARTIFACTS, { recursive: true });
  smtpPort = await freePort();
  const r = await call('x:NetworkListener/set', {
    create: { n: { name: 'mx-public', protocol: 'smtp', bind: [`127.0.0.1:${smtpPort}`], useTls: false } },
  });
  assert.ok(r.created?.n, JSON.stringify(r));
  listenerId = r.created.n.id;
  profile = mkdtempSync(join(tmpdir(), 'gatehouse-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (e) => pageErrors.push(e));
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.href === TEST_PAGE) return route.fulfill({ status: 200, contentType: 'text/html', body: HTML });
    if (u.pathname === '/api/stats') statsRequests++;
    if (u.origin === new URL(BASE).origin) return route.continue();
    pageErrors.push(new Error(`request outside the daemon: ${u.href}`));
    return route.abort();
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (listenerId) await call('x:NetworkListener/set', { destroy: [listenerId] }).catch(() => {});
});

const card = () => page.locator(`section[data-listener="${listenerId}"]`);

test('signed out, the overview says it cannot update', T, async () => {
  await page.goto(TEST_PAGE);
  await page.getByRole('status').filter({ hasText: 'Cannot update: signed out' }).waitFor();
});

test('signed in: a card per listener, with rates that follow the traffic', T, async () => {
  const res = await page.request.post(`${BASE}/auth/session`, { data: { secret: SECRET } });
  assert.equal(res.status(), 204);
  await page.goto(TEST_PAGE);
  await card().waitFor();
  assert.equal(await card().getByRole('heading').textContent(), 'mx-public');
  // two polls are needed for a rate; traffic runs over several polls
  const running = traffic(16000);
  await page.waitForFunction((id) => {
    const td = document.querySelector(`section[data-listener="${id}"] td[data-rate="accepted"]`);
    return td && parseFloat(td.textContent) > 0;
  }, listenerId, { timeout: 15_000 });
  await card().locator('path[data-series="accepted"]').waitFor(); // from the second rate on
  await page.waitForTimeout(9000); // a few more points, for the screenshot
  await page.screenshot({ path: join(ARTIFACTS, 'overview-1440.png'), fullPage: true });
  const sent = await running;
  assert.ok(sent >= 8, `only ${sent} sessions`);
  await page.waitForFunction(([id, n]) => {
    const td = document.querySelector(`section[data-listener="${id}"] td[data-total="accepted"]`);
    return td && Number(td.textContent.replace(/,/g, '')) >= n;
  }, [listenerId, sent], { timeout: 10_000 });
  for (const label of ['Connections', 'TLS handshakes', 'Hand-offs', 'Refusals', 'Bans'])
    await card().getByRole('rowheader', { name: label }).waitFor();
  // the chart is labelled for assistive technology by the card's heading
  const labelled = await card().locator('svg').getAttribute('aria-labelledby');
  assert.equal(await page.locator(`#${labelled}`).textContent(), 'mx-public');
  if (process.env.GATEHOUSE_UPDATE_SCREENSHOT === '1')
    copyFileSync(join(ARTIFACTS, 'overview-1440.png'), join(HERE, '..', '..', 'docs', 'overview.png'));
});

test('fits a 390 px screen without sideways scrolling', T, async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await card().waitFor();
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(wide <= 390, `scrollWidth ${wide}`);
  const box = await card().boundingBox();
  assert.ok(box.width <= 390 && box.width > 300, JSON.stringify(box));
  await page.screenshot({ path: join(ARTIFACTS, 'overview-390.png'), fullPage: true });
  await page.setViewportSize({ width: 1440, height: 900 });
});

test('dark mode draws in the dark palette', T, async () => {
  const stroke = () => card().locator('path[data-series="accepted"]').evaluate((p) => getComputedStyle(p).stroke);
  const light = await stroke();
  await page.emulateMedia({ colorScheme: 'dark' });
  const dark = await stroke();
  assert.notEqual(light, dark);
  const bg = await card().evaluate((c) => getComputedStyle(c).backgroundColor);
  assert.notEqual(bg, 'rgb(255, 255, 255)');
  await page.screenshot({ path: join(ARTIFACTS, 'overview-dark.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });
});

test('a removed listener leaves; unmount stops polling', T, async () => {
  await call('x:NetworkListener/set', { destroy: [listenerId] });
  listenerId = null;
  await page.waitForFunction(() => !document.querySelector('section[data-listener]') ||
    ![...document.querySelectorAll('section[data-listener] h3')].some((h) => h.textContent === 'mx-public'),
  null, { timeout: 10_000 });
  await page.evaluate(() => window.unmountOverview());
  assert.equal(await page.locator('.gh-ov').count(), 0);
  const before = statsRequests;
  await page.waitForTimeout(4500);
  assert.equal(statsRequests, before);
  assert.deepEqual(pageErrors.map(String), []);
});
