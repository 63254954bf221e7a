/*
 * destination: x:Destination objects — the backend mail servers sessions are handed to
 * (SPEC §6, §14): address, how the client address is passed on, which listeners use it,
 * its weight, its health checks and TLS to it, and the status the checks found. Stored and
 * validated here; the hand-off and the health checker read them elsewhere.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "health/health.h"
#include "net/handoff.h"
#include "store/store.h"

#include "net/addr.h"
#include "objects/model.h"

#define G_DEST            "Destination"
#define G_HEALTH          "Health checks"
#define G_TLS             "TLS to the backend"
#define G_STATUS          "Status"
#define UNIX_PATH_MAX_LEN 107 /* sun_path holds 108 bytes with the NUL */

static const struct gh_enum_value protocols[] = {
    {"smtp", "SMTP"},  {"lmtp", "LMTP"}, {"http", "HTTP"},
    {"imap", "IMAP4"}, {"pop3", "POP3"}, {"manageSieve", "ManageSieve"},
    {NULL, NULL},
};

static const struct gh_enum_value forwarding[] = {
    {"proxyV2", "PROXY protocol v2"},
    {"proxyV1", "PROXY protocol v1"},
    {"none", "None"},
    {NULL, NULL},
};

static const struct gh_enum_value tls_modes[] = {
    {"none", "None (plain TCP)"},
    {"implicit", "Implicit TLS"},
    {"starttls", "STARTTLS"},
    {NULL, NULL},
};

static const struct gh_enum_value statuses[] = {
    {"up", "Up"}, {"down", "Down"}, {"draining", "Draining"}, {"unknown", "Unknown"}, {NULL, NULL},
};

/* A DNS name: labels of letters, digits and hyphens, 1-253 characters. */
static bool check_server_name(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    size_t n = strlen(s);
    if (!n || n > 253)
        return gh_fail(err, "\"%s\": a server name is 1-253 characters", s);
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
            return gh_fail(err, "\"%s\": a server name has only letters, digits, '-' and '.'", s);
    return true;
}

