// model: the console's pure logic, apart from the page so that it runs in Node as well:
// pages and navigation from the schema, the list's /query filter, what changed between two
// versions of an object, and the listener facts the page states (TLS mode, whether a
// listener serves this page, which certificate a handshake gets).

/** Orders the first levels of the navigation; sections not named here follow, "Other" last. */
const SECTION_ORDER = ['Settings', 'Network', 'TLS', 'Security', 'Authentication', 'Telemetry', 'System settings'];

const slugify = (s) => String(s).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'page';

export function sectionRank(name) {
  const i = SECTION_ORDER.indexOf(name);
  if (name === 'Other') return 1000;
  return i < 0 ? 500 : i;
}

/** One page per type the credential may read, each with its navigation path and slug. */
export function pagesFromSchema(types, canRead = () => true) {
  const out = [];
  const taken = new Set(['overview']);
  for (const [typeName, t] of Object.entries(types)) {
    const nav = Array.isArray(t.nav) && t.nav.length ? t.nav : ['Other', t.label || typeName];
    let slug = slugify(nav[nav.length - 1]);
    for (let n = 2; taken.has(slug); n++) slug = `${slugify(nav[nav.length - 1])}-${n}`;
    taken.add(slug);
    if (canRead(t)) out.push({ slug, typeName, t, nav });
  }
  const key = (p) => p.nav.slice(0, -1).map((s) => String(sectionRank(s)).padStart(4, '0') + s).join('/');
  return out.sort((a, b) => key(a).localeCompare(key(b)) || 0);
}

export function textFilterProps(t) {
  return t.properties.filter((p) => p.filter === 'text');
}

export function enumFilterProps(t) {
  return t.properties.filter((p) => p.filter === 'equals' && p.type === 'Enum' && !p.list);
}

/** The /query filter for the list's text box and menus (FilterOperator for several). */
export function buildFilter(t, p) {
  const conds = [];
  const text = (p.text || '').trim();
  const textProps = textFilterProps(t);
  if (text && textProps.length === 1) conds.push({ [textProps[0].name]: text });
  else if (text && textProps.length > 1) conds.push({ operator: 'OR', conditions: textProps.map((q) => ({ [q.name]: text })) });
  for (const [name, v] of Object.entries(p.enums || {})) if (v) conds.push({ [name]: v });
  if (!conds.length) return null;
  return conds.length === 1 ? conds[0] : { operator: 'AND', conditions: conds };
}

/** The fields whose values differ between two versions of an object. */
export function differences(t, a, b) {
  return t.properties.filter((p) => p.mutability !== 'writeOnly' && JSON.stringify(a?.[p.name] ?? null) !== JSON.stringify(b?.[p.name] ?? null));
}

/** plain / STARTTLS / implicit, as the listener really behaves (HTTP has no STARTTLS). */
export function tlsMode(o) {
  if (!o.useTls) return 'plain';
  if (o.tlsImplicit) return 'implicit';
  return o.protocol === 'http' ? 'plain' : 'STARTTLS';
}

/** True when the listener (as o describes it) serves the page being looked at. */
export function servesThisPage(o, loc = location) {
  if (!o || o.protocol !== 'http') return false;
  const port = loc.port || (loc.protocol === 'https:' ? '443' : '80');
  return (o.bind || []).some((b) => b.endsWith(`:${port}`));
}

/**
 * The certificate a TLS handshake presents, as the server chooses it: a certificate naming
 * the SNI host exactly, else one whose wildcard covers it, else the default one (the most
 * recently created of those marked default), else any; among equals one valid now, then the
 * latest expiry. `certs` in creation order.
 */
export function certificateFor(certs, sni, now = Date.now()) {
  const host = (sni || '').toLowerCase().replace(/\.$/, '');
  const defaults = certs.filter((c) => c.isDefault);
  const theDefault = defaults[defaults.length - 1];
  const level = (c) => {
    let best = c === theDefault ? 2 : 1;
    for (const n of c.subjectNames || []) {
      const name = n.toLowerCase();
      if (host && name === host) return 4;
      if (host && name.startsWith('*.') && host.indexOf('.') > 0 && host.slice(host.indexOf('.') + 1) === name.slice(2)) best = 3;
    }
    return best;
  };
  const valid = (c) => Date.parse(c.notBefore) <= now && now <= Date.parse(c.notAfter);
  let best = null;
  let bestLevel = 0;
  for (const c of certs) {
    const l = level(c);
    if (l > bestLevel || (l === bestLevel && (valid(c) !== valid(best) ? valid(c) : Date.parse(c.notAfter) > Date.parse(best.notAfter)))) {
      best = c;
      bestLevel = l;
    }
  }
  return best;
}
