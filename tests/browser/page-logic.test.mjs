// The page's pure logic, run in Node without a browser: how SetErrors map to fields, how
// values are shown, how the push URL is built. The browser tests cover the rest.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setErrorMessages, formatValue } from '../../web/form.js';
import { eventSourceUrl } from '../../web/client.js';

const type = {
  properties: [
    { name: 'id', type: 'Id', mutability: 'serverSet' },
    { name: 'name', type: 'String', mutability: 'createOnly' },
    { name: 'bind', type: 'SocketAddr', list: true },
    { name: 'protocol', type: 'Enum', enum: [{ value: 'smtp', label: 'SMTP' }, { value: 'imap', label: 'IMAP4' }] },
    { name: 'socketTtl', type: 'UnsignedInt', nullable: true },
  ],
};

test('a SetError goes to each field it names', () => {
  const r = setErrorMessages(type, { type: 'invalidProperties', properties: ['socketTtl', 'bind'], description: 'bad' });
  assert.deepEqual(r, { byField: { socketTtl: 'bad', bind: 'bad' }, rest: null });
});

test('a JSON-pointer property ("bind/ADDR") counts as its property', () => {
  const r = setErrorMessages(type, { type: 'invalidProperties', properties: ['bind/127.0.0.1:25'], description: 'in use' });
  assert.deepEqual(r.byField, { bind: 'in use' });
});

test('alreadyExists without properties belongs to the name', () => {
  const r = setErrorMessages(type, { type: 'alreadyExists', existingId: 'x', description: 'taken' });
  assert.deepEqual(r, { byField: { name: 'taken' }, rest: null });
});

test('an error naming no field of the form is shown apart, with a readable text', () => {
  assert.deepEqual(setErrorMessages(type, { type: 'invalidProperties', properties: ['description'], description: 'unknown' }),
    { byField: {}, rest: 'unknown' });
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