/* "IPv4:port", "[IPv6]:port" (written canonically) or "unix:/absolute/path". */
static bool check_address(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    if (!strncmp(s, "unix:", 5)) {
        const char *path = s + 5;
        if (path[0] != '/')
            return gh_fail(err, "\"%s\": a unix socket path must be absolute (unix:/path)", s);
        if (strlen(path) > UNIX_PATH_MAX_LEN)
            return gh_fail(err, "\"%s\": a unix socket path is at most %d characters", s,
                           UNIX_PATH_MAX_LEN);
        return true;
    }
    struct gh_sockaddr a;
    if (!gh_sockaddr_parse(s, &a, err)) {
        gh_err_context(err, "expected IPv4:port, [IPv6]:port or unix:/path");
        return false;
    }
    char text[GH_ADDR_TEXT];
    gh_sockaddr_format(&a, text);
    json_decref(*v);
    *v = json_string(text);
    return true;
}

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = G_DEST,
     .description = "Server-assigned identifier"},
    {.name = "name",
     .type = GH_PT_STRING,
     .max_len = 64,
     .check = gh_check_name,
     .label = "Name",
     .group = G_DEST,
     .description = "A name for the destination",
     .rule = "1-64 characters of A-Za-z0-9._-; unique (case-insensitive); derived from the "
             "protocol when omitted",
     .filter = GH_FILTER_TEXT,
     .sortable = true},
    {.name = "protocol",
     .type = GH_PT_ENUM,
     .def = "\"smtp\"",
     .values = protocols,
     .label = "Protocol",
     .group = G_DEST,
     .description = "The protocol the backend speaks; sessions of listeners with this "
                    "protocol are handed to it",
     .filter = GH_FILTER_EQUALS,
     .sortable = true},
    {.name = "address",
     .type = GH_PT_STRING,
     .required = true,
     .max_len = 112,
     .check = check_address,
     .label = "Address",
     .group = G_DEST,
     .description = "Where the backend listens",
     .rule = "IPv4:port, [IPv6]:port or unix:/absolute/path"},
    {.name = "forwarding",
     .type = GH_PT_ENUM,
     .def = "\"proxyV2\"",
     .values = forwarding,
     .label = "Client address forwarding",
     .group = G_DEST,
     .description = "How the backend is told the real client address"},
    {.name = "listeners",
     .type = GH_PT_STRING,
     .list = true,
     .max_len = 64,
     .check = gh_check_name,
     .label = "Listeners",
     .group = G_DEST,
     .description = "Names of the listeners that use this destination; empty = every "
                    "listener of the protocol",
     .rule = "listener names; a name that matches no listener matches nothing"},
    {.name = "connectTimeout",
     .type = GH_PT_DURATION,
     .def = "\"10s\"",
     .max = 3600000,
     .label = "Connect timeout",
     .group = G_DEST,
     .description = "How long to wait for the backend's connection before trying the next "
                    "destination",
     .rule = "more than 0, at most 1h"},
    {.name = "weight",
     .type = GH_PT_UINT,
     .def = "1",
     .max = 1000,
     .label = "Weight",
     .group = G_DEST,
     .description = "Share of new sessions, relative to the other destinations of the same "
                    "listener; 0 drains it: no new sessions, those already relayed continue",
     .rule = "0-1000"},
    {.name = "healthCheck",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "Health checks",
     .group = G_HEALTH,
     .description = "Check the backend regularly by speaking its protocol (connect, greeting, "
                    "goodbye); new sessions skip a destination that is down"},
    {.name = "checkInterval",
     .type = GH_PT_DURATION,
     .def = "\"5s\"",
     .min = 100,
     .max = 3600000,
     .label = "Check interval",
     .group = G_HEALTH,
     .description = "Time between the start of one check and the next",
     .rule = "100ms to 1h"},
    {.name = "checkTimeout",
     .type = GH_PT_DURATION,
     .def = "\"2s\"",
     .max = 3600000,
     .label = "Check timeout",
     .group = G_HEALTH,
     .description = "How long one check may take, connection, TLS and greeting included, "
                    "before it counts as failed",
     .rule = "more than 0, at most 1h"},
    {.name = "rise",
     .type = GH_PT_UINT,
     .def = "2",
     .min = 1,
     .max = 100,
     .label = "Checks to come up",
     .group = G_HEALTH,
     .description = "Consecutive successful checks that bring a down destination back up",
     .rule = "1-100"},
    {.name = "fall",
     .type = GH_PT_UINT,
     .def = "3",
     .min = 1,
     .max = 100,
     .label = "Checks to go down",
     .group = G_HEALTH,
     .description = "Consecutive failed checks that mark a destination down",
     .rule = "1-100"},
    {.name = "tls",
     .type = GH_PT_ENUM,
     .def = "\"none\"",
     .values = tls_modes,
     .label = "TLS",
     .group = G_TLS,
     .description = "Encrypt the leg to the backend: implicit TLS from the first byte (after "
                    "any PROXY header), or the protocol's own STARTTLS (SMTP, LMTP, IMAP, POP3, "
                    "ManageSieve)",
     .rule = "starttls is not available for http"},
    {.name = "tlsVerify",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "Verify the backend's certificate",
     .group = G_TLS,
     .description = "Check the backend's certificate against the trust anchor (or the system "
                    "CA store) and its name against tlsServerName, or its IP address when "
                    "that is empty"},
    {.name = "tlsCaCertificateId",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 64,
     .label = "Trust anchor",
     .group = G_TLS,
     .description = "Id of an x:Certificate whose chain verifies the backend (a private CA, or "
                    "the backend's own certificate); empty = the system CA store",
     .rule = "the id of an existing x:Certificate"},
    {.name = "tlsServerName",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 253,
     .check = check_server_name,
     .label = "Server name",
     .group = G_TLS,
     .description = "Sent as SNI and checked against the backend's certificate; empty = no "
                    "SNI, and the certificate must name the address's IP",
     .rule = "a DNS name"},
    {.name = "status",
     .type = GH_PT_ENUM,
     .mut = GH_SERVER_SET,
     .values = statuses,
     .label = "Status",
     .group = G_STATUS,
     .description = "What the health checks found: up, down, draining (weight 0) or unknown "
                    "(not checked yet, or checks off)"},
    {.name = "statusChangedAt",
     .type = GH_PT_DATE,
     .mut = GH_SERVER_SET,
     .nullable = true,
     .label = "Status since",
     .group = G_STATUS,
     .description = "When the status last changed (UTC)"},
    {.name = "lastCheckError",
     .type = GH_PT_STRING,
     .mut = GH_SERVER_SET,
     .nullable = true,
     .label = "Last check error",
     .group = G_STATUS,
     .description = "Why the health check that last changed the status failed, or the "
                    "latest failure while down"},
};

