// The page's pure logic, run in Node without a browser: how SetErrors map to fields, how
// values are shown, how the push URL is built, pages from the schema, the list's filter,
// the certificate a handshake gets. The browser tests cover the rest.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setErrorMessages, formatValue, splitDescription, humanize, lineOfMessage } from '../../web/form.js';
import { pagesFromSchema, buildFilter, differences, certificateFor, servesThisPage, tlsMode } from '../../web/model.js';
import { eventSourceUrl } from '../../web/client.js';

const type = {
  properties: [
    { name: 'id', type: 'Id', mutability: 'serverSet' },
    { name: 'name', type: 'String', mutability: 'createOnly' },
    { name: 'bind', type: 'SocketAddr', list: true },
    { name: 'protocol', type: 'Enum', enum: [{ value: 'smtp', label: 'SMTP' }, { value: 'imap', label: 'IMAP4' }] },
    { name: 'socketTtl', type: 'UnsignedInt', nullable: true, label: 'Time to live' },
    { name: 'maxConnections', type: 'UnsignedInt', label: 'Max connections' },
    { name: 'tlsTimeout', type: 'Duration', label: 'TLS timeout' },
    { name: 'useTls', type: 'Boolean', label: 'Use TLS' },
    { name: 'overrideProxyTrustedNetworks', type: 'IpMask', list: true, label: 'Trusted proxy networks' },
  ],
};

test('a SetError goes to each field it names', () => {
  const r = setErrorMessages(type, { type: 'invalidProperties', properties: ['socketTtl', 'bind'], description: 'bad' });
  assert.deepEqual(r, { byField: { socketTtl: 'Bad', bind: 'Bad' }, rest: null });
});

test('a JSON-pointer property ("bind/ADDR") counts as its property', () => {
  const r = setErrorMessages(type, { type: 'invalidProperties', properties: ['bind/127.0.0.1:25'], description: 'in use' });
  assert.deepEqual(r.byField, { bind: 'In use' });
});

test('alreadyExists without properties belongs to the name', () => {
  const r = setErrorMessages(type, { type: 'alreadyExists', existingId: 'x', description: 'taken' });
  assert.deepEqual(r, { byField: { name: 'Taken' }, rest: null });
});

test('an error naming no field of the form is shown apart, with a readable text', () => {
  assert.deepEqual(setErrorMessages(type, { type: 'invalidProperties', properties: ['description'], description: 'unknown' }),
    { byField: {}, rest: 'Unknown' });
  const forbidden = setErrorMessages(type, { type: 'forbidden' });
  assert.deepEqual(forbidden.byField, {});
  assert.match(forbidden.rest, /permission/);
});

test('values are shown the way a person reads them', () => {
  const protocol = type.properties[3];
  assert.equal(formatValue(protocol, 'imap'), 'IMAP4');
  assert.equal(formatValue({ type: 'Boolean' }, true), 'on');
  assert.equal(formatValue({ type: 'Boolean' }, false), 'off');
  assert.equal(formatValue({ type: 'SocketAddr', list: true }, []), 'none');
  assert.equal(formatValue({ type: 'SocketAddr', list: true }, ['127.0.0.1:25', '[::1]:25']), '127.0.0.1:25, [::1]:25');
  assert.equal(formatValue({ type: 'UnsignedInt', nullable: true }, null), 'none');
  assert.equal(formatValue({ type: 'Enum', list: true, enum: protocol.enum }, ['smtp', 'imap']), 'SMTP, IMAP4');
});

test('the push URL is the session template, expanded, on the page\'s own origin', () => {
  globalThis.location = new URL('http://127.0.0.1:8080/#/listeners');
  const session = { eventSourceUrl: 'http://localhost:8080/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}' };
  assert.equal(eventSourceUrl(session, '*', 'no', 30), 'http://127.0.0.1:8080/jmap/eventsource/?types=*&closeafter=no&ping=30');
  assert.equal(eventSourceUrl(session, 'x:NetworkListener', 'state', 0),
    'http://127.0.0.1:8080/jmap/eventsource/?types=x%3ANetworkListener&closeafter=state&ping=0');
  assert.equal(eventSourceUrl({}, '*', 'no', 30), 'http://127.0.0.1:8080/jmap/eventsource/?types=*&closeafter=no&ping=30',
    'without a session it uses the usual endpoint');
});

test('several errors at once: each field gets only its own message, worded with labels', () => {
  const desc = 'maxConnections: 0 is below the minimum of 1; tlsTimeout: "5x" is not a duration: the unit must be ms, s, m, h or d; '
    + 'socketTtl: 300 is above the maximum of 255; overrideProxyTrustedNetworks: entry 1: 10.0.0.1/8 has host bits set';
  const r = setErrorMessages(type, { type: 'invalidProperties', properties: ['maxConnections', 'tlsTimeout', 'socketTtl', 'overrideProxyTrustedNetworks'], description: desc });
  assert.equal(r.rest, null);
  assert.deepEqual(r.byField, {
    maxConnections: '0 is below the minimum of 1',
    tlsTimeout: '"5x" is not a duration: the unit must be ms, s, m, h or d',
    socketTtl: '300 is above the maximum of 255',
    overrideProxyTrustedNetworks: 'Entry 1: 10.0.0.1/8 has host bits set',
  });
  assert.deepEqual(splitDescription(type, 'no property named here').parts, {});
  assert.equal(humanize(type, 'disabling both leaves none (or set useTls to false)'), 'Disabling both leaves none (or set "Use TLS" to false)');
});

