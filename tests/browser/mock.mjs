// A small stand-in for the daemon's HTTP side, for working on the page without a build:
// serves web/, the cookie sign-in, GET /api/me, /api/schema and /api/status, /jmap/session, the
// EventSource and a subset of x:NetworkListener/get|set|changes (it really binds the
// listeners' addresses). The browser tests run against the real daemon, not this.
//
//   node tests/browser/mock.mjs [PORT]     (secret: $GATEHOUSE_ADMIN_SECRET or "secret")

import http from 'node:http';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');
const SECRET = process.env.GATEHOUSE_ADMIN_SECRET || 'secret';
const PORT = Number(process.argv[2] || 8099);
const TYPE = 'x:NetworkListener';

const enumOf = (pairs) => pairs.map(([value, label]) => ({ value, label }));
const PROTOCOLS = enumOf([['smtp', 'SMTP'], ['lmtp', 'LMTP'], ['http', 'HTTP'], ['imap', 'IMAP4'], ['pop3', 'POP3'], ['manageSieve', 'ManageSieve']]);
const SUITES = enumOf([
  ['tls13-aes-256-gcm-sha384', 'TLS1.3 AES256 GCM SHA384'], ['tls13-aes-128-gcm-sha256', 'TLS1.3 AES128 GCM SHA256'],
  ['tls13-chacha20-poly1305-sha256', 'TLS1.3 CHACHA20 POLY1305 SHA256'],
  ['tls-ecdhe-ecdsa-with-aes-256-gcm-sha384', 'ECDHE ECDSA AES256 GCM SHA384'],
  ['tls-ecdhe-ecdsa-with-aes-128-gcm-sha256', 'ECDHE ECDSA AES128 GCM SHA256'],
  ['tls-ecdhe-ecdsa-with-chacha20-poly1305-sha256', 'ECDHE ECDSA CHACHA20 POLY1305 SHA256'],
  ['tls-ecdhe-rsa-with-aes-256-gcm-sha384', 'ECDHE RSA AES256 GCM SHA384'],
  ['tls-ecdhe-rsa-with-aes-128-gcm-sha256', 'ECDHE RSA AES128 GCM SHA256'],
  ['tls-ecdhe-rsa-with-chacha20-poly1305-sha256', 'ECDHE RSA CHACHA20 POLY1305 SHA256'],
]);
const VERSIONS = enumOf([['tls12', 'TLS version 1.2'], ['tls13', 'TLS version 1.3']]);