static bool names_listener(const json_t *names, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        if (!strcasecmp(json_string_value(v), name))
            return true;
    }
    return false;
}

/* An HTTP destination takes over the listeners it serves, management API included; one
 * that would take them all leaves the operator no way back in, so it must name its own. */
static void keep_a_management_listener(json_t *obj, struct gh_verr *ve)
{
    const char *proto = json_string_value(json_object_get(obj, "protocol"));
    if (!proto || strcmp(proto, "http"))
        return;
    json_t *names = json_object_get(obj, "listeners");
    size_t i;
    json_t *l;
    json_array_foreach(gh_type_listener.objs, i, l)
    {
        const char *lp = json_string_value(json_object_get(l, "protocol"));
        const char *ln = json_string_value(json_object_get(l, "name"));
        if (lp && ln && !strcmp(lp, "http") && json_array_size(names) && !names_listener(names, ln))
            return; /* this HTTP listener stays with the management API */
    }
    gh_verr_add(ve, "listeners",
                "an HTTP destination must leave at least one HTTP listener to the management "
                "API: name the listeners it serves in listeners");
}

static json_t *now_utc(void)
{
    char buf[32];
    struct tm tm;
    time_t t = time(NULL);
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

static void set_status(json_t *obj, const char *status)
{
    const char *was = json_string_value(json_object_get(obj, "status"));
    if (was && !strcmp(was, status))
        return;
    json_object_set_new(obj, "status", json_string(status));
    json_object_set_new(obj, "statusChangedAt", now_utc());
}

static bool same_value(const json_t *a, const json_t *b, const char *key)
{
    return json_equal(json_object_get(a, key), json_object_get(b, key));
}

/* The status a change of settings implies; the health checker reports the rest. */
static void derive_status(json_t *obj, const json_t *old)
{
    json_int_t weight = json_integer_value(json_object_get(obj, "weight"));
    const char *was = json_string_value(json_object_get(obj, "status"));
    bool checks = json_is_true(json_object_get(obj, "healthCheck"));
    bool same_place = old && same_value(obj, old, "address") && same_value(obj, old, "protocol") &&
                      same_value(obj, old, "tls") && same_value(obj, old, "forwarding") &&
                      same_value(obj, old, "healthCheck");
    if (!json_object_get(obj, "lastCheckError"))
        json_object_set_new(obj, "lastCheckError", json_null());
    if (weight == 0)
        set_status(obj, "draining");
    else if (!checks || !was || !same_place)
        set_status(obj, "unknown");    /* checked afresh */
    else if (!strcmp(was, "draining")) /* back from draining: what the checks know */
        set_status(obj, gh_health_status_of(json_string_value(json_object_get(obj, "id"))));
}

static void check_tls(json_t *obj, struct gh_verr *ve)
{
    const char *tls = json_string_value(json_object_get(obj, "tls"));
    const char *proto = json_string_value(json_object_get(obj, "protocol"));
    if (tls && proto && !strcmp(tls, "starttls") && !strcmp(proto, "http"))
        gh_verr_add(ve, "tls", "HTTP has no STARTTLS: use implicit (https) or none");
    const char *ca = json_string_value(json_object_get(obj, "tlsCaCertificateId"));
    if (ca && !gh_obj_find(&gh_type_certificate, ca, NULL))
        gh_verr_add(ve, "tlsCaCertificateId", "no x:Certificate has the id \"%s\"", ca);
}

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    gh_name_unique(t, obj, old, json_string_value(json_object_get(obj, "protocol")), ve);
    keep_a_management_listener(obj, ve);
    check_tls(obj, ve);
    derive_status(obj, old);
}

