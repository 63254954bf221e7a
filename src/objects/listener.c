/*
 * listener: the x:NetworkListener object (SPEC §2): its property table, the rules that
 * span properties and listeners (bind conflicts, usable TLS), and the hook that turns a
 * stored listener into engine settings and applies it before the store is written.
 */
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "net/engine.h"
#include "net/tls.h"
#include "objects/model.h"

static const struct gh_enum_value protocols[] = {
    {"smtp", "SMTP"},  {"lmtp", "LMTP"}, {"http", "HTTP"},
    {"imap", "IMAP4"}, {"pop3", "POP3"}, {"manageSieve", "ManageSieve"},
    {NULL, NULL},
};

static const struct gh_enum_value suites[] = {
    {"tls13-aes-256-gcm-sha384", "TLS1.3 AES256 GCM SHA384"},
    {"tls13-aes-128-gcm-sha256", "TLS1.3 AES128 GCM SHA256"},
    {"tls13-chacha20-poly1305-sha256", "TLS1.3 CHACHA20 POLY1305 SHA256"},
    {"tls-ecdhe-ecdsa-with-aes-256-gcm-sha384", "ECDHE ECDSA AES256 GCM SHA384"},
    {"tls-ecdhe-ecdsa-with-aes-128-gcm-sha256", "ECDHE ECDSA AES128 GCM SHA256"},
    {"tls-ecdhe-ecdsa-with-chacha20-poly1305-sha256", "ECDHE ECDSA CHACHA20 POLY1305 SHA256"},
    {"tls-ecdhe-rsa-with-aes-256-gcm-sha384", "ECDHE RSA AES256 GCM SHA384"},
    {"tls-ecdhe-rsa-with-aes-128-gcm-sha256", "ECDHE RSA AES128 GCM SHA256"},
    {"tls-ecdhe-rsa-with-chacha20-poly1305-sha256", "ECDHE RSA CHACHA20 POLY1305 SHA256"},
    {NULL, NULL},
};

static const struct gh_enum_value versions[] = {
    {"tls12", "TLS version 1.2"},
    {"tls13", "TLS version 1.3"},
    {NULL, NULL},
};

