/*
 * destination: x:Destination objects — the backend mail servers sessions are handed to
 * (SPEC §6): address, how the client address is passed on, and which listeners use it.
 * Stored and validated here; the hand-off itself reads them elsewhere.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "net/handoff.h"

#include "net/addr.h"
#include "objects/model.h"

#define G_DEST            "Destination"
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

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    gh_name_unique(t, obj, old, json_string_value(json_object_get(obj, "protocol")), ve);
    keep_a_management_listener(obj, ve);
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
    uint64_t ms = 10000;
    gh_duration_parse(json_object_get(o, "connectTimeout"), &ms, NULL);
    d->connect_timeout_ms = (uint32_t)ms;
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

void gh_destinations_apply(void)
{
    if (!gh_model.engine)
        return;
    size_t n = json_array_size(gh_type_destination.objs), k = 0;
    struct gh_destination *d = calloc(n ? n : 1, sizeof *d);
    if (!d)
        return;
    for (size_t i = 0; i < n; i++)
        if (to_engine(json_array_get(gh_type_destination.objs, i), &d[k]))
            k++;
    if (!gh_engine_set_destinations(gh_model.engine, d, (unsigned)k))
        gh_log(NULL, NULL, "destinations-error", "out of memory applying destinations");
    for (size_t i = 0; i < k; i++)
        free(d[i].listeners);
    free(d);
}

static void committed(struct gh_objtype *t)
{
    gh_destinations_apply();
}

static const char *const groups[] = {G_DEST, NULL};
static const char *const columns[] = {"name", "protocol", "address", "forwarding", NULL};

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
