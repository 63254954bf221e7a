/*
 * security: the x:Security singleton (Stalwart's names and defaults) and the control side
 * of the address rules — it builds the engine's address table from x:BlockedIp,
 * x:AllowedIp and x:Security after every change, turns the bans the engine asks for into
 * x:BlockedIp objects (the same path as a client's /set: stored, logged in /changes, seen
 * by other nodes), and removes entries whose expiresAt has passed.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "metrics/metrics.h"
#include "objects/model.h"
#include "security/security.h"
#include "store/store.h"

#define G_BANS   "Automatic bans"
#define G_LIMITS "Per-address limits"

static const char default_paths[] =
    "[\"*.php*\", \"*.cgi*\", \"*.asp*\", \"*/wp-*\", \"*/php*\", \"*/cgi-bin*\", \"*xmlrpc*\", "
    "\"*../*\", \"*/..*\", \"*joomla*\", \"*wordpress*\", \"*drupal*\"]";

#define BAN_RATE(nm, lbl, dflt, what)                                                              \
    {                                                                                              \
        .name = nm, .type = GH_PT_RATE, .nullable = true, .null_is_value = true, .def = dflt,      \
        .label = lbl, .group = G_BANS,                                                             \
        .description = "How many " what " from one address (IPv6: one /64) within the period ban " \
                       "it; null turns this ban off",                                              \
        .rule = "{\"count\": N >= 1, \"period\": Duration} or null"                                \
    }

#define BAN_PERIOD(nm, lbl)                                                                        \
    {                                                                                              \
        .name = nm, .type = GH_PT_DURATION, .nullable = true, .label = lbl, .group = G_BANS,       \
        .description = "How long the ban lasts (the x:BlockedIp's expiresAt); empty: until "       \
                       "removed",                                                                  \
        .rule = "a duration more than 0, or null"                                                  \
    }

static bool check_glob(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    if (s[0] != '*' && s[0] != '/')
        return gh_fail(err,
                       "\"%.64s\": a path glob matches the whole request path, so it starts "
                       "with '/' or '*'",
                       s);
    return true;
}

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = G_BANS,
     .description = "Always \"singleton\""},
    BAN_RATE("authBanRate", "Authentication failure ban rate", "{\"count\":100,\"period\":\"1d\"}",
             "failed logins"),
    BAN_PERIOD("authBanPeriod", "Authentication failure ban period"),
    BAN_RATE("loiterBanRate", "Loiter ban rate", "{\"count\":150,\"period\":\"1d\"}",
             "sessions closed for a time-out"),
    BAN_PERIOD("loiterBanPeriod", "Loiter ban period"),
    BAN_RATE("scanBanRate", "Scan ban rate", "{\"count\":30,\"period\":\"1d\"}",
             "protocol violations"),
    BAN_PERIOD("scanBanPeriod", "Scan ban period"),
    {.name = "scanBanPaths",
     .type = GH_PT_STRING,
     .list = true,
     .def = default_paths,
     .check = check_glob,
     .label = "Scan ban paths",
     .group = G_BANS,
     .description = "HTTP request paths that ban the client at once (globs: * any run, ? one "
                    "character); off when scanBanRate is null",
     .rule = "globs starting with '/' or '*'"},
    {.name = "maxConnectionsPerIp",
     .type = GH_PT_UINT,
     .nullable = true,
     .min = 1,
     .max = 65535,
     .label = "Connections per address",
     .group = G_LIMITS,
     .description = "Live connections one address (IPv6: one /64) may hold across all "
                    "listeners; more are refused with the protocol's over-limit reply. Empty: "
                    "no limit",
     .rule = "1-65535, or null"},
    {.name = "connectionRate",
     .type = GH_PT_RATE,
     .nullable = true,
     .label = "Connection rate",
     .group = G_LIMITS,
     .description = "New connections one address (IPv6: one /64) may open within the period; "
                    "more are refused with the protocol's over-limit reply. Empty: no limit",
     .rule = "{\"count\": N >= 1, \"period\": Duration} or null"},
};

static void committed(struct gh_objtype *t)
{
    gh_security_committed();
}

static const char *const groups[] = {G_BANS, G_LIMITS, NULL};
static const char *const columns[] = {"authBanRate",         "loiterBanRate",  "scanBanRate",
                                      "maxConnectionsPerIp", "connectionRate", NULL};

struct gh_objtype gh_type_security = {
    .type = "x:Security",
    .name = "Security",
    .cli_name = "security",
    .label = "Security",
    .perm_prefix = "sysSecurity",
    .nav = "Settings › Security › Settings",
    .singleton = true,
    .id_prefix = 'y',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.committed = committed},
};