#define G_LISTENER  "Listener"
#define G_TLS       "TLS"
#define G_PROXY     "Proxy networks"
#define G_SOCKET    "Socket options"
#define INT_MAX_OPT 2147483647 /* the kernel takes these as int */

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = G_LISTENER,
     .description = "Server-assigned identifier"},
    {.name = "name",
     .type = GH_PT_STRING,
     .mut = GH_CREATE_ONLY,
     .max_len = 64,
     .label = "Name",
     .group = G_LISTENER,
     .check = gh_check_name,
     .description = "Unique identifier for the listener",
     .rule = "1-64 characters of A-Za-z0-9._-; unique (case-insensitive); set at create "
             "only; derived from the protocol when omitted",
     .filter = GH_FILTER_TEXT,
     .sortable = true},
    {.name = "bind",
     .type = GH_PT_SOCKADDR,
     .list = true,
     .required = true,
     .min_items = 1,
     .max_items = 64,
     .label = "Bind addresses",
     .group = G_LISTENER,
     .description = "The addresses the listener will bind to",
     .rule = "IPv4:port or [IPv6]:port, port 1-65535; at least one; no duplicates; not "
             "bound by another listener ([::] covers 0.0.0.0 on the same port)"},
    {.name = "protocol",
     .type = GH_PT_ENUM,
     .def = "\"smtp\"",
     .values = protocols,
     .label = "Protocol",
     .group = G_LISTENER,
     .description = "The protocol used by the listener",
     .filter = GH_FILTER_EQUALS,
     .sortable = true},
    {.name = "maxConnections",
     .type = GH_PT_UINT,
     .nullable = true,
     .def = "8192",
     .min = 1,
     .max = 4294967295LL,
     .label = "Max connections",
     .group = G_LISTENER,
     .description = "The maximum number of concurrent connections the listener will accept",
     .rule = "at least 1; null sets the default (8192)"},
    {.name = "overrideProxyTrustedNetworks",
     .type = GH_PT_IPMASK,
     .list = true,
     .label = "Trusted proxy networks",
     .group = G_PROXY,
     .description = "Enable proxy protocol for connections from these networks",
     .rule = "IP or CIDR (/0-32 IPv4, /0-128 IPv6) with the host bits zero; empty = the "
             "server-wide proxyTrustedNetworks"},
    {.name = "useTls",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "Use TLS",
     .group = G_TLS,
     .description = "Whether to enable TLS for this listener"},
    {.name = "tlsImplicit",
     .type = GH_PT_BOOLEAN,
     .def = "false",
     .label = "Implicit TLS",
     .group = G_TLS,
     .description = "Whether to use implicit TLS"},
    {.name = "tlsTimeout",
     .type = GH_PT_DURATION,
     .nullable = true,
     .def = "\"1m\"",
     .max = 86400000,
     .label = "TLS timeout",
     .group = G_TLS,
     .description = "TLS handshake timeout",
     .rule = "\"500ms\", \"30s\", \"1m\", \"2h\", \"1d\" or whole milliseconds; more than 0, "
             "at most 1d; null sets the default (1m)"},
    {.name = "tlsDisableProtocols",
     .type = GH_PT_ENUM,
     .list = true,
     .values = versions,
     .label = "Disabled TLS versions",
     .group = G_TLS,
     .description = "Which TLS protocols to disable",
     .rule = "disabling both is refused"},
    {.name = "tlsDisableCipherSuites",
     .type = GH_PT_ENUM,
     .list = true,
     .values = suites,
     .label = "Disabled cipher suites",
     .group = G_TLS,
     .description = "Which cipher suites to disable",
     .rule = "at least one suite of an enabled TLS version must remain"},
    {.name = "tlsIgnoreClientOrder",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "Ignore client order",
     .group = G_TLS,
     .description = "Whether to ignore the client's cipher order"},
    {.name = "socketBacklog",
     .type = GH_PT_UINT,
     .nullable = true,
     .def = "1024",
     .min = 1,
     .max = INT_MAX_OPT,
     .label = "Backlog",
     .group = G_SOCKET,
     .description = "The maximum number of incoming connections that can be pending in the "
                    "backlog queue",
     .rule = "at least 1; null sets the default (1024)"},
    {.name = "socketNoDelay",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "No delay",
     .group = G_SOCKET,
     .description = "Whether the Nagle algorithm should be disabled for the socket"},
    {.name = "socketReceiveBufferSize",
     .type = GH_PT_UINT,
     .nullable = true,
     .min = 1,
     .max = INT_MAX_OPT,
     .label = "Receive buffer size",
     .group = G_SOCKET,
     .description = "The size of the buffer used for receiving data",
     .rule = "at least 1; null = the system default"},
    {.name = "socketReuseAddress",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "Reuse address",
     .group = G_SOCKET,
     .description = "Whether the socket can be bound to an address that is already in use by "
                    "another socket"},
    {.name = "socketReusePort",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "Reuse port",
     .group = G_SOCKET,
     .description = "Whether multiple sockets can be bound to the same address and port"},
    {.name = "socketSendBufferSize",
     .type = GH_PT_UINT,
     .nullable = true,
     .min = 1,
     .max = INT_MAX_OPT,
     .label = "Send buffer size",
     .group = G_SOCKET,
     .description = "The size of the buffer used for sending data",
     .rule = "at least 1; null = the system default"},
    {.name = "socketTosV4",
     .type = GH_PT_UINT,
     .nullable = true,
     .min = 1,
     .max = 255,
     .label = "Type of service (IPv4)",
     .group = G_SOCKET,
     .description = "The type of service (TOS) value for the socket, which determines the "
                    "priority of the traffic sent through the socket",
     .rule = "1-255; null = the system default"},
    {.name = "socketTtl",
     .type = GH_PT_UINT,
     .nullable = true,
     .min = 1,
     .max = 255,
     .label = "Time to live",
     .group = G_SOCKET,
     .description = "Time-to-live (TTL) value for the socket, which determines how many hops "
                    "a packet can make before it is discarded",
     .rule = "1-255; null = the system default"},
};