/* One destination as the engine sees it; false when a stored value no longer parses. */
static bool to_engine(const json_t *o, struct gh_destination *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", json_string_value(json_object_get(o, "name")));
    const char *proto = json_string_value(json_object_get(o, "protocol"));
    for (int p = 0; p < GH_PROTO_COUNT; p++)
        if (proto && !strcmp(proto, gh_protocol_names[p]))
            d->protocol = (enum gh_protocol)p;
    const char *fwd = json_string_value(json_object_get(o, "forwarding"));
    d->forwarding = !fwd || !strcmp(fwd, "proxyV2") ? GH_FWD_PROXY_V2
                    : !strcmp(fwd, "proxyV1")       ? GH_FWD_PROXY_V1
                                                    : GH_FWD_NONE;
    snprintf(d->id, sizeof d->id, "%s", json_string_value(json_object_get(o, "id")));
    uint64_t ms = 10000;
    gh_duration_parse(json_object_get(o, "connectTimeout"), &ms, NULL);
    d->connect_timeout_ms = (uint32_t)ms;
    json_t *w = json_object_get(o, "weight");
    d->weight = w ? (uint32_t)json_integer_value(w) : 1;
    d->health_check = !json_is_false(json_object_get(o, "healthCheck"));
    ms = 5000;
    gh_duration_parse(json_object_get(o, "checkInterval"), &ms, NULL);
    d->check_interval_ms = (uint32_t)ms;
    ms = 2000;
    gh_duration_parse(json_object_get(o, "checkTimeout"), &ms, NULL);
    d->check_timeout_ms = (uint32_t)ms;
    json_t *rise = json_object_get(o, "rise"), *fall = json_object_get(o, "fall");
    d->rise = rise ? (uint32_t)json_integer_value(rise) : 2;
    d->fall = fall ? (uint32_t)json_integer_value(fall) : 3;
    const char *tls = json_string_value(json_object_get(o, "tls"));
    d->tls = !tls || !strcmp(tls, "none") ? GH_BTLS_NONE
             : !strcmp(tls, "implicit")   ? GH_BTLS_IMPLICIT
                                          : GH_BTLS_STARTTLS;
    d->tls_verify = !json_is_false(json_object_get(o, "tlsVerify"));
    snprintf(d->tls_server_name, sizeof d->tls_server_name, "%s",
             json_string_value(json_object_get(o, "tlsServerName"))
                 ? json_string_value(json_object_get(o, "tlsServerName"))
                 : "");
    const char *ca = json_string_value(json_object_get(o, "tlsCaCertificateId"));
    if (ca) { /* a trust anchor that is gone trusts nothing: "" fails closed */
        json_t *cert = gh_obj_find(&gh_type_certificate, ca, NULL);
        const char *pem = json_string_value(json_object_get(cert, "certificate"));
        d->tls_ca_pem = strdup(pem ? pem : "");
    }
    const char *addr = json_string_value(json_object_get(o, "address"));
    if (addr && !strncmp(addr, "unix:", 5)) {
        d->is_unix = true;
        snprintf(d->unix_path, sizeof d->unix_path, "%s", addr + 5);
    } else if (!addr || !gh_sockaddr_parse(addr, &d->addr, NULL)) {
        return false;
    }
    json_t *names = json_object_get(o, "listeners");
    size_t n = json_array_size(names);
    if (n && (d->listeners = calloc(n, sizeof *d->listeners))) {
        for (size_t i = 0; i < n; i++)
            snprintf(d->listeners[i], sizeof d->listeners[i], "%s",
                     json_string_value(json_array_get(names, i)));
        d->nlisteners = (unsigned)n;
    }
    return true;
}

static struct gh_dest_set *applied; /* the set last given out; under the management mutex */

