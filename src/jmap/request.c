/*
 * request: the JMAP API entry point (RFC 8620 §3). Parses a request body, checks it against
 * the Request type and the limits, runs each method call in order under the management lock
 * (resolving result references first) and builds the Response object or a request problem.
 */
#include "jmap/jmap.h"
#include "proto/http.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#define MAX_REFERENCES 256 /* result references resolved in one request (RFC 8620 §8.5) */

struct method {
    char *name;
    char *capability;
    gh_jmap_method_fn fn;
};

/* The registry is filled at start and read by every request; its own lock keeps it apart
 * from the management lock, so an object layer may register while holding that one. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct method *methods; /* owned; never shrinks */
static size_t nmethods, methods_cap;

static pthread_mutex_t management = PTHREAD_MUTEX_INITIALIZER;

/* Requests in flight per credential (running or waiting for the management lock), held to
 * maxConcurrentRequests. A full table lets requests through rather than refusing them. */
struct inflight {
    char username[65];
    unsigned n;
};
static struct inflight inflight[128];
static pthread_mutex_t inflight_lock = PTHREAD_MUTEX_INITIALIZER;

static bool inflight_enter(const char *username)
{
    bool ok = true;
    pthread_mutex_lock(&inflight_lock);
    struct inflight *slot = NULL, *free_slot = NULL;
    for (size_t i = 0; i < sizeof inflight / sizeof *inflight; i++) {
        if (inflight[i].n && !strcmp(inflight[i].username, username))
            slot = &inflight[i];
        else if (!inflight[i].n && !free_slot)
            free_slot = &inflight[i];
    }
    if (!slot && free_slot) {
        slot = free_slot;
        snprintf(slot->username, sizeof slot->username, "%s", username);
    }
    if (slot && slot->n >= GH_JMAP_MAX_CONCURRENT_REQUESTS)
        ok = false;
    else if (slot)
        slot->n++;
    pthread_mutex_unlock(&inflight_lock);
    return ok;
}

static void inflight_leave(const char *username)
{
    pthread_mutex_lock(&inflight_lock);
    for (size_t i = 0; i < sizeof inflight / sizeof *inflight; i++) {
        if (inflight[i].n && !strcmp(inflight[i].username, username)) {
            inflight[i].n--;
            break;
        }
    }
    pthread_mutex_unlock(&inflight_lock);
}

/* One request being processed. Owner: gh_jmap_handle's stack frame. */
struct gh_jmap_request {
    json_t *using;     /* the request's capability list (borrowed) */
    json_t *created;   /* creation id -> server id (owned) */
    json_t *responses; /* methodResponses so far (owned) */
    const struct gh_principal *who;
    unsigned references; /* result references resolved so far */
};

/* Set once a binary upgrade has handed the store to a new process. */
static atomic_bool management_retired;

void gh_jmap_retire(void)
{
    atomic_store(&management_retired, true);
}

void gh_jmap_lock(void)
{
    pthread_mutex_lock(&management);
}

void gh_jmap_unlock(void)
{
    pthread_mutex_unlock(&management);
}

void gh_jmap_register(const char *method, const char *capability, gh_jmap_method_fn fn)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < nmethods; i++) {
        if (!strcmp(methods[i].name, method)) {
            free(methods[i].capability);
            methods[i].capability = strdup(capability);
            methods[i].fn = fn;
            pthread_mutex_unlock(&registry_lock);
            return;
        }
    }
    if (nmethods == methods_cap) {
        size_t cap = methods_cap ? methods_cap * 2 : 32;
        struct method *m = realloc(methods, cap * sizeof *m);
        if (!m) {
            pthread_mutex_unlock(&registry_lock);
            return;
        }
        methods = m;
        methods_cap = cap;
    }
    methods[nmethods++] =
        (struct method){.name = strdup(method), .capability = strdup(capability), .fn = fn};
    pthread_mutex_unlock(&registry_lock);
}

