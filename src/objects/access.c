/*
 * access: the x:BlockedIp and x:AllowedIp objects (SPEC §11, Stalwart's names) — address
 * ranges kept out of, or always let into, every listener. Validated and stored here; the
 * address table the engine reads is built from them in security.c.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "net/addr.h"
#include "objects/model.h"
#include "security/security.h"

#define G_ENTRY "Entry"

static const struct gh_enum_value block_reasons[] = {
    {"manual", "Manual"},    {"authFailure", "Authentication failures"},
    {"loiter", "Loitering"}, {"scan", "Scanning"},
    {"rate", "Rate"},        {NULL, NULL},
};

/* ---- UTCDate ---- */

bool gh_utcdate_parse(const char *s, int64_t *ms)
{
    struct tm tm = {0};
    int frac = 0, n = 0;
    if (!s ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 19)
        return false;
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
        if (!digits)
            return false;
        for (; digits < 3; digits++)
            frac *= 10;
    }
    if (strcmp(p, "Z") || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || tm.tm_year < 1970)
        return false;
    int year = tm.tm_year, mon = tm.tm_mon, day = tm.tm_mday;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    struct tm back;
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != day || back.tm_mon != mon - 1 ||
        back.tm_year != year - 1900)
        return false; /* 31 February and the like */
    *ms = (int64_t)t * 1000 + frac;
    return true;
}

void gh_utcdate_format(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool check_utcdate(json_t **v, gh_err *err)
{
    int64_t ms;
    if (!gh_utcdate_parse(json_string_value(*v), &ms))
        return gh_fail(err,
                       "\"%.40s\" is not a UTCDate: write it as YYYY-MM-DDTHH:MM:SSZ (RFC 3339, "
                       "UTC)",
                       json_string_value(*v));
    char text[32];
    gh_utcdate_format(ms, text);
    json_decref(*v);
    *v = json_string(text);
    return true;
}

/* ---- the two tables ---- */

#define ID_PROP                                                                                    \
    {                                                                                              \
        .name = "id", .type = GH_PT_ID, .mut = GH_SERVER_SET, .label = "Id", .group = G_ENTRY,     \
        .description = "Server-assigned identifier"                                                \
    }

#define CREATED_PROP                                                                               \
    {                                                                                              \
        .name = "createdAt", .type = GH_PT_DATE, .mut = GH_SERVER_SET, .label = "Created",         \
        .group = G_ENTRY, .description = "When the entry was made", .sortable = true               \
    }

#define EXPIRES_PROP                                                                               \
    {                                                                                              \
        .name = "expiresAt", .type = GH_PT_DATE, .nullable = true, .check = check_utcdate,         \
        .label = "Expires", .group = G_ENTRY,                                                      \
        .description = "When the entry stops applying; the server then removes it. Empty: until "  \
                       "removed",                                                                  \
        .rule = "a UTCDate (YYYY-MM-DDTHH:MM:SSZ) or null", .sortable = true                       \
    }

static const struct gh_prop blocked_props[] = {
    ID_PROP,
    {.name = "address",
     .type = GH_PT_IPMASK,
     .required = true,
     .mut = GH_CREATE_ONLY,
     .label = "Address",
     .group = G_ENTRY,
     .description = "The address or range kept out: no greeting, no TLS, the connection is "
                    "closed at accept",
     .rule = "an IPv4 or IPv6 address, or a CIDR range with the host bits zero; unique",
     .filter = GH_FILTER_TEXT,
     .sortable = true},
    {.name = "reason",
     .type = GH_PT_ENUM,
     .def = "\"manual\"",
     .values = block_reasons,
     .label = "Reason",
     .group = G_ENTRY,
     .description = "Why the address is blocked: by hand, or the event that banned it",
     .filter = GH_FILTER_EQUALS,
     .sortable = true},
    CREATED_PROP,
    EXPIRES_PROP,
};

static const struct gh_prop allowed_props[] = {
    ID_PROP,
    {.name = "address",
     .type = GH_PT_IPMASK,
     .required = true,
     .mut = GH_CREATE_ONLY,
     .label = "Address",
     .group = G_ENTRY,
     .description = "The address or range always let in: never blocked, banned or held to the "
                    "per-address limits (the listener's maxConnections still counts it)",
     .rule = "an IPv4 or IPv6 address, or a CIDR range with the host bits zero; unique",
     .filter = GH_FILTER_TEXT,
     .sortable = true},
    {.name = "reason",
     .type = GH_PT_STRING,
     .nullable = true,
     .label = "Reason",
     .group = G_ENTRY,
     .description = "A note on why the address is allowed",
     .filter = GH_FILTER_TEXT},
    CREATED_PROP,
    EXPIRES_PROP,
};

/* ---- rules ---- */

static void unique_address(struct gh_objtype *t, json_t *obj, struct gh_verr *ve)
{
    const char *id = json_string_value(json_object_get(obj, "id"));
    const char *addr = json_string_value(json_object_get(obj, "address"));
    size_t i;
    json_t *o;
    json_array_foreach(t->objs, i, o)
    {
        const char *oid = json_string_value(json_object_get(o, "id"));
        const char *oaddr = json_string_value(json_object_get(o, "address"));
        if (addr && oaddr && !strcmp(addr, oaddr) && strcmp(oid, id)) {
            ve->type = "alreadyExists";
            snprintf(ve->existing, sizeof ve->existing, "%s", oid);
            gh_verr_add(ve, "address", "%s %s is already listed (id %s)", t->label, addr, oid);
            return;
        }
    }
}

/* The client the request comes from, as a socket address; false when unknown (the server
 * itself, or a unit test). */
static bool caller_address(struct gh_sockaddr *out)
{
    const char *c = gh_set_caller ? gh_set_caller->client : NULL;
    memset(out, 0, sizeof *out);
    if (!c || !*c)
        return false;
    if (inet_pton(AF_INET, c, &out->u.v4.sin_addr) == 1)
        out->u.sa.sa_family = AF_INET;
    else if (inet_pton(AF_INET6, c, &out->u.v6.sin6_addr) == 1)
        out->u.sa.sa_family = AF_INET6;
    else
        return false;
    return true;
}

static bool in_force(const json_t *o, int64_t now)
{
    int64_t exp;
    const char *e = json_string_value(json_object_get(o, "expiresAt"));
    return !e || !gh_utcdate_parse(e, &exp) || exp > now;
}

/* The lockout rule: a block that covers the caller is refused unless an allowed range at
 * least as specific as the block keeps the caller in (the most specific entry wins, and
 * allowed wins a tie). */
static void no_lockout(json_t *obj, struct gh_verr *ve)
{
    struct gh_sockaddr me;
    struct gh_ipmask block;
    const char *addr = json_string_value(json_object_get(obj, "address"));
    if (!caller_address(&me) || !addr || !gh_ipmask_parse(addr, &block, NULL) ||
        !gh_ipmask_match(&block, &me.u.sa) || !in_force(obj, gh_security_now_ms()))
        return;
    size_t i;
    json_t *o;
    json_array_foreach(gh_type_allowed_ip.objs, i, o)
    {
        struct gh_ipmask allow;
        const char *a = json_string_value(json_object_get(o, "address"));
        if (a && gh_ipmask_parse(a, &allow, NULL) && gh_ipmask_match(&allow, &me.u.sa) &&
            allow.prefix >= block.prefix && in_force(o, gh_security_now_ms()))
            return;
    }
    gh_verr_add(ve, "address",
                "%s covers %s, the address this request comes from: it would lock you out. "
                "Add an x:AllowedIp for your address first, or block from elsewhere",
                addr, gh_set_caller->client);
}

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    if (!old) {
        char now[32];
        gh_utcdate_format(gh_security_now_ms(), now);
        json_object_set_new(obj, "createdAt", json_string(now));
    }
    unique_address(t, obj, ve);
    if (t == &gh_type_blocked_ip && !old && gh_verr_ok(ve))
        no_lockout(obj, ve);
}