const P = (name, type, group, label, description, extra = {}) => ({
  name, type, list: false, nullable: false, required: false, mutability: 'mutable', label, group, description, ...extra,
});
const PROPS = [
  P('id', 'Id', 'Listener', 'Id', 'Server-set identifier', { mutability: 'serverSet' }),
  P('name', 'String', 'Listener', 'Name', 'Unique identifier for the listener', { mutability: 'createOnly', rule: '1–64 of A-Za-z0-9._-; unique; derived from the protocol when empty', filter: 'text', sortable: true }),
  P('protocol', 'Enum', 'Listener', 'Protocol', 'The protocol used by the listener', { default: 'smtp', enum: PROTOCOLS, filter: 'equals', sortable: true }),
  P('bind', 'SocketAddr', 'Listener', 'Bind addresses', 'The addresses the listener will bind to', { list: true, required: true, default: [], minItems: 1, rule: 'IPv4:port or [IPv6]:port; at least one; no duplicates' }),
  P('maxConnections', 'UnsignedInt', 'Listener', 'Max connections', 'The maximum number of concurrent connections the listener will accept', { nullable: true, default: 8192, min: 1 }),
  P('useTls', 'Boolean', 'TLS', 'Use TLS', 'Whether to enable TLS for this listener', { default: true }),
  P('tlsImplicit', 'Boolean', 'TLS', 'Implicit TLS', 'Whether to use implicit TLS', { default: false }),
  P('tlsIgnoreClientOrder', 'Boolean', 'TLS', 'Ignore client order', "Whether to ignore the client's cipher order", { default: true }),
  P('tlsTimeout', 'Duration', 'TLS', 'Handshake timeout', 'TLS handshake timeout', { nullable: true, default: '1m', rule: '"500ms", "30s", "1m", "2h", "1d" or milliseconds; > 0' }),
  P('tlsDisableProtocols', 'Enum', 'TLS', 'Disabled protocols', 'Which TLS protocols to disable', { list: true, default: [], enum: VERSIONS, rule: 'not both' }),
  P('tlsDisableCipherSuites', 'Enum', 'TLS', 'Disabled cipher suites', 'Which cipher suites to disable', { list: true, default: [], enum: SUITES }),
  P('overrideProxyTrustedNetworks', 'IpMask', 'Proxy networks', 'Trusted proxy networks', 'Enable proxy protocol for connections from these networks', { list: true, default: [], rule: 'IP or CIDR; host bits zero' }),
  P('socketBacklog', 'UnsignedInt', 'Socket options', 'Backlog', 'The maximum number of incoming connections that can be pending in the backlog queue', { nullable: true, default: 1024, min: 1 }),
  P('socketNoDelay', 'Boolean', 'Socket options', 'No delay (TCP_NODELAY)', 'Whether the Nagle algorithm should be disabled for the socket', { default: true }),
  P('socketReuseAddress', 'Boolean', 'Socket options', 'Reuse address', 'Whether the socket can be bound to an address that is already in use by another socket', { default: true }),
  P('socketReusePort', 'Boolean', 'Socket options', 'Reuse port', 'Whether multiple sockets can be bound to the same address and port', { default: true }),
  P('socketReceiveBufferSize', 'UnsignedInt', 'Socket options', 'Receive buffer size', 'The size of the buffer used for receiving data', { nullable: true, min: 1 }),
  P('socketSendBufferSize', 'UnsignedInt', 'Socket options', 'Send buffer size', 'The size of the buffer used for sending data', { nullable: true, min: 1 }),
  P('socketTosV4', 'UnsignedInt', 'Socket options', 'TOS (IPv4)', 'The type of service (TOS) value for the socket', { nullable: true, min: 1, max: 255 }),
  P('socketTtl', 'UnsignedInt', 'Socket options', 'TTL', 'Time-to-live (TTL) value for the socket', { nullable: true, min: 1, max: 255 }),
];
const SCHEMA = {
  types: {
    [TYPE]: {
      name: 'NetworkListener', cliName: 'network-listener', label: 'Network listener', singleton: false,
      permissionPrefix: 'sysNetworkListener', nav: ['Settings', 'Network', 'Listeners'], groups: ['Listener', 'TLS', 'Proxy networks', 'Socket options'],
      listColumns: ['name', 'protocol', 'bind', 'tlsImplicit'], properties: PROPS,
    },
  },
};

// ---------- the store ----------

const listeners = new Map(); // id → object
const servers = new Map(); // id → [net.Server]
let stateNo = 0;
const log = []; // [{state, id, kind}]
let nextId = 1;
const sessions = new Set();
const streams = new Set();

function defaults() {
  const o = {};
  for (const p of PROPS) if (p.mutability !== 'serverSet') o[p.name] = 'default' in p ? structuredClone(p.default) : null;
  return o;
}

function bump(id, kind) {
  stateNo++;
  log.push({ state: stateNo, id, kind });
  const data = JSON.stringify({ '@type': 'StateChange', changed: { a: { [TYPE]: String(stateNo) } } });
  for (const s of streams) s.write(`event: state\nid: ${stateNo}\ndata: ${data}\n\n`);
}

const invalid = (prop, description) => ({ type: 'invalidProperties', properties: [prop], description });

