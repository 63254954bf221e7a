/*
 * authservice: x:AuthService objects — an nginx-compatible auth_http service that front
 * doors consult to authenticate a client and learn which backend serves that user
 * (SPEC §13). Stored and validated here; the engine gets an immutable set of them.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/service.h"
#include "core/log.h"
#include "net/engine.h"
#include "objects/model.h"

#define G_SVC    "Auth service"
#define G_BACKND "Backend"

static const struct gh_enum_value forwarding[] = {
    {"proxyV2", "PROXY protocol v2"},
    {"proxyV1", "PROXY protocol v1"},
    {"none", "None"},
    {NULL, NULL},
};

/* http:// or https:// followed by a host; no spaces or control characters. */
static bool check_url(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    const char *rest = !strncasecmp(s, "http://", 7)    ? s + 7
                       : !strncasecmp(s, "https://", 8) ? s + 8
                                                        : NULL;
    if (!rest)
        return gh_fail(err, "\"%s\": the URL must start with http:// or https://", s);
    if (!*rest || *rest == '/' || *rest == ':')
        return gh_fail(err, "\"%s\": the URL names no host", s);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return gh_fail(err, "the URL must not contain spaces or control characters");
    return true;
}

/* "Name: value": a header field name of token characters, a colon, a value without CR,
 * LF or NUL. Headers the request sets itself may not be overridden. */
static bool check_header(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    const char *colon = strchr(s, ':');
    if (!colon || colon == s)
        return gh_fail(err, "\"%s\": expected \"Name: value\"", s);
    for (const char *p = s; p < colon; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return gh_fail(err,
                           "\"%s\": the header name may hold only letters, digits and "
                           "!#$%%&'*+-.^_`|~",
                           s);
    for (const unsigned char *p = (const unsigned char *)colon; *p; p++)
        if (*p < 0x20 && *p != '\t')
            return gh_fail(err, "a header value must not contain control characters");
    size_t n = (size_t)(colon - s);
    if ((n > 5 && !strncasecmp(s, "Auth-", 5)) || (n == 4 && !strncasecmp(s, "Host", 4)) ||
        (n > 7 && !strncasecmp(s, "Client-", 7)))
        return gh_fail(err, "\"%.*s\" is set by the server itself", (int)n, s);
    return true;
}

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = G_SVC,
     .description = "Server-assigned identifier"},
    {.name = "name",
     .type = GH_PT_STRING,
     .max_len = 64,
     .check = gh_check_name,
     .label = "Name",
     .group = G_SVC,
     .description = "A name for the auth service",
     .rule = "1-64 characters of A-Za-z0-9._-; unique (case-insensitive); \"auth\" when "
             "omitted",
     .filter = GH_FILTER_TEXT,
     .sortable = true},
    {.name = "url",
     .type = GH_PT_STRING,
     .required = true,
     .max_len = 2048,
     .check = check_url,
     .label = "URL",
     .group = G_SVC,
     .description = "The auth_http service asked about each login (GET, nginx's mail "
                    "auth_http protocol)",
     .rule = "http:// or https:// URL",
     .filter = GH_FILTER_TEXT},
    {.name = "timeout",
     .type = GH_PT_DURATION,
     .def = "\"10s\"",
     .max = 3600000,
     .label = "Timeout",
     .group = G_SVC,
     .description = "How long to wait for the service's answer; then the client gets a "
                    "temporary failure",
     .rule = "more than 0, at most 1h"},
    {.name = "headers",
     .type = GH_PT_STRING,
     .list = true,
     .max_len = 1024,
     .max_items = 32,
     .check = check_header,
     .label = "Extra headers",
     .group = G_SVC,
     .description = "Header lines sent with each request, such as a shared key",
     .rule = "\"Name: value\"; not Host, Auth-* or Client-*"},
    {.name = "listeners",
     .type = GH_PT_STRING,
     .list = true,
     .required = true,
     .min_items = 1,
     .max_len = 64,
     .check = gh_check_name,
     .label = "Listeners",
     .group = G_SVC,
     .description = "Names of the mail listeners whose clients log in through this "
                    "service",
     .rule = "at least one SMTP, IMAP, POP3 or ManageSieve listener; a listener is served "
             "by at most one auth service"},
    {.name = "forwarding",
     .type = GH_PT_ENUM,
     .def = "\"proxyV2\"",
     .values = forwarding,
     .label = "Client address forwarding",
     .group = G_BACKND,
     .description = "How the backend the service names is told the real client address"},
    {.name = "xclient",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "XCLIENT",
     .group = G_BACKND,
     .description = "SMTP backends that offer XCLIENT are told the client's address, "
                    "hello name and login"},
    {.name = "passErrorMessage",
     .type = GH_PT_BOOLEAN,
     .def = "false",
     .label = "Pass error message",
     .group = G_BACKND,
     .description = "Show clients the service's Auth-Status text on a failed login "
                    "instead of the protocol's standard message"},
};