static int enum_index(const char *const *names, unsigned n, const char *value)
{
    for (unsigned i = 0; i < n; i++)
        if (value && !strcmp(names[i], value))
            return (int)i;
    return -1;
}

static unsigned bits_of(const json_t *list, const char *const *names, unsigned n)
{
    unsigned bits = 0;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        int k = enum_index(names, n, json_string_value(v));
        if (k >= 0)
            bits |= 1u << k;
    }
    return bits;
}

static int64_t int_or(const json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static bool bool_or(const json_t *obj, const char *key, bool dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

struct gh_listener_conf *gh_listener_conf_from(const json_t *obj, gh_err *err)
{
    json_t *bind = json_object_get(obj, "bind");
    json_t *trusted = json_object_get(obj, "overrideProxyTrustedNetworks");
    size_t nbind = json_array_size(bind), ntrusted = json_array_size(trusted);
    struct gh_listener_conf *c = gh_listener_conf_new((unsigned)nbind, (unsigned)ntrusted);
    if (!c) {
        gh_fail(err, "out of memory");
        return NULL;
    }
    snprintf(c->id, sizeof c->id, "%s", json_string_value(json_object_get(obj, "id")));
    snprintf(c->name, sizeof c->name, "%s", json_string_value(json_object_get(obj, "name")));
    int proto = enum_index(gh_protocol_names, GH_PROTO_COUNT,
                           json_string_value(json_object_get(obj, "protocol")));
    c->protocol = proto < 0 ? GH_PROTO_SMTP : (enum gh_protocol)proto;
    for (size_t i = 0; i < nbind; i++)
        if (!gh_sockaddr_parse(json_string_value(json_array_get(bind, i)), &c->bind[i], err))
            goto bad;
    for (size_t i = 0; i < ntrusted; i++)
        if (!gh_ipmask_parse(json_string_value(json_array_get(trusted, i)), &c->trusted[i], err))
            goto bad;
    c->backlog = (uint32_t)int_or(obj, "socketBacklog", 1024);
    c->nodelay = bool_or(obj, "socketNoDelay", true);
    c->reuseaddr = bool_or(obj, "socketReuseAddress", true);
    c->reuseport = bool_or(obj, "socketReusePort", true);
    c->rcvbuf = (int)int_or(obj, "socketReceiveBufferSize", 0);
    c->sndbuf = (int)int_or(obj, "socketSendBufferSize", 0);
    c->tos = (int)int_or(obj, "socketTosV4", 0);
    c->ttl = (int)int_or(obj, "socketTtl", 0);
    c->use_tls = bool_or(obj, "useTls", true);
    c->tls_implicit = bool_or(obj, "tlsImplicit", false);
    c->tls_ignore_client_order = bool_or(obj, "tlsIgnoreClientOrder", true);
    c->tls_disabled_suites = (uint16_t)bits_of(json_object_get(obj, "tlsDisableCipherSuites"),
                                               gh_tls_suite_names, GH_SUITE_COUNT);
    c->tls_disabled_versions = (uint8_t)bits_of(json_object_get(obj, "tlsDisableProtocols"),
                                                gh_tls_version_names, GH_TLS_VERSION_COUNT);
    uint64_t ms = 60000;
    json_t *timeout = json_object_get(obj, "tlsTimeout");
    if (timeout && !json_is_null(timeout) && !gh_duration_parse(timeout, &ms, err))
        goto bad;
    c->tls_timeout_ms = (uint32_t)ms;
    c->max_connections = (uint32_t)int_or(obj, "maxConnections", 8192);
    return c;
bad:
    gh_listener_conf_unref(c);
    return NULL;
}

/* ---- rules across properties and listeners ---- */

/*
 * Listeners of the /set in progress between which addresses move (a swap): each is checked
 * against the others' new addresses, and the first of them to be applied applies them all
 * to the engine as one change (gh_engine_apply_set), so a moving address keeps its sockets.
 * Only on the management thread, inside one /set.
 */
static struct {
    json_t *planned; /* id -> the listener after its update (owned); NULL: nothing moves */
    json_t *before;  /* id -> the listener before it (owned) */
    bool applied, undone;
} move;

static void move_clear(void)
{
    json_decref(move.planned);
    json_decref(move.before);
    memset(&move, 0, sizeof move);
}

/* The addresses a listener has once this /set is done. */
static json_t *binds_after(const json_t *listener)
{
    const char *id = json_string_value(json_object_get(listener, "id"));
    json_t *planned = move.planned && id ? json_object_get(move.planned, id) : NULL;
    return json_object_get(planned ? planned : listener, "bind");
}

static void check_binds(const json_t *obj, struct gh_verr *ve)
{
    json_t *bind = json_object_get(obj, "bind");
    const char *self = json_string_value(json_object_get(obj, "id"));
    size_t n = json_array_size(bind);
    struct gh_sockaddr a, b;
    for (size_t i = 0; i < n; i++) {
        const char *ta = json_string_value(json_array_get(bind, i));
        if (!gh_sockaddr_parse(ta, &a, NULL))
            continue;
        for (size_t k = i + 1; k < n; k++) {
            const char *tb = json_string_value(json_array_get(bind, k));
            if (gh_sockaddr_parse(tb, &b, NULL) && gh_sockaddr_conflict(&a, &b)) {
                gh_verr_add(ve, "bind", "%s and %s overlap (same port; one covers the other)", ta,
                            tb);
                return;
            }
        }
        size_t li;
        json_t *other;
        json_array_foreach(gh_type_listener.objs, li, other)
        {
            const char *oid = json_string_value(json_object_get(other, "id"));
            if (self && oid && !strcmp(self, oid))
                continue;
            size_t k;
            json_t *ob;
            json_array_foreach(binds_after(other), k, ob)
            {
                if (gh_sockaddr_parse(json_string_value(ob), &b, NULL) &&
                    gh_sockaddr_conflict(&a, &b)) {
                    gh_verr_add(ve, "bind", "%s is already bound by listener \"%s\" (%s)", ta,
                                json_string_value(json_object_get(other, "name")),
                                json_string_value(ob));
                    return;
                }
            }
        }
    }
}

/* TLS must keep at least one version and one suite that version can use. */
static void check_tls(const json_t *obj, struct gh_verr *ve)
{
    unsigned v = bits_of(json_object_get(obj, "tlsDisableProtocols"), gh_tls_version_names,
                         GH_TLS_VERSION_COUNT);
    unsigned s =
        bits_of(json_object_get(obj, "tlsDisableCipherSuites"), gh_tls_suite_names, GH_SUITE_COUNT);
    if (v == (1u << GH_TLS12 | 1u << GH_TLS13)) {
        gh_verr_add(ve, "tlsDisableProtocols",
                    "disabling both tls12 and tls13 leaves no TLS version; keep at least one "
                    "(or set useTls to false)");
        return;
    }
    const unsigned tls13 = 0x7, tls12 = 0x1f8; /* suites 0-2 and 3-8 */
    bool usable =
        (!(v & 1u << GH_TLS13) && (tls13 & ~s)) || (!(v & 1u << GH_TLS12) && (tls12 & ~s));
    if (!usable) {
        gh_verr_add(ve, "tlsDisableCipherSuites",
                    "no usable cipher suite remains: keep at least one %s suite enabled",
                    v & 1u << GH_TLS13   ? "TLS 1.2 (tls-ecdhe-...)"
                    : v & 1u << GH_TLS12 ? "TLS 1.3 (tls13-...)"
                                         : "TLS 1.2 or TLS 1.3");
        return;
    }
    if (!bool_or(obj, "useTls", true))
        return;
    gh_err err = {0};
    struct gh_listener_conf *c = gh_listener_conf_from(obj, &err);
    if (c && !gh_tls_check_conf(c, &err))
        gh_verr_add(ve, "tlsDisableCipherSuites", "%s", err.msg);
    gh_listener_conf_unref(c);
}

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    check_binds(obj, ve);
    check_tls(obj, ve);
    if (gh_verr_ok(ve))
        gh_name_unique(t, obj, old, json_string_value(json_object_get(obj, "protocol")), ve);
}

static bool has_bind(const json_t *listener, const char *addr)
{
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(listener, "bind"), i, b)
    {
        if (!strcmp(json_string_value(b), addr))
            return true;
    }
    return false;
}