void gh_destinations_apply(void)
{
    if (!gh_model.engine)
        return;
    size_t n = json_array_size(gh_type_destination.objs), k = 0;
    struct gh_destination *d = calloc(n ? n : 1, sizeof *d);
    if (!d)
        return;
    for (size_t i = 0; i < n; i++) {
        if (to_engine(json_array_get(gh_type_destination.objs, i), &d[k]))
            k++;
        else
            free(d[k].tls_ca_pem);
    }
    gh_err err = {0};
    struct gh_dest_set *s = gh_dest_set_new(d, (unsigned)k, applied, &err);
    if (s) {
        gh_engine_use_destinations(gh_model.engine, s);
        gh_health_watch(s);
        gh_dest_set_unref(applied);
        applied = s;
    } else {
        gh_log(NULL, NULL, "destinations-error", "%s", err.msg);
    }
    for (size_t i = 0; i < k; i++) {
        free(d[i].listeners);
        free(d[i].tls_ca_pem);
    }
    free(d);
}

void gh_destinations_release(void)
{
    gh_dest_set_unref(applied);
    applied = NULL;
}

/* From the health checker's thread: records what a check found, when it changes what the
 * object says (a store write, so every client sees it pushed and /changes lists it). */
static void record_check(const char *id, enum gh_dest_status found, const char *error)
{
    gh_objects_lock();
    size_t index;
    json_t *cur = gh_obj_find(&gh_type_destination, id, &index);
    if (!cur) {
        gh_objects_unlock();
        return;
    }
    json_t *obj = json_deep_copy(cur);
    if (json_integer_value(json_object_get(obj, "weight")) > 0)
        set_status(obj, found == GH_DEST_UP ? "up" : found == GH_DEST_DOWN ? "down" : "unknown");
    /* the reason is kept when it explains the status (so a check failing now and then
     * below fall writes nothing) */
    const char *status = json_string_value(json_object_get(obj, "status"));
    if (error && (!same_value(obj, cur, "status") || (status && !strcmp(status, "down"))))
        json_object_set_new(obj, "lastCheckError", json_string(error));
    if (json_equal(obj, cur)) {
        json_decref(obj);
        gh_objects_unlock();
        return;
    }
    if (!same_value(obj, cur, "status"))
        gh_log(NULL, NULL, "destination-status", "destination %s: %s%s%s",
               json_string_value(json_object_get(obj, "name")),
               json_string_value(json_object_get(obj, "status")), error ? ": " : "",
               error ? error : "");
    char *text = json_dumps(obj, JSON_COMPACT);
    uint64_t seq = 0;
    gh_err err = {0};
    bool ok = text && gh_store_begin(gh_model.store, &err);
    if (ok &&
        (!gh_store_put(gh_model.store, gh_type_destination.type, id, text, &err) ||
         !gh_store_log_change(gh_model.store, gh_type_destination.type, id, 'u', &seq, &err) ||
         !gh_store_commit(gh_model.store, &err))) {
        gh_store_rollback(gh_model.store);
        ok = false;
    }
    free(text);
    if (ok) {
        gh_sync_note(seq);
        json_array_set_new(gh_type_destination.objs, index, obj);
        char state[64];
        gh_type_state(&gh_type_destination, state);
        gh_jmap_state_changed(gh_type_destination.type, state);
    } else {
        gh_log(NULL, NULL, "store-error", "destination status: %s", err.msg);
        json_decref(obj);
    }
    gh_objects_unlock();
}

void gh_destinations_init(void)
{
    gh_health_set_reporter(record_check);
}

static void committed(struct gh_objtype *t)
{
    gh_destinations_apply();
}

static const char *const groups[] = {G_DEST, G_HEALTH, G_TLS, G_STATUS, NULL};
static const char *const columns[] = {"name",   "protocol", "address", "weight",
                                      "status", "tls",      NULL};

struct gh_objtype gh_type_destination = {
    .type = "x:Destination",
    .name = "Destination",
    .cli_name = "destination",
    .label = "Destination",
    .perm_prefix = "sysDestination",
    .nav = "Settings › Network › Destinations",
    .id_prefix = 'd',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.validate = validate, .committed = committed},
};