static bool is_mail(const char *proto)
{
    return proto && (!strcmp(proto, "smtp") || !strcmp(proto, "imap") || !strcmp(proto, "pop3") ||
                     !strcmp(proto, "manageSieve"));
}

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

/* Every named listener that exists must be a mail listener, at least one must exist, and
 * no other auth service may serve the same one. */
static void check_listeners(struct gh_objtype *t, json_t *obj, struct gh_verr *ve)
{
    json_t *names = json_object_get(obj, "listeners");
    const char *id = json_string_value(json_object_get(obj, "id"));
    bool some_mail = false;
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        const char *name = json_string_value(v);
        json_t *l = gh_obj_find_name(&gh_type_listener, name, NULL);
        const char *proto = l ? json_string_value(json_object_get(l, "protocol")) : NULL;
        if (l && !is_mail(proto)) {
            gh_verr_add(ve, "listeners",
                        "listener \"%s\" speaks %s: an auth service serves SMTP, IMAP, POP3 "
                        "and ManageSieve listeners",
                        name, proto ? proto : "?");
            return;
        }
        some_mail |= l != NULL;
        size_t j;
        json_t *other;
        json_array_foreach(t->objs, j, other)
        {
            const char *oid = json_string_value(json_object_get(other, "id"));
            if (id && oid && !strcmp(id, oid))
                continue;
            if (names_listener(json_object_get(other, "listeners"), name)) {
                gh_verr_add(ve, "listeners",
                            "listener \"%s\" is already served by auth service \"%s\"", name,
                            json_string_value(json_object_get(other, "name")));
                return;
            }
        }
    }
    if (!some_mail)
        gh_verr_add(ve, "listeners",
                    "name at least one existing SMTP, IMAP, POP3 or ManageSieve listener");
}

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    if (!obj)
        return;
    gh_name_unique(t, obj, old, "auth", ve);
    check_listeners(t, obj, ve);
}

/* One service as the engine sees it; false when a stored value no longer fits. */
static bool to_engine(const json_t *o, struct gh_auth_service *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", json_string_value(json_object_get(o, "name")));
    const char *url = json_string_value(json_object_get(o, "url"));
    if (!url || !(s->url = strdup(url)))
        return false;
    uint64_t ms = 10000;
    gh_duration_parse(json_object_get(o, "timeout"), &ms, NULL);
    s->timeout_ms = (uint32_t)ms;
    const char *fwd = json_string_value(json_object_get(o, "forwarding"));
    s->forwarding = !fwd || !strcmp(fwd, "proxyV2") ? GH_FWD_PROXY_V2
                    : !strcmp(fwd, "proxyV1")       ? GH_FWD_PROXY_V1
                                                    : GH_FWD_NONE;
    s->xclient = json_is_true(json_object_get(o, "xclient"));
    s->pass_error_message = json_is_true(json_object_get(o, "passErrorMessage"));
    json_t *h = json_object_get(o, "headers");
    s->nheaders = (unsigned)json_array_size(h);
    s->headers = s->nheaders ? calloc(s->nheaders, sizeof *s->headers) : NULL;
    for (unsigned i = 0; s->headers && i < s->nheaders; i++)
        s->headers[i] = strdup(json_string_value(json_array_get(h, i)));
    json_t *names = json_object_get(o, "listeners");
    s->nlisteners = (unsigned)json_array_size(names);
    s->listeners = s->nlisteners ? calloc(s->nlisteners, sizeof *s->listeners) : NULL;
    for (unsigned i = 0; s->listeners && i < s->nlisteners; i++)
        snprintf(s->listeners[i], sizeof s->listeners[i], "%s",
                 json_string_value(json_array_get(names, i)));
    return (!s->nheaders || s->headers) && (!s->nlisteners || s->listeners);
}

void gh_auth_services_apply(void)
{
    if (!gh_model.engine)
        return;
    size_t n = json_array_size(gh_type_authservice.objs), k = 0;
    struct gh_auth_service *s = calloc(n ? n : 1, sizeof *s);
    if (!s)
        return;
    for (size_t i = 0; i < n; i++) {
        if (to_engine(json_array_get(gh_type_authservice.objs, i), &s[k]))
            k++;
        else
            gh_auth_service_clear(&s[k]);
    }
    struct gh_auth_set *set = gh_auth_set_new(s, (unsigned)k);
    if (!set)
        gh_log(NULL, NULL, "auth-service-error", "out of memory applying auth services");
    else
        gh_engine_broadcast(gh_model.engine, gh_auth_set_install, set, gh_auth_set_release);
}

static void committed(struct gh_objtype *t)
{
    gh_auth_services_apply();
}

static const char *const groups[] = {G_SVC, G_BACKND, NULL};
static const char *const columns[] = {"name", "url", "listeners", "forwarding", NULL};

struct gh_objtype gh_type_authservice = {
    .type = "x:AuthService",
    .name = "AuthService",
    .cli_name = "auth-service",
    .label = "Auth service",
    .perm_prefix = "sysAuthService",
    .nav = "Settings › Authentication › Auth services",
    .id_prefix = 'u',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.validate = validate, .committed = committed},
};