function validate(o, isCreate) {
  const known = new Set(PROPS.map((p) => p.name));
  for (const k of Object.keys(o)) if (!known.has(k)) return invalid(k, `${k} is not a property of NetworkListener`);
  for (const p of PROPS) {
    const v = o[p.name];
    if (v === null || v === undefined) continue;
    if (p.list && !Array.isArray(v)) return invalid(p.name, `${p.name} must be a list`);
    if (p.type === 'UnsignedInt') {
      if (!Number.isInteger(v) || v < 0) return invalid(p.name, `${p.name} must be a whole number`);
      if (p.min !== undefined && v < p.min) return invalid(p.name, `${p.name} must be at least ${p.min}`);
      if (p.max !== undefined && v > p.max) return invalid(p.name, `${p.name} must be at most ${p.max}`);
    }
    if (p.type === 'Duration' && !/^\d+(ms|s|m|h|d)?$/.test(String(v))) return invalid(p.name, `${p.name}: "${v}" is not a duration such as 30s or 1m`);
  }
  if (!o.name || !/^[A-Za-z0-9._-]{1,64}$/.test(o.name)) return invalid('name', 'name must be 1–64 characters of A-Za-z0-9._-');
  if (!o.bind || o.bind.length === 0) return invalid('bind', 'bind needs at least one address');
  for (const b of o.bind) if (!/^(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d{1,5}$/.test(b)) return invalid('bind', `"${b}" is not IPv4:port or [IPv6]:port`);
  if (new Set(o.bind).size !== o.bind.length) return invalid('bind', 'bind has the same address twice');
  if ((o.tlsDisableProtocols || []).length >= 2) return invalid('tlsDisableProtocols', 'disabling both TLS 1.2 and 1.3 leaves no TLS version');
  return null;
}

function listenAll(binds) {
  return Promise.all(binds.map((b) => new Promise((resolve, reject) => {
    const m = b.match(/^\[?(.*?)\]?:(\d+)$/);
    const srv = net.createServer((sock) => {
      sock.on('error', () => {});
      sock.end('220 mock ESMTP\r\n');
    });
    srv.once('error', (e) => reject(new Error(`bind ${b}: ${e.code === 'EADDRINUSE' ? 'Address already in use' : e.message}`)));
    srv.listen({ host: m[1], port: Number(m[2]), exclusive: true }, () => resolve(srv));
  }))).catch(async (e) => {
    throw e;
  });
}

async function bindFor(id, binds) {
  const opened = [];
  for (const b of binds) {
    try {
      opened.push(...(await listenAll([b])));
    } catch (e) {
      for (const s of opened) s.close();
      return { error: invalid('bind', e.message) };
    }
  }
  return { servers: opened };
}

async function setListeners(args) {
  const res = { accountId: 'a', oldState: String(stateNo), created: null, updated: null, destroyed: null, notCreated: null, notUpdated: null, notDestroyed: null };
  for (const [cid, input] of Object.entries(args.create || {})) {
    const o = { ...defaults(), ...input };
    if (!input.name) {
      let n = o.protocol || 'smtp', i = 2;
      const taken = () => [...listeners.values()].some((l) => l.name.toLowerCase() === n.toLowerCase());
      while (taken()) n = `${o.protocol}-${i++}`;
      o.name = n;
    }
    let err = validate(o, true);
    if (!err && [...listeners.values()].some((l) => l.name.toLowerCase() === o.name.toLowerCase())) err = { type: 'alreadyExists', description: `a listener named ${o.name} exists` };
    if (!err) {
      const b = await bindFor(null, o.bind);
      if (b.error) err = b.error;
      else {
        const id = `L${nextId++}`;
        o.id = id;
        listeners.set(id, o);
        servers.set(id, b.servers);
        (res.created ||= {})[cid] = { id, name: o.name };
        bump(id, 'created');
        continue;
      }
    }
    (res.notCreated ||= {})[cid] = err;
  }
  for (const [id, patch] of Object.entries(args.update || {})) {
    const cur = listeners.get(id);
    if (!cur) {
      (res.notUpdated ||= {})[id] = { type: 'notFound' };
      continue;
    }
    if ('name' in patch && patch.name !== cur.name) {
      (res.notUpdated ||= {})[id] = invalid('name', 'name is set at create only');
      continue;
    }
    const next = { ...cur };
    for (const [k, v] of Object.entries(patch)) {
      const p = PROPS.find((x) => x.name === k);
      next[k] = v === null && p && 'default' in p ? structuredClone(p.default) : v;
    }
    let err = validate(next, false);
    let newServers = null;
    if (!err && JSON.stringify(next.bind) !== JSON.stringify(cur.bind)) {
      for (const s of servers.get(id)) s.close();
      const b = await bindFor(id, next.bind);
      if (b.error) {
        err = b.error;
        newServers = (await bindFor(id, cur.bind)).servers;
      } else newServers = b.servers;
      servers.set(id, newServers);
    }
    if (err) {
      (res.notUpdated ||= {})[id] = err;
      continue;
    }
    listeners.set(id, next);
    (res.updated ||= {})[id] = null;
    bump(id, 'updated');
  }
  for (const id of args.destroy || []) {
    if (!listeners.has(id)) {
      (res.notDestroyed ||= {})[id] = { type: 'notFound' };
      continue;
    }
    for (const s of servers.get(id)) s.close();
    listeners.delete(id);
    (res.destroyed ||= []).push(id);
    bump(id, 'destroyed');
  }
  res.newState = String(stateNo);
  return res;
}

async function method(name, args) {
  if (name === 'Core/echo') return args;
  if (name === `${TYPE}/get`) {
    const ids = args.ids === null || args.ids === undefined ? [...listeners.keys()] : args.ids;
    return { accountId: 'a', state: String(stateNo), list: ids.filter((i) => listeners.has(i)).map((i) => listeners.get(i)), notFound: ids.filter((i) => !listeners.has(i)) };
  }
  if (name === `${TYPE}/query`) {
    // name contains / protocol equals, sorted by name; enough for the page's list
    const f = args.filter || {};
    const conds = f.operator ? f.conditions : [f];
    let all = [...listeners.values()].filter((l) => conds.every((c) => (!c.name || l.name.toLowerCase().includes(c.name.toLowerCase())) && (!c.protocol || l.protocol === c.protocol)));
    const s = (args.sort || [{ property: 'name', isAscending: true }])[0];
    all = all.sort((a, b) => String(a[s.property]).localeCompare(String(b[s.property])) * (s.isAscending === false ? -1 : 1));
    const pos = args.position || 0;
    return { accountId: 'a', queryState: String(stateNo), position: pos, total: all.length, ids: all.slice(pos, pos + (args.limit || 100)).map((l) => l.id) };
  }
  if (name === `${TYPE}/changes`) {
    const since = Number(args.sinceState);
    if (!Number.isInteger(since) || since > stateNo) return { error: { type: 'cannotCalculateChanges' } };
    const created = new Set(), updated = new Set(), destroyed = new Set();
    for (const e of log.filter((x) => x.state > since)) {
      if (e.kind === 'created') created.add(e.id);
      else if (e.kind === 'updated' && !created.has(e.id)) updated.add(e.id);
      else if (e.kind === 'destroyed') {
        if (created.delete(e.id)) continue;
        updated.delete(e.id);
        destroyed.add(e.id);
      }
    }
    return { accountId: 'a', oldState: String(since), newState: String(stateNo), hasMoreChanges: false, created: [...created], updated: [...updated], destroyed: [...destroyed] };
  }
  if (name === `${TYPE}/set`) return setListeners(args);
  return { error: { type: 'unknownMethod' } };
}

function resolveRefs(args, results) {
  const out = {};
  for (const [k, v] of Object.entries(args)) {
    if (k.startsWith('#')) {
      const r = results.find((x) => x[2] === v.resultOf && x[0] === v.name);
      if (!r) return null;
      out[k.slice(1)] = r[1][v.path.replace(/^\//, '')];
    } else out[k] = v;
  }
  return out;
}

// ---------- HTTP ----------

function cookieSession(req) {
  const m = /(?:^|;\s*)gh_session=([^;]+)/.exec(req.headers.cookie || '');
  return m && sessions.has(m[1]) ? m[1] : null;
}

function authorized(req, csrfNeeded = true) {
  if (req.headers.authorization === `Bearer ${SECRET}`) return true;
  if (!cookieSession(req)) return false;
  return !csrfNeeded || req.headers['x-gatehouse-csrf'] === '1';
}

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}

const problem = (res, status, title) => send(res, status, { type: 'about:blank', status, title }, 'application/problem+json');

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString() || 'null');
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  const path = url.pathname;
  try {
    if (path === '/auth/session' && req.method === 'POST') {
      const b = await body(req);
      if (!b || b.secret !== SECRET) return problem(res, 401, 'The secret was not accepted');
      const id = randomBytes(16).toString('hex');
      sessions.add(id);
      res.writeHead(204, { 'Set-Cookie': `gh_session=${id}; HttpOnly; SameSite=Strict; Path=/` });
      return res.end();
    }
    if (path === '/auth/session' && req.method === 'DELETE') {
      sessions.delete(cookieSession(req));
      res.writeHead(204, { 'Set-Cookie': 'gh_session=; Max-Age=0; Path=/' });
      return res.end();
    }
    if (path.startsWith('/jmap/eventsource')) {
      if (!authorized(req, false)) return problem(res, 401, 'Sign in first');
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      res.write(': hello\n\n');
      streams.add(res);
      const ping = Number(url.searchParams.get('ping') || 0);
      const t = ping > 0 ? setInterval(() => res.write(`event: ping\ndata: {"interval":${ping}}\n\n`), ping * 1000) : null;
      req.on('close', () => {
        streams.delete(res);
        clearInterval(t);
      });
      return;
    }
    if (path === '/api/me') return send(res, 200, authorized(req) ? { signedIn: true, username: 'admin', admin: true, permissions: [] } : { signedIn: false });
    if (path.startsWith('/api') || path.startsWith('/jmap')) {
      if (!authorized(req)) return problem(res, 401, 'Sign in first');
      if (path === '/api/schema') return send(res, 200, SCHEMA);
      if (path === '/api/status') return send(res, 200, { listeners: Object.fromEntries([...listeners.keys()].map((id, i) => [id, { live: i % 3 }])) });
      if (path === '/jmap/session') {
        const base = `http://${req.headers.host}`;
        return send(res, 200, { apiUrl: `${base}/api`, eventSourceUrl: `${base}/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}`, accounts: { a: {} }, state: 's' });
      }
      if (path === '/api' && req.method === 'POST') {
        const b = await body(req);
        const out = [];
        for (const [name, args, id] of b.methodCalls) {
          const a = resolveRefs(args, out);
          if (!a) {
            out.push(['error', { type: 'invalidResultReference' }, id]);
            continue;
          }
          const r = await method(name, a);
          out.push(r.error ? ['error', r.error, id] : [name, r, id]);
        }
        return send(res, 200, { methodResponses: out, sessionState: 's' });
      }
      return problem(res, 404, 'Not found');
    }
    const file = join(WEB, path === '/' ? 'index.html' : path.slice(1));
    if (!file.startsWith(WEB) || !existsSync(file)) return problem(res, 404, 'Not found');
    const type = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' }[file.slice(file.lastIndexOf('.'))] || 'application/octet-stream';
    return send(res, 200, readFileSync(file), type);
  } catch (e) {
    console.error(e);
    problem(res, 500, e.message);
  }
});

server.listen(PORT, '127.0.0.1', async () => {
  await setListeners({ create: { h: { name: 'http', protocol: 'http', bind: [`127.0.0.1:${PORT + 1}`] } } });
  console.log(`mock on http://127.0.0.1:${PORT}/ (secret ${SECRET})`);
});