/* Marks in members every listener of planned that takes an address another one of
 * planned gives up, and that other one; true when there is any. */
static bool find_moves(const json_t *planned, json_t *members)
{
    const char *gid, *tid;
    json_t *giver, *taker;
    json_object_foreach((json_t *)planned, gid, giver)
    {
        json_t *now = gh_obj_find(&gh_type_listener, gid, NULL);
        size_t i;
        json_t *b;
        json_array_foreach(json_object_get(now, "bind"), i, b)
        {
            const char *addr = json_string_value(b);
            if (has_bind(giver, addr))
                continue; /* kept */
            json_object_foreach((json_t *)planned, tid, taker)
            {
                if (strcmp(gid, tid) && has_bind(taker, addr)) {
                    json_object_set_new(members, gid, json_true());
                    json_object_set_new(members, tid, json_true());
                }
            }
        }
    }
    return json_object_size(members) > 0;
}

static void set_begin(const json_t *updates)
{
    move_clear();
    json_t *planned = json_object(), *members = json_object(), *patch;
    const char *id;
    json_object_foreach((json_t *)updates, id, patch)
    {
        json_t *cur = gh_obj_find(&gh_type_listener, id, NULL);
        struct gh_verr ve;
        gh_verr_init(&ve);
        json_t *obj = cur && json_is_object(patch)
                          ? gh_schema_patch(&gh_type_listener, cur, patch, &ve)
                          : NULL;
        if (obj && gh_verr_ok(&ve))
            json_object_set(planned, id, obj);
        json_decref(obj);
        gh_verr_clear(&ve);
    }
    if (find_moves(planned, members)) {
        move.planned = json_object();
        move.before = json_object();
        json_object_foreach(members, id, patch)
        {
            json_object_set(move.planned, id, json_object_get(planned, id));
            json_object_set(move.before, id, gh_obj_find(&gh_type_listener, id, NULL));
        }
        /* the move is made only when every listener in it is valid with the others moved */
        json_t *obj;
        json_object_foreach(move.planned, id, obj)
        {
            struct gh_verr ve;
            gh_verr_init(&ve);
            validate(&gh_type_listener, obj, json_object_get(move.before, id), &ve);
            bool ok = gh_verr_ok(&ve);
            gh_verr_clear(&ve);
            if (!ok) {
                move_clear();
                break;
            }
        }
    }
    json_decref(planned);
    json_decref(members);
}