static bool lookup(const char *name, struct method *out)
{
    bool found = false;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < nmethods && !found; i++) {
        if (methods[i].name && !strcmp(methods[i].name, name)) {
            *out = methods[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    return found;
}

json_t *gh_jmap_error(const char *type, const char *description_fmt, ...)
{
    json_t *e = json_pack("{ss}", "type", type);
    if (e && description_fmt) {
        char text[1024];
        va_list ap;
        va_start(ap, description_fmt);
        vsnprintf(text, sizeof text, description_fmt, ap);
        va_end(ap);
        json_object_set_new(e, "description", json_string(text));
    }
    return e;
}

static const char *problem_title(int status, const char *type)
{
    if (!strcmp(type, GH_JMAP_PROBLEM_NOT_JSON))
        return "Not JSON";
    if (!strcmp(type, GH_JMAP_PROBLEM_NOT_REQUEST))
        return "Not a JMAP request";
    if (!strcmp(type, GH_JMAP_PROBLEM_UNKNOWN_CAPABILITY))
        return "Unknown capability";
    if (!strcmp(type, GH_JMAP_PROBLEM_LIMIT))
        return "Request limit exceeded";
    return gh_http_reason(status);
}

char *gh_jmap_problem(int status, const char *type, const char *limit, const char *detail)
{
    json_t *p = json_pack("{ss si ss}", "type", type, "status", status, "title",
                          problem_title(status, type));
    if (!p)
        return NULL;
    if (detail)
        json_object_set_new(p, "detail", json_string(detail));
    if (limit)
        json_object_set_new(p, "limit", json_string(limit));
    char *out = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    return out;
}

static int fail(char **response, bool *problem, int status, const char *type, const char *limit,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail(char **response, bool *problem, int status, const char *type, const char *limit,
                const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    *response = gh_jmap_problem(status, type, limit, detail);
    *problem = true;
    return status;
}

/* The text of a JSON string without U+0000 (the only strings compared as C strings here),
 * else NULL: a U+0000 would silently cut the string at that point. */
static const char *plain(const json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

bool gh_jmap_valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 255)
        return false;
    for (const char *p = s; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

const char *gh_jmap_created_id(struct gh_jmap_request *req, const char *creation_id)
{
    return json_string_value(json_object_get(req->created, creation_id));
}

void gh_jmap_set_created_id(struct gh_jmap_request *req, const char *creation_id, const char *id)
{
    json_object_set_new(req->created, creation_id, json_string(id));
}

const char *gh_jmap_resolve_id(struct gh_jmap_request *req, const char *id)
{
    if (id[0] != '#')
        return id;
    return gh_jmap_created_id(req, id + 1);
}

/* ---- request shape (notRequest) ---- */

static bool using_has(json_t *using, const char *cap)
{
    size_t i;
    json_t *v;
    json_array_foreach(using, i, v)
    {
        if (!strcmp(json_string_value(v), cap))
            return true;
    }
    return false;
}

/* Fills why and returns false when the body is JSON but not a Request. */
static bool check_shape(json_t *root, char *why, size_t cap)
{
    if (!json_is_object(root))
        return snprintf(why, cap, "the request must be a JSON object"), false;
    json_t *using = json_object_get(root, "using"), *calls = json_object_get(root, "methodCalls");
    if (!json_is_array(using))
        return snprintf(why, cap, "\"using\" must be an array of capability strings"), false;
    size_t i;
    json_t *v;
    json_array_foreach(using, i, v)
    {
        if (!json_is_string(v))
            return snprintf(why, cap, "\"using\"[%zu] is not a string", i), false;
    }
    if (!json_is_array(calls))
        return snprintf(why, cap, "\"methodCalls\" must be an array of Invocations"), false;
    json_array_foreach(calls, i, v)
    {
        if (!json_is_array(v) || json_array_size(v) != 3 || !json_is_string(json_array_get(v, 0)) ||
            !json_is_object(json_array_get(v, 1)) || !json_is_string(json_array_get(v, 2)))
            return snprintf(why, cap,
                            "\"methodCalls\"[%zu] must be [name (String), arguments (Object), "
                            "method call id (String)]",
                            i),
                   false;
    }
    json_t *created = json_object_get(root, "createdIds");
    if (created && !json_is_null(created)) {
        if (!json_is_object(created))
            return snprintf(why, cap, "\"createdIds\" must be an object of Id to Id"), false;
        const char *k;
        json_object_foreach(created, k, v)
        {
            if (!gh_jmap_valid_id(k) || !plain(v) || !gh_jmap_valid_id(plain(v)))
                return snprintf(why, cap, "\"createdIds\" must map Ids to Ids"), false;
        }
    }
    return true;
}

/* ---- result references (RFC 8620 §3.7) ---- */

/* The first earlier response with the reference's call id, checked against its name. */
static json_t *eval_reference(struct gh_jmap_request *r, json_t *ref, char *why, size_t cap)
{
    const char *of = plain(json_object_get(ref, "resultOf"));
    const char *name = plain(json_object_get(ref, "name"));
    const char *path = plain(json_object_get(ref, "path"));
    if (!json_is_object(ref) || !of || !name || !path) {
        snprintf(why, cap,
                 "a ResultReference needs \"resultOf\", \"name\" and \"path\" strings "
                 "without U+0000");
        return NULL;
    }
    if (++r->references > MAX_REFERENCES) {
        snprintf(why, cap, "more than %d result references in one request", MAX_REFERENCES);
        return NULL;
    }
    size_t i;
    json_t *resp;
    json_array_foreach(r->responses, i, resp)
    {
        const char *id = plain(json_array_get(resp, 2));
        if (!id || strcmp(id, of))
            continue;
        const char *got = json_string_value(json_array_get(resp, 0));
        if (strcmp(got, name)) {
            snprintf(why, cap, "the response of call \"%.100s\" is %.100s, not %.100s", of, got,
                     name);
            return NULL;
        }
        json_t *v = gh_jmap_pointer(json_array_get(resp, 1), path);
        if (!v)
            snprintf(why, cap, "the path \"%.200s\" does not resolve in the response of \"%.100s\"",
                     path, of);
        return v;
    }
    snprintf(why, cap, "no earlier method call has the id \"%.100s\"", of);
    return NULL;
}

/* Replaces every "#name" argument by the value it references; an error object on failure. */
static json_t *resolve_references(struct gh_jmap_request *r, json_t *args)
{
    json_t *resolved = json_object(), *v;
    const char *key;
    void *tmp;
    char why[512];
    json_object_foreach(args, key, v)
    {
        if (key[0] != '#')
            continue;
        if (json_object_get(args, key + 1)) {
            json_decref(resolved);
            return gh_jmap_error("invalidArguments",
                                 "the argument \"%.100s\" is given both plainly and as a "
                                 "result reference",
                                 key + 1);
        }
        json_t *value = eval_reference(r, v, why, sizeof why);
        if (!value) {
            json_decref(resolved);
            return gh_jmap_error("invalidResultReference", "%s: %s", key, why);
        }
        json_object_set_new(resolved, key + 1, value);
    }
    json_object_foreach_safe(args, tmp, key, v)
    {
        if (key[0] == '#')
            json_object_del(args, key);
    }
    json_object_update(args, resolved);
    json_decref(resolved);
    return NULL;
}

/* Strings are kept length-counted only by Core/echo; methods get C strings, so a U+0000
 * inside one would silently cut it. Refuse instead. */
static bool has_nul(json_t *v)
{
    size_t i;
    const char *k;
    json_t *x;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return strlen(json_string_value(v)) != json_string_length(v);
    case JSON_ARRAY:
        json_array_foreach(v, i, x)
        {
            if (has_nul(x))
                return true;
        }
        return false;
    case JSON_OBJECT:
        json_object_foreach(v, k, x)
        {
            if (has_nul(x))
                return true;
        }
        return false;
    default:
        return false;
    }
}

static bool may_use_account(const struct gh_principal *who)
{
    return who->admin || json_array_size(who->permissions) > 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Checks in Cyrus's order, with references first (§3.7): method known and in using,
 * references, accountId, account capability, read-only, then the method itself. */
static json_t *run_call(struct gh_jmap_request *r, const char *name, json_t *args,
                        const char *call_id, json_t **error)
{
    if (!using_has(r->using, GH_JMAP_CAP_CORE)) {
        *error = gh_jmap_error("unknownMethod", "\"%s\" must be in \"using\"", GH_JMAP_CAP_CORE);
        return NULL;
    }
    bool echo = !strcmp(name, "Core/echo");
    struct method m = {0};
    if (!echo && !lookup(name, &m)) {
        *error = gh_jmap_error("unknownMethod", "there is no method \"%.200s\"", name);
        return NULL;
    }
    if (!echo && !using_has(r->using, m.capability)) {
        *error = gh_jmap_error("unknownMethod", "\"%.200s\" needs \"%s\" in \"using\"", name,
                               m.capability);
        return NULL;
    }
    if ((*error = resolve_references(r, args)))
        return NULL;
    if (echo)
        return json_incref(args);

    json_t *account = json_object_get(args, "accountId");
    if (account && !json_is_null(account)) {
        if (!json_is_string(account)) {
            *error = gh_jmap_error("invalidArguments", "accountId must be a string");
            return NULL;
        }
        if (strcmp(json_string_value(account), GH_JMAP_ACCOUNT_ID)) {
            *error =
                gh_jmap_error("accountNotFound", "the only account is \"%s\"", GH_JMAP_ACCOUNT_ID);
            return NULL;
        }
    } else {
        json_object_set_new(args, "accountId", json_string(GH_JMAP_ACCOUNT_ID));
    }
    if (!strcmp(m.capability, GH_JMAP_CAP_STALWART) && !may_use_account(r->who)) {
        *error = gh_jmap_error("accountNotSupportedByMethod",
                               "this credential has no permission on the account");
        return NULL;
    }
    if (ends_with(name, "/set") && gh_jmap_read_only(r->who)) {
        *error = gh_jmap_error("accountReadOnly",
                               "this credential has no create, update or destroy permission");
        return NULL;
    }
    if (has_nul(args)) {
        *error = gh_jmap_error("invalidArguments", "strings must not contain U+0000");
        return NULL;
    }
    struct gh_jmap_call call = {
        .method = name,
        .args = args,
        .call_id = call_id,
        .who = r->who,
        .req = r,
    };
    json_t *result = m.fn(&call, error);
    if (!result && !*error)
        *error = gh_jmap_error("serverFail", "the method gave no result");
    return result;
}

static void run_calls(struct gh_jmap_request *r, json_t *calls)
{
    size_t i;
    json_t *inv;
    json_array_foreach(calls, i, inv)
    {
        const char *name = json_string_value(json_array_get(inv, 0));
        json_t *args = json_array_get(inv, 1);
        json_t *id = json_array_get(inv, 2);
        json_t *error = NULL;
        json_t *result = NULL;
        if (!plain(json_array_get(inv, 0)) || !plain(id))
            error = gh_jmap_error("invalidArguments",
                                  "the method name and call id must not contain U+0000");
        else
            result = run_call(r, name, args, json_string_value(id), &error);
        if (result) {
            json_array_append_new(r->responses, json_pack("[s o O]", name, result, id));
        } else {
            if (!error)
                error = gh_jmap_error("serverFail", NULL);
            json_array_append_new(r->responses, json_pack("[s o O]", "error", error, id));
        }
    }
}

int gh_jmap_handle(const char *body, size_t len, const struct gh_principal *who, char **response,
                   bool *problem)
{
    *response = NULL;
    *problem = false;
    if (len > GH_JMAP_MAX_SIZE_REQUEST)
        return fail(response, problem, 413, GH_JMAP_PROBLEM_LIMIT, "maxSizeRequest",
                    "the request is larger than maxSizeRequest (%d bytes)",
                    GH_JMAP_MAX_SIZE_REQUEST);
    json_error_t jerr;
    json_t *root =
        json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!root)
        return fail(response, problem, 400, GH_JMAP_PROBLEM_NOT_JSON, NULL,
                    "the body is not valid I-JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                    jerr.column);
    char why[256];
    if (!check_shape(root, why, sizeof why)) {
        json_decref(root);
        return fail(response, problem, 400, GH_JMAP_PROBLEM_NOT_REQUEST, NULL, "%s", why);
    }
    json_t *using = json_object_get(root, "using"), *v;
    size_t i;
    json_array_foreach(using, i, v)
    {
        const char *cap = plain(v);
        if (!cap || (strcmp(cap, GH_JMAP_CAP_CORE) && strcmp(cap, GH_JMAP_CAP_STALWART))) {
            int status = fail(response, problem, 400, GH_JMAP_PROBLEM_UNKNOWN_CAPABILITY, NULL,
                              "the capability \"%.200s\"%s is not supported", json_string_value(v),
                              cap ? "" : " (with U+0000)");
            json_decref(root);
            return status;
        }
    }
    json_t *calls = json_object_get(root, "methodCalls");
    if (json_array_size(calls) > GH_JMAP_MAX_CALLS_IN_REQUEST) {
        json_decref(root);
        return fail(response, problem, 400, GH_JMAP_PROBLEM_LIMIT, "maxCallsInRequest",
                    "more than maxCallsInRequest (%d) method calls", GH_JMAP_MAX_CALLS_IN_REQUEST);
    }

    if (!inflight_enter(who->username)) {
        json_decref(root);
        return fail(response, problem, 429, GH_JMAP_PROBLEM_LIMIT, "maxConcurrentRequests",
                    "more than maxConcurrentRequests (%d) requests of this credential at once",
                    GH_JMAP_MAX_CONCURRENT_REQUESTS);
    }
    json_t *created_in = json_object_get(root, "createdIds");
    bool echo_created = created_in && !json_is_null(created_in);
    struct gh_jmap_request r = {
        .using = using,
        .created = echo_created ? json_deep_copy(created_in) : json_object(),
        .responses = json_array(),
        .who = who,
    };
    gh_jmap_lock();
    bool retired = atomic_load(&management_retired);
    if (!retired)
        run_calls(&r, calls);
    gh_jmap_unlock();
    inflight_leave(who->username);
    if (retired) {
        json_decref(r.created);
        json_decref(r.responses);
        json_decref(root);
        return fail(response, problem, 503, "about:blank", NULL,
                    "this process has handed the service over to a new one; send the request "
                    "again");
    }

    char state[24];
    gh_jmap_session_state(who, state);
    json_t *out = json_pack("{s o s s}", "methodResponses", r.responses, "sessionState", state);
    if (out && echo_created)
        json_object_set(out, "createdIds", r.created);
    json_decref(r.created);
    json_decref(root);
    *response = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (!*response)
        return fail(response, problem, 500, "about:blank", NULL,
                    "the response could not be encoded");
    return 200;
}
