// client: the page's only way to the daemon. Cookie sign-in (/auth/session), who is signed
// in (/api/me), the schema and status endpoints, JMAP calls on POST /api, and the push
// stream URL from the session.
// Every request carries X-Gatehouse-Csrf: 1, which a cross-site page cannot send.

export const USING = ['urn:ietf:params:jmap:core', 'urn:stalwart:jmap'];
const CSRF = { 'X-Gatehouse-Csrf': '1' };

/** The session cookie is missing, expired or was never accepted. */
export class AuthError extends Error {}

/** A request-level failure: network, HTTP status or an RFC 7807 problem. */
export class ApiError extends Error {}

/** A JMAP method-level error ({type, description}). */
export class MethodError extends Error {
  constructor(err) {
    super(err.description || err.type || 'The server refused the request');
    this.type = err.type;
    this.detail = err;
  }
}

async function problemText(res) {
  try {
    const p = await res.json();
    return p.detail || p.title || p.description || `${res.status} ${res.statusText}`;
  } catch {
    return `${res.status} ${res.statusText}`;
  }
}

async function request(method, path, body) {
  const init = { method, headers: { ...CSRF }, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(`The server cannot be reached (${e.message}).`);
  }
  if (res.status === 401) throw new AuthError(await problemText(res));
  if (!res.ok) throw new ApiError(await problemText(res));
  if (res.status === 204) return null;
  return res.json();
}

/** Exchanges a secret for the session cookie. Throws AuthError when it is refused. */
export async function signIn(secret) {
  await request('POST', '/auth/session', { secret });
}

export async function signOut() {
  try {
    await request('DELETE', '/auth/session');
  } catch (e) {
    if (!(e instanceof AuthError)) throw e; // already signed out is fine
  }
}

export const getSchema = () => request('GET', '/api/schema');
export const getStatus = () => request('GET', '/api/status');
export const getSession = () => request('GET', '/jmap/session');
/** Who is signed in: {signedIn:false} or {signedIn, username, admin, permissions}. Never 401
 * for a visitor who is simply not signed in, so a fresh load logs no error. */
export const getMe = () => request('GET', '/api/me');

/** Sends method calls; returns the methodResponses as an array of [name, args, id]. */
export async function jmap(methodCalls) {
  const res = await request('POST', '/api', { using: USING, methodCalls });
  if (!res || !Array.isArray(res.methodResponses)) throw new ApiError('The server sent no method responses.');
  return res.methodResponses;
}

/** The arguments of the response with call id `id`; throws MethodError on "error". */
export function result(responses, id) {
  const r = responses.find((m) => m[2] === id);
  if (!r) throw new ApiError(`The server did not answer call ${id}.`);
  if (r[0] === 'error') throw new MethodError(r[1]);
  return r[1];
}

/** One method call; returns its arguments. */
export async function call(method, args) {
  return result(await jmap([[method, args, 'c0']]), 'c0');
}

/**
 * The push stream URL for this page: the session's eventSourceUrl template expanded,
 * resolved on this page's origin (the session cookie belongs to it, whatever host name
 * the server put in the absolute URL).
 */
export function eventSourceUrl(session, types = '*', closeafter = 'no', ping = 30) {
  const template = session.eventSourceUrl || '/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}';
  const expanded = template
    .replace('{types}', encodeURIComponent(types))
    .replace('{closeafter}', encodeURIComponent(closeafter))
    .replace('{ping}', encodeURIComponent(String(ping)));
  const u = new URL(expanded, location.href);
  return new URL(u.pathname + u.search, location.origin).href;
}