static void set_end(void)
{
    move_clear();
}

/* Applies every listener of the move (from) to the engine as one change. */
static bool apply_move(json_t *from, gh_err *err)
{
    size_t n = json_object_size(from), k = 0;
    struct gh_listener_conf **confs = calloc(n ? n : 1, sizeof *confs);
    if (!confs)
        return gh_fail(err, "out of memory");
    const char *id;
    json_t *obj;
    bool ok = true;
    json_object_foreach(from, id, obj)
    {
        if (ok && !(confs[k++] = gh_listener_conf_from(obj, err)))
            ok = false;
    }
    if (!ok) {
        for (size_t i = 0; i < k; i++)
            gh_listener_conf_unref(confs[i]);
    } else {
        ok = gh_engine_apply_set(gh_model.engine, confs, (unsigned)n, err);
    }
    free(confs);
    if (!ok)
        return false;
    json_object_foreach(from, id, obj)
    {
        gh_listener_applied(id);
    }
    return true;
}

/* The update of a listener in the move: the first applies them all; false when not one. */
static bool apply_moving(const json_t *obj, const json_t *old, struct gh_verr *ve, bool *ok)
{
    const char *id = json_string_value(json_object_get(obj, "id"));
    json_t *planned = move.planned && old && id ? json_object_get(move.planned, id) : NULL;
    if (!planned || !json_equal(planned, obj))
        return false;
    *ok = true;
    if (move.applied)
        return true;
    gh_err err = {0};
    if (!apply_move(move.planned, &err)) {
        gh_verr_add(ve, "bind", "%s", err.msg);
        move_clear(); /* the others are then checked, and refused, one by one */
        *ok = false;
        return true;
    }
    move.applied = true;
    return true;
}