bool gh_security_ensure(gh_err *err)
{
    if (gh_obj_find(&gh_type_security, "singleton", NULL))
        return true;
    struct gh_verr ve;
    gh_verr_init(&ve);
    json_t *empty = json_object();
    json_t *obj = gh_schema_create(&gh_type_security, empty, &ve);
    json_decref(empty);
    gh_verr_clear(&ve);
    if (!obj)
        return gh_fail(err, "x:Security defaults do not validate");
    json_object_set_new(obj, "id", json_string("singleton"));
    char *text = json_dumps(obj, JSON_COMPACT);
    uint64_t seq = 0;
    bool ok =
        text && gh_store_begin(gh_model.store, err) &&
        gh_store_put(gh_model.store, gh_type_security.type, "singleton", text, err) &&
        gh_store_log_change(gh_model.store, gh_type_security.type, "singleton", 'c', &seq, err) &&
        gh_store_commit(gh_model.store, err);
    if (!ok) {
        gh_store_rollback(gh_model.store);
    } else {
        json_array_append(gh_type_security.objs, obj);
        gh_sync_note(seq);
    }
    free(text);
    json_decref(obj);
    return ok;
}

/* ---- the engine's table ---- */

static void rate_of(const json_t *s, const char *name, struct gh_sec_rate *r)
{
    uint32_t count = 0;
    uint64_t ms = 0;
    json_t *v = json_object_get(s, name);
    if (json_is_object(v) && gh_rate_parse(v, &count, &ms, NULL)) {
        r->count = count;
        r->period_ms = ms;
    } else {
        r->count = 0;
        r->period_ms = 0;
    }
}

static uint64_t period_of(const json_t *s, const char *name)
{
    uint64_t ms = 0;
    json_t *v = json_object_get(s, name);
    if (!json_is_null(v) && v)
        gh_duration_parse(v, &ms, NULL);
    return ms;
}

static bool add_settings(struct gh_sec_table *t)
{
    struct gh_sec_settings st = {0};
    json_t *s = gh_obj_find(&gh_type_security, "singleton", NULL);
    if (!s)
        return gh_sec_table_set_settings(t, &st, NULL, 0);
    rate_of(s, "loiterBanRate", &st.ban_rate[GH_SEC_LOITER]);
    rate_of(s, "scanBanRate", &st.ban_rate[GH_SEC_SCAN]);
    rate_of(s, "authBanRate", &st.ban_rate[GH_SEC_AUTH]);
    st.ban_period_ms[GH_SEC_LOITER] = period_of(s, "loiterBanPeriod");
    st.ban_period_ms[GH_SEC_SCAN] = period_of(s, "scanBanPeriod");
    st.ban_period_ms[GH_SEC_AUTH] = period_of(s, "authBanPeriod");
    st.max_per_ip = (uint32_t)json_integer_value(json_object_get(s, "maxConnectionsPerIp"));
    rate_of(s, "connectionRate", &st.conn_rate);
    json_t *paths = json_object_get(s, "scanBanPaths");
    size_t n = json_array_size(paths);
    const char **list = calloc(n ? n : 1, sizeof *list);
    if (!list)
        return false;
    for (size_t i = 0; i < n; i++)
        list[i] = json_string_value(json_array_get(paths, i));
    bool ok = gh_sec_table_set_settings(t, &st, list, (unsigned)n);
    free(list);
    return ok;
}

static bool add_entries(struct gh_sec_table *t, const struct gh_objtype *type, bool allowed)
{
    size_t i;
    json_t *o;
    json_array_foreach(type->objs, i, o)
    {
        struct gh_ipmask m;
        int64_t exp = 0;
        const char *e = json_string_value(json_object_get(o, "expiresAt"));
        if (!gh_ipmask_parse(json_string_value(json_object_get(o, "address")), &m, NULL))
            continue;
        if (e && !gh_utcdate_parse(e, &exp))
            continue;
        if (!gh_sec_table_add(t, &m, allowed, exp))
            return false;
    }
    return true;
}

/* gatehouse_blocked_addresses: the x:BlockedIp entries of the table last published, read by
 * the scraping thread without the objects' lock. */
static atomic_uint blocked_count;

static void blocked_gauge(struct gh_metrics_out *out, void *arg)
{
    gh_metrics_sample(out, "", (double)atomic_load_explicit(&blocked_count, memory_order_relaxed));
}

void gh_security_apply(void)
{
    int64_t start = gh_security_now_ms();
    struct gh_sec_table *t = gh_sec_table_new();
    if (!t || !add_settings(t) || !add_entries(t, &gh_type_blocked_ip, false) ||
        !add_entries(t, &gh_type_allowed_ip, true)) {
        gh_sec_table_free(t);
        gh_log(NULL, NULL, "security-error", "out of memory building the address table");
        return;
    }
    unsigned n = gh_sec_table_size(t);
    gh_security_publish(t);
    atomic_store_explicit(&blocked_count, (unsigned)json_array_size(gh_type_blocked_ip.objs),
                          memory_order_relaxed);
    gh_metrics_set_gauge(GH_GAUGE_BLOCKED_ADDRESSES, blocked_gauge, NULL);
    if (gh_model.engine) /* unit tests run the object layer without one */
        gh_log(NULL, NULL, "address-table", "%u entries, built in %lld ms", n,
               (long long)(gh_security_now_ms() - start));
}