test('a list error points at its line', () => {
  assert.deepEqual(lineOfMessage('127.0.0.1:25\n\n127.0.0.1:x', 'Entry 2: bad port'), { line: 3, message: 'Line 3 (127.0.0.1:x): bad port' });
  assert.deepEqual(lineOfMessage('127.0.0.1:25\n127.0.0.1:26', '127.0.0.1:26 is already bound by listener "a"'),
    { line: 2, message: 'Line 2: 127.0.0.1:26 is already bound by listener "a"' });
  assert.equal(lineOfMessage('127.0.0.1:25', 'at least 1 entry is required'), null);
});

test('pages come from the schema: navigation path, slug, and "Other" for a type without one', () => {
  const types = {
    'x:NetworkListener': { label: 'Network listener', nav: ['Settings', 'Network', 'Listeners'], permissionPrefix: 'sysNetworkListener' },
    'x:BlockedIp': { label: 'Blocked IP', nav: ['Settings', 'Security', 'Blocked IPs'], permissionPrefix: 'sysBlockedIp' },
    'x:New': { label: 'New thing', permissionPrefix: 'sysNew' },
    'x:SystemSettings': { label: 'System settings', nav: ['System settings'], singleton: true, permissionPrefix: 'sysSystemSettings' },
  };
  const pages = pagesFromSchema(types);
  const by = Object.fromEntries(pages.map((p) => [p.typeName, p]));
  assert.equal(by['x:NetworkListener'].slug, 'listeners');
  assert.equal(by['x:BlockedIp'].slug, 'blocked-ips');
  assert.deepEqual(by['x:New'].nav, ['Other', 'New thing']);
  assert.equal(by['x:SystemSettings'].slug, 'system-settings');
  assert.deepEqual(pagesFromSchema(types, (t) => t.permissionPrefix !== 'sysBlockedIp').map((p) => p.typeName).sort(),
    ['x:NetworkListener', 'x:New', 'x:SystemSettings'], 'types the credential may not read get no page');
});

test('the list filter is the server\'s /query filter', () => {
  const t = { properties: [{ name: 'name', filter: 'text' }, { name: 'protocol', filter: 'equals', type: 'Enum' }] };
  assert.equal(buildFilter(t, { text: '' }), null);
  assert.deepEqual(buildFilter(t, { text: ' smtp ' }), { name: 'smtp' });
  assert.deepEqual(buildFilter(t, { text: 'a', enums: { protocol: 'imap' } }), { operator: 'AND', conditions: [{ name: 'a' }, { protocol: 'imap' }] });
  const two = { properties: [{ name: 'name', filter: 'text' }, { name: 'address', filter: 'text' }] };
  assert.deepEqual(buildFilter(two, { text: 'x' }), { operator: 'OR', conditions: [{ name: 'x' }, { address: 'x' }] });
});

test('changed elsewhere: the fields that differ', () => {
  const diff = differences(type, { name: 'a', socketTtl: null, bind: ['1'] }, { name: 'a', socketTtl: 7, bind: ['1'] });
  assert.deepEqual(diff.map((p) => p.name), ['socketTtl']);
});

test('which certificate a handshake gets: exact name, wildcard, default, any', () => {
  const far = '2099-01-01T00:00:00Z';
  const past = '2000-01-01T00:00:00Z';
  const a = { name: 'a', subjectNames: ['mail.example.com'], isDefault: false, notBefore: past, notAfter: far };
  const w = { name: 'w', subjectNames: ['*.example.com'], isDefault: false, notBefore: past, notAfter: far };
  const d1 = { name: 'd1', subjectNames: ['old.test'], isDefault: true, notBefore: past, notAfter: far };
  const d2 = { name: 'd2', subjectNames: ['new.test'], isDefault: true, notBefore: past, notAfter: far };
  const certs = [a, w, d1, d2];
  assert.equal(certificateFor(certs, 'mail.example.com'), a);
  assert.equal(certificateFor(certs, 'MAIL.example.com.'), a, 'case and a final dot do not matter');
  assert.equal(certificateFor(certs, 'imap.example.com'), w);
  assert.equal(certificateFor(certs, 'x.imap.example.com'), d2, 'a wildcard covers one label only');
  assert.equal(certificateFor(certs, ''), d2, 'without SNI: the most recently created default');
  assert.equal(certificateFor([a, w], ''), a, 'no default: any, the first of equals');
});

test('listener facts: TLS mode and whether it serves this page', () => {
  assert.equal(tlsMode({ useTls: true, tlsImplicit: false, protocol: 'http' }), 'plain');
  assert.equal(tlsMode({ useTls: true, tlsImplicit: false, protocol: 'smtp' }), 'STARTTLS');
  assert.equal(tlsMode({ useTls: true, tlsImplicit: true, protocol: 'imap' }), 'implicit');
  const loc = { port: '8080', protocol: 'http:' };
  assert.equal(servesThisPage({ protocol: 'http', bind: ['127.0.0.1:8080'] }, loc), true);
  assert.equal(servesThisPage({ protocol: 'http', bind: ['127.0.0.1:8081'] }, loc), false);
  assert.equal(servesThisPage({ protocol: 'smtp', bind: ['127.0.0.1:8080'] }, loc), false);
});
