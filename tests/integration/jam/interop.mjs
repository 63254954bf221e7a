// Drives a running Gatehouse with the independent JMAP client jmap-jam:
// session through /.well-known/jmap, then get, set, query and a result reference on
// x:NetworkListener. Usage: node interop.mjs BASE_URL TOKEN PORT; prints one JSON line.
import JamClient from "jmap-jam";

const [base, token, port] = process.argv.slice(2);
const fail = (what, detail) => {
  console.log(JSON.stringify({ ok: false, what, detail }));
  process.exit(1);
};

const jam = new JamClient({ sessionUrl: base + "/.well-known/jmap", bearerToken: token });
const session = await jam.session;
const accountId = Object.keys(session.accounts ?? {})[0];
if (!accountId || !session.apiUrl) fail("session", session);

// jam cannot derive the capability from an "x:" type name: pass it on every call
const opts = { using: ["urn:stalwart:jmap"] };
const out = { ok: true, accountId, apiUrl: session.apiUrl };
try {
  const [got] = await jam.request(["x:NetworkListener/get", { accountId, ids: null }], opts);
  out.before = got.list.map((l) => l.name);

  const [set] = await jam.request(
    ["x:NetworkListener/set",
     { accountId, create: { c1: { name: "jam1", protocol: "imap", bind: ["127.0.0.1:" + port] } } }],
    opts);
  if (!set.created?.c1?.id) fail("set", set);
  out.createdId = set.created.c1.id;
  out.newState = set.newState;

  const [res] = await jam.requestMany((t) => {
    const q = t["x:NetworkListener"].query({ accountId, filter: { name: "jam1" } });
    const g = t["x:NetworkListener"].get({ accountId, ids: q.$ref("/ids"), properties: ["name", "protocol", "bind"] });
    return { q, g };
  }, opts);
  out.queryIds = res.q.ids;
  out.got = res.g.list;

  const [upd] = await jam.request(
    ["x:NetworkListener/set", { accountId, update: { [out.createdId]: { protocol: "pop3" } } }], opts);
  out.updated = Object.keys(upd.updated ?? {});

  // a method error is thrown as its arguments
  try {
    await jam.request(["x:NetworkListener/get", { accountId: "nope" }], opts);
    out.methodError = null;
  } catch (e) {
    out.methodError = e.type ?? String(e);
  }

  const [del] = await jam.request(["x:NetworkListener/set", { accountId, destroy: [out.createdId] }], opts);
  out.destroyed = del.destroyed;
} catch (e) {
  fail("request", e instanceof Error ? e.message : e);
}
console.log(JSON.stringify(out));