/* ---- bans and expiry, on the control side ---- */

static bool deferring; /* inside a tick: the committed hooks leave the rebuild to it */
static bool pending;   /* a change committed while deferring */

void gh_security_committed(void)
{
    if (deferring)
        pending = true;
    else
        gh_security_apply();
}

static const char *const reason_names[GH_SEC_NEVENTS] = {"loiter", "scan", "authFailure"};

static enum gh_ban_reason ban_reason(const char *name)
{
    if (name && !strcmp(name, "loiter"))
        return GH_BAN_LOITER;
    if (name && !strcmp(name, "scan"))
        return GH_BAN_SCAN;
    return GH_BAN_AUTH_FAILURE;
}

/* Runs one /set of the server's own (args is taken); logs what it made or refused. The
 * address table is rebuilt once after the whole tick, not after each /set. */
static void run_set(struct gh_objtype *t, json_t *args)
{
    json_t *error = NULL;
    json_t *res = gh_objects_set_internal(t, args, &error);
    json_decref(args);
    if (!res)
        gh_log(NULL, NULL, "security-error", "%s/set: %s", t->type,
               json_string_value(json_object_get(error, "description")));
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(res, "created"), key, v)
    {
        gh_metrics_ban(NULL, ban_reason(json_string_value(json_object_get(v, "reason"))));
        gh_log(NULL, key, "ban", "%s, x:BlockedIp %s, expires %s",
               json_string_value(json_object_get(v, "reason")),
               json_string_value(json_object_get(v, "id")),
               json_is_string(json_object_get(v, "expiresAt"))
                   ? json_string_value(json_object_get(v, "expiresAt"))
                   : "never");
    }
    json_object_foreach(json_object_get(res, "notCreated"), key, v)
    {
        gh_log(NULL, key, "security-error", "ban not stored: %s",
               json_string_value(json_object_get(v, "description")));
    }
    json_decref(res);
    json_decref(error);
}

/* The engine's ban requests become x:BlockedIp objects, in /set calls of at most
 * maxObjectsInSet. Requests for addresses already blocked or allowed, or asked for twice,
 * are dropped. */
static void create_bans(void)
{
    struct gh_sec_ban *b = gh_security_take_bans();
    json_t *seen = json_object(), *create = json_object();
    int64_t now = gh_security_now_ms();
    while (b) {
        struct gh_sec_ban *next = b->next;
        char addr[GH_ADDR_TEXT];
        gh_ipmask_format(&b->mask, addr);
        struct gh_sockaddr sa = {0};
        sa.u.sa.sa_family = (sa_family_t)b->mask.family;
        if (b->mask.family == AF_INET)
            memcpy(&sa.u.v4.sin_addr, b->mask.addr, 4);
        else
            memcpy(&sa.u.v6.sin6_addr, b->mask.addr, 16);
        if (gh_security_lookup(&sa.u.sa) == GH_SEC_UNLISTED && !json_object_get(seen, addr)) {
            json_t *o = json_pack("{ss ss}", "address", addr, "reason", reason_names[b->reason]);
            if (b->period_ms) {
                char exp[32];
                gh_utcdate_format(now + (int64_t)b->period_ms + 999, exp);
                json_object_set_new(o, "expiresAt", json_string(exp));
            }
            json_object_set_new(seen, addr, json_true());
            json_object_set_new(create, addr, o);
        }
        free(b);
        b = next;
        if (json_object_size(create) == GH_JMAP_MAX_OBJECTS_IN_SET ||
            (!b && json_object_size(create))) {
            run_set(&gh_type_blocked_ip, json_pack("{so}", "create", create));
            create = json_object();
        }
    }
    json_decref(create);
    json_decref(seen);
}

/* Entries past expiresAt are destroyed (at most maxObjectsInSet a tick; the look-up already
 * skips the rest). */
static void destroy_expired(struct gh_objtype *t)
{
    int64_t now = gh_security_now_ms();
    json_t *ids = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(t->objs, i, o)
    {
        int64_t exp;
        const char *e = json_string_value(json_object_get(o, "expiresAt"));
        if (e && gh_utcdate_parse(e, &exp) && exp <= now &&
            json_array_size(ids) < GH_JMAP_MAX_OBJECTS_IN_SET)
            json_array_append(ids, json_object_get(o, "id"));
    }
    if (json_array_size(ids))
        run_set(t, json_pack("{so}", "destroy", ids));
    else
        json_decref(ids);
}

void gh_security_tick(void)
{
    deferring = true;
    pending = false;
    create_bans();
    destroy_expired(&gh_type_blocked_ip);
    destroy_expired(&gh_type_allowed_ip);
    deferring = false;
    if (pending) /* every change of the tick, and other nodes' it caught up with */
        gh_security_apply();
    gh_security_reclaim();
}