/* ---- side effects ---- */

static bool apply(const json_t *obj, const json_t *old, struct gh_verr *ve)
{
    if (!gh_model.engine)
        return true;
    if (!obj) {
        gh_engine_remove(gh_model.engine, json_string_value(json_object_get(old, "id")));
        return true;
    }
    bool moved;
    if (apply_moving(obj, old, ve, &moved))
        return moved;
    gh_err err = {0};
    struct gh_listener_conf *c = gh_listener_conf_from(obj, &err);
    if (!c || !gh_engine_apply(gh_model.engine, c, &err)) {
        gh_verr_add(ve, "bind", "%s", err.msg);
        return false;
    }
    gh_listener_applied(json_string_value(json_object_get(obj, "id")));
    return true;
}

static void undo(const json_t *obj, const json_t *old)
{
    if (!gh_model.engine)
        return;
    if (!old) {
        gh_engine_remove(gh_model.engine, json_string_value(json_object_get(obj, "id")));
        return;
    }
    const char *id = json_string_value(json_object_get(old, "id"));
    if (move.applied && id && json_object_get(move.before, id)) {
        gh_err err = {0};
        if (!move.undone && !apply_move(move.before, &err))
            gh_log(NULL, NULL, "listener-restore-error", "%s", err.msg);
        move.undone = true; /* all of them went back at once */
        return;
    }
    gh_err err = {0};
    struct gh_listener_conf *c = gh_listener_conf_from(old, &err);
    if (!c || !gh_engine_apply(gh_model.engine, c, &err))
        gh_log(json_string_value(json_object_get(old, "name")), NULL, "listener-restore-error",
               "%s", err.msg);
}

static void committed(struct gh_objtype *t)
{
    gh_status_rebuild();
}

static const char *const groups[] = {G_LISTENER, G_TLS, G_PROXY, G_SOCKET, NULL};
static const char *const columns[] = {"name", "protocol", "bind", "tlsImplicit", NULL};

struct gh_objtype gh_type_listener = {
    .type = "x:NetworkListener",
    .name = "NetworkListener",
    .cli_name = "network-listener",
    .label = "Network listener",
    .perm_prefix = "sysNetworkListener",
    .nav = "Settings › Network › Listeners",
    .id_prefix = 'l',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.validate = validate,
              .apply = apply,
              .undo = undo,
              .set_begin = set_begin,
              .set_end = set_end,
              .committed = committed},
};