static void committed(struct gh_objtype *t)
{
    gh_security_committed();
}

static const char *const groups[] = {G_ENTRY, NULL};
static const char *const blocked_columns[] = {"address", "reason", "createdAt", "expiresAt", NULL};
static const char *const allowed_columns[] = {"address", "reason", "createdAt", "expiresAt", NULL};

struct gh_objtype gh_type_blocked_ip = {
    .type = "x:BlockedIp",
    .name = "BlockedIp",
    .cli_name = "blocked-ip",
    .label = "Blocked IP",
    .perm_prefix = "sysBlockedIp",
    .nav = "Settings › Security › Blocked IPs",
    .id_prefix = 'b',
    .groups = groups,
    .list_columns = blocked_columns,
    .props = blocked_props,
    .nprops = sizeof blocked_props / sizeof blocked_props[0],
    .hooks = {.validate = validate, .committed = committed},
};

struct gh_objtype gh_type_allowed_ip = {
    .type = "x:AllowedIp",
    .name = "AllowedIp",
    .cli_name = "allowed-ip",
    .label = "Allowed IP",
    .perm_prefix = "sysAllowedIp",
    .nav = "Settings › Security › Allowed IPs",
    .id_prefix = 'w',
    .groups = groups,
    .list_columns = allowed_columns,
    .props = allowed_props,
    .nprops = sizeof allowed_props / sizeof allowed_props[0],
    .hooks = {.validate = validate, .committed = committed},
};
