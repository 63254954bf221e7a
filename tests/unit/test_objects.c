/*
 * test_objects: the object layer through its JMAP methods, on a real SQLite store in a
 * temporary directory and without an engine: every listener rule of SPEC §2, /set
 * semantics, /get, /query, /changes, /queryChanges, permissions, the singleton, API keys,
 * destinations, store failures and reloading from the store.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "objects/model.h"
#include "objects/objects.h"
#include "store/store.h"

static const struct gh_principal admin = {.username = "admin", .admin = true};
static char dir[64];
static struct gh_store *store;

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/gh-objects-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char url[128];
    snprintf(url, sizeof url, "sqlite:%s/db", dir);
    gh_err err = {0};
    store = gh_store_open(url, &err);
    assert_non_null(store);
    struct gh_objects_options opt = {
        .store = store, .http_bind = "127.0.0.1:1", .admin_secret = "admin-secret"};
    assert_true(gh_objects_init(&opt, &err));
    return 0;
}

static int teardown(void **state)
{
    gh_objects_shutdown();
    gh_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* Calls a method; returns its response arguments or {"error": the method error}. */
static json_t *jcall_as(const struct gh_principal *who, const char *method, const char *fmt, ...)
{
    static char args_text[65536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args_text, sizeof args_text, fmt, ap);
    va_end(ap);
    json_error_t jerr;
    json_t *args = json_loads(args_text, 0, &jerr);
    if (!args)
        fail_msg("bad test JSON %s: %s", args_text, jerr.text);
    struct gh_jmap_call call = {.method = method, .args = args, .call_id = "c", .who = who};
    json_t *error = NULL, *res;
    const char *kind = strchr(method, '/') + 1;
    if (!strcmp(kind, "get"))
        res = gh_method_get(&call, &error);
    else if (!strcmp(kind, "set"))
        res = gh_method_set(&call, &error);
    else if (!strcmp(kind, "query"))
        res = gh_method_query(&call, &error);
    else if (!strcmp(kind, "changes"))
        res = gh_method_changes(&call, &error);
    else
        res = gh_method_query_changes(&call, &error);
    json_decref(args);
    if (!res) {
        assert_non_null(error);
        return json_pack("{so}", "error", error);
    }
    return res;
}

#define jcall(...) jcall_as(&admin, __VA_ARGS__)
#define NL         "x:NetworkListener"

static const char *err_type(const json_t *res)
{
    return json_string_value(json_object_get(json_object_get(res, "error"), "type"));
}

/* Creates a listener from props JSON; returns its id (static buffer) or NULL with the
 * SetError in *why (new reference) when why is given. */
static const char *create_l(const char *props, json_t **why)
{
    static char id[32];
    json_t *r = jcall(NL "/set", "{\"create\": {\"n\": %s}}", props);
    json_t *c = json_object_get(json_object_get(r, "created"), "n");
    if (!c) {
        if (why)
            *why = json_incref(json_object_get(json_object_get(r, "notCreated"), "n"));
        json_decref(r);
        return NULL;
    }
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(c, "id")));
    json_decref(r);
    return id;
}

static bool lists_prop(const json_t *seterr, const char *prop)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(seterr, "properties"), i, v)
    {
        if (!strcmp(json_string_value(v), prop))
            return true;
    }
    return false;
}

/* Asserts that a create is refused with invalidProperties naming prop. */
static void refused(const char *props, const char *prop)
{
    json_t *why = NULL;
    const char *id = create_l(props, &why);
    if (id)
        fail_msg("accepted: %s", props);
    assert_string_equal(json_string_value(json_object_get(why, "type")), "invalidProperties");
    if (!lists_prop(why, prop))
        fail_msg("%s: properties do not name %s", props, prop);
    assert_true(strlen(json_string_value(json_object_get(why, "description"))) > 5);
    json_decref(why);
}

static json_t *get_one(const char *type, const char *id)
{
    json_t *r = jcall_as(&admin, "x:NetworkListener/get", "{\"ids\": [\"%s\"]}", id);
    (void)type;
    json_t *o = json_incref(json_array_get(json_object_get(r, "list"), 0));
    json_decref(r);
    return o;
}

static char *state_of(const char *type)
{
    static char s[64];
    gh_type_state(gh_type_by_name(type), s);
    return s;
}

/* ---- listener rules ---- */

static void bootstrap_created_http_listener(void **state)
{
    json_t *r = jcall(NL "/get", "{}");
    json_t *list = json_object_get(r, "list");
    assert_int_equal(json_array_size(list), 1);
    json_t *l = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(l, "name")), "http");
    assert_string_equal(json_string_value(json_object_get(l, "protocol")), "http");
    assert_string_equal(json_string_value(json_array_get(json_object_get(l, "bind"), 0)),
                        "127.0.0.1:1");
    json_decref(r);
}

static void created_has_defaults_and_normalised_values(void **state)
{
    json_t *r = jcall(NL "/set", "{\"create\": {\"n\": {\"bind\": {\"127.0.0.1:2525\": true}, "
                                 "\"tlsTimeout\": \"60000\"}}}");
    json_t *c = json_object_get(json_object_get(r, "created"), "n");
    assert_non_null(c);
    const char *id = json_string_value(json_object_get(c, "id"));
    assert_true(id[0] >= 'a' && id[0] <= 'z');
    assert_null(strstr(id, "NIL"));
    assert_string_equal(json_string_value(json_object_get(c, "name")), "smtp");
    assert_string_equal(json_string_value(json_object_get(c, "tlsTimeout")), "1m");
    assert_string_equal(json_string_value(json_object_get(c, "protocol")), "smtp");
    assert_int_equal(json_integer_value(json_object_get(c, "socketBacklog")), 1024);
    assert_int_equal(json_integer_value(json_object_get(c, "maxConnections")), 8192);
    assert_true(json_is_array(json_object_get(c, "bind")));
    assert_true(json_is_null(json_object_get(c, "socketTtl")));
    assert_true(json_is_null(json_object_get(r, "notCreated")));
    assert_string_not_equal(json_string_value(json_object_get(r, "oldState")),
                            json_string_value(json_object_get(r, "newState")));
    json_decref(r);
}

static void name_derived_and_unique(void **state)
{
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:2001\"]}", NULL));
    const char *id2 = create_l("{\"bind\": [\"127.0.0.1:2002\"]}", NULL);
    json_t *o = get_one(NL, id2);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "smtp-2");
    json_decref(o);
    const char *id3 = create_l("{\"bind\": [\"127.0.0.1:2003\"], \"protocol\": \"imap\"}", NULL);
    o = get_one(NL, id3);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "imap");
    json_decref(o);
    char first[32];
    snprintf(first, sizeof first, "%s",
             create_l("{\"name\": \"Mx\", \"bind\": [\"127.0.0.1:2004\"]}", NULL));
    json_t *why = NULL;
    assert_null(create_l("{\"name\": \"mX\", \"bind\": [\"127.0.0.1:2005\"]}", &why));
    assert_string_equal(json_string_value(json_object_get(why, "type")), "alreadyExists");
    assert_string_equal(json_string_value(json_object_get(why, "existingId")), first);
    assert_true(lists_prop(why, "name"));
    json_decref(why);
    const char *id4 = create_l("{\"name\": null, \"bind\": [\"127.0.0.1:2007\"]}", NULL);
    o = get_one(NL, id4);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "smtp-3");
    json_decref(o);
    refused("{\"name\": \"bad name\", \"bind\": [\"127.0.0.1:2006\"]}", "name");
    refused("{\"name\": \"\", \"bind\": [\"127.0.0.1:2006\"]}", "name");
    refused("{\"name\": 5, \"bind\": [\"127.0.0.1:2006\"]}", "name");
}

static void bind_rules(void **state)
{
    refused("{\"bind\": []}", "bind");
    refused("{}", "bind");
    refused("{\"bind\": \"127.0.0.1:25\"}", "bind");
    refused("{\"bind\": [\"127.0.0.1\"]}", "bind");
    refused("{\"bind\": [\"127.0.0.1:0\"]}", "bind");
    refused("{\"bind\": [\"127.0.0.1:70000\"]}", "bind");
    refused("{\"bind\": [\"mail.example.com:25\"]}", "bind");
    refused("{\"bind\": [\"127.0.0.1:2100\", \"127.0.0.1:2100\"]}", "bind");
    refused("{\"bind\": [\"0.0.0.0:2101\", \"127.0.0.1:2101\"]}", "bind");
    assert_non_null(create_l("{\"bind\": [\"0.0.0.0:2102\"]}", NULL));
    refused("{\"bind\": [\"[::]:2102\"]}", "bind");
    refused("{\"bind\": [\"127.0.0.1:2102\"]}", "bind");
    refused("{\"bind\": [\"0.0.0.0:2102\"]}", "bind");
    assert_non_null(create_l("{\"bind\": [\"[::1]:2103\"]}", NULL));
    refused("{\"bind\": [\"[::]:2103\"]}", "bind");
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:2103\"]}", NULL)); /* v4 vs ::1 */
}

static void enum_and_number_rules(void **state)
{
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"protocol\": \"ftp\"}", "protocol");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"socketBacklog\": 0}", "socketBacklog");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"socketBacklog\": 1.5}", "socketBacklog");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"maxConnections\": 0}", "maxConnections");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"socketReceiveBufferSize\": 0}",
            "socketReceiveBufferSize");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"socketSendBufferSize\": 0}",
            "socketSendBufferSize");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"socketTosV4\": 256}", "socketTosV4");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"socketTtl\": 0}", "socketTtl");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"useTls\": \"yes\"}", "useTls");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"tlsTimeout\": \"0ms\"}", "tlsTimeout");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"tlsTimeout\": \"fast\"}", "tlsTimeout");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"overrideProxyTrustedNetworks\": "
            "[\"10.1.0.0/8\"]}",
            "overrideProxyTrustedNetworks");
    refused("{\"bind\": [\"127.0.0.1:2200\"], \"description\": \"x\"}", "description");
    /* null sets the default, or unsets */
    const char *id = create_l("{\"bind\": [\"127.0.0.1:2200\"], \"socketBacklog\": null, "
                              "\"maxConnections\": null, \"tlsTimeout\": null, "
                              "\"socketTtl\": null, \"useTls\": null}",
                              NULL);
    json_t *o = get_one(NL, id);
    assert_int_equal(json_integer_value(json_object_get(o, "socketBacklog")), 1024);
    assert_int_equal(json_integer_value(json_object_get(o, "maxConnections")), 8192);
    assert_string_equal(json_string_value(json_object_get(o, "tlsTimeout")), "1m");
    assert_true(json_is_true(json_object_get(o, "useTls")));
    assert_true(json_is_null(json_object_get(o, "socketTtl")));
    json_decref(o);
}

static void tls_rules(void **state)
{
    refused("{\"bind\": [\"127.0.0.1:2300\"], \"tlsDisableProtocols\": [\"tls12\", \"tls13\"]}",
            "tlsDisableProtocols");
    refused("{\"bind\": [\"127.0.0.1:2300\"], \"tlsDisableProtocols\": [\"tls12\"], "
            "\"tlsDisableCipherSuites\": [\"tls13-aes-256-gcm-sha384\", "
            "\"tls13-aes-128-gcm-sha256\", \"tls13-chacha20-poly1305-sha256\"]}",
            "tlsDisableCipherSuites");
    refused("{\"bind\": [\"127.0.0.1:2300\"], \"tlsDisableProtocols\": [\"tls13\"], "
            "\"tlsDisableCipherSuites\": [\"tls-ecdhe-ecdsa-with-aes-256-gcm-sha384\", "
            "\"tls-ecdhe-ecdsa-with-aes-128-gcm-sha256\", "
            "\"tls-ecdhe-ecdsa-with-chacha20-poly1305-sha256\", "
            "\"tls-ecdhe-rsa-with-aes-256-gcm-sha384\", \"tls-ecdhe-rsa-with-aes-128-gcm-sha256\", "
            "\"tls-ecdhe-rsa-with-chacha20-poly1305-sha256\"]}",
            "tlsDisableCipherSuites");
    refused("{\"bind\": [\"127.0.0.1:2300\"], \"tlsDisableCipherSuites\": "
            "[\"tls13-aes-256-gcm-sha384\", \"tls13-aes-128-gcm-sha256\", "
            "\"tls13-chacha20-poly1305-sha256\", \"tls-ecdhe-ecdsa-with-aes-256-gcm-sha384\", "
            "\"tls-ecdhe-ecdsa-with-aes-128-gcm-sha256\", "
            "\"tls-ecdhe-ecdsa-with-chacha20-poly1305-sha256\", "
            "\"tls-ecdhe-rsa-with-aes-256-gcm-sha384\", \"tls-ecdhe-rsa-with-aes-128-gcm-sha256\", "
            "\"tls-ecdhe-rsa-with-chacha20-poly1305-sha256\"]}",
            "tlsDisableCipherSuites");
    /* tls12 off, one tls13 suite left: fine */
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:2301\"], \"tlsDisableProtocols\": "
                             "[\"tls12\"], \"tlsDisableCipherSuites\": "
                             "[\"tls13-aes-256-gcm-sha384\", \"tls13-aes-128-gcm-sha256\"]}",
                             NULL));
}

static void update_rules(void **state)
{
    const char *cid = create_l("{\"name\": \"u1\", \"bind\": [\"127.0.0.1:2400\"]}", NULL);
    char id[32];
    snprintf(id, sizeof id, "%s", cid);
    /* atomic: one bad value refuses the whole update */
    json_t *r = jcall(NL "/set",
                      "{\"update\": {\"%s\": {\"socketNoDelay\": false, "
                      "\"socketTtl\": 0}}}",
                      id);
    json_t *e = json_object_get(json_object_get(r, "notUpdated"), id);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "invalidProperties");
    assert_true(lists_prop(e, "socketTtl"));
    assert_false(lists_prop(e, "socketNoDelay"));
    json_decref(r);
    json_t *o = get_one(NL, id);
    assert_true(json_is_true(json_object_get(o, "socketNoDelay")));
    json_decref(o);
    /* the reference page's update example */
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"description\": \"Updated\"}}}", id);
    e = json_object_get(json_object_get(r, "notUpdated"), id);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "invalidProperties");
    assert_true(lists_prop(e, "description"));
    json_decref(r);
    /* updated: null when nothing else changed, the normalised value otherwise */
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"socketNoDelay\": false}}}", id);
    assert_true(json_object_get(json_object_get(r, "updated"), id) != NULL);
    assert_true(json_is_null(json_object_get(json_object_get(r, "updated"), id)));
    json_decref(r);
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"tlsTimeout\": \"60s\"}}}", id);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "updated"), id), "tlsTimeout")),
                        "1m");
    json_decref(r);
    /* name is set at create only */
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"name\": \"u2\"}}}", id);
    e = json_object_get(json_object_get(r, "notUpdated"), id);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "invalidProperties");
    assert_true(lists_prop(e, "name"));
    json_decref(r);
    /* set-style patch keys */
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"bind/127.0.0.1:2401\": true}}}", id);
    json_decref(r);
    o = get_one(NL, id);
    assert_int_equal(json_array_size(json_object_get(o, "bind")), 2);
    json_decref(o);
    r = jcall(NL "/set",
              "{\"update\": {\"%s\": {\"bind/127.0.0.1:2400\": null, "
              "\"overrideProxyTrustedNetworks/10.0.0.0~18\": true}}}",
              id);
    json_decref(r);
    o = get_one(NL, id);
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "bind"), 0)),
                        "127.0.0.1:2401");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(o, "overrideProxyTrustedNetworks"), 0)),
        "10.0.0.0/8");
    json_decref(o);
    /* id: the same value is accepted, another refused */
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"id\": \"%s\", \"socketTtl\": 9}}}", id, id);
    assert_non_null(json_object_get(json_object_get(r, "updated"), id));
    json_decref(r);
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"id\": \"zz\"}}}", id);
    assert_true(lists_prop(json_object_get(json_object_get(r, "notUpdated"), id), "id"));
    json_decref(r);
    /* a bind that conflicts with another listener */
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:2402\"]}", NULL));
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"bind\": [\"127.0.0.1:2402\"]}}}", id);
    assert_true(lists_prop(json_object_get(json_object_get(r, "notUpdated"), id), "bind"));
    json_decref(r);
    /* a full /get object is a valid patch */
    o = get_one(NL, id);
    char *text = json_dumps(o, JSON_COMPACT);
    r = jcall(NL "/set", "{\"update\": {\"%s\": %s}}", id, text);
    assert_non_null(json_object_get(json_object_get(r, "updated"), id));
    free(text);
    json_decref(o);
    json_decref(r);
}

static void destroy_not_found_will_destroy(void **state)
{
    char id[32];
    snprintf(id, sizeof id, "%s", create_l("{\"bind\": [\"127.0.0.1:2500\"]}", NULL));
    json_t *r = jcall(NL "/set",
                      "{\"update\": {\"nope\": {\"socketNoDelay\": false}, "
                      "\"%s\": {\"socketNoDelay\": false}}, \"destroy\": [\"%s\", "
                      "\"nope2\"]}",
                      id, id);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "notUpdated"), "nope"), "type")),
                        "notFound");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "notUpdated"), id), "type")),
                        "willDestroy");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "notDestroyed"), "nope2"), "type")),
                        "notFound");
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "destroyed"), 0)), id);
    json_decref(r);
    r = jcall(NL "/get", "{\"ids\": [\"%s\"]}", id);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "notFound"), 0)), id);
    json_decref(r);
    /* the address is free again */
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:2500\"]}", NULL));
}

static void set_arguments(void **state)
{
    json_t *r = jcall(NL "/set", "{\"ifInState\": \"nope-1\", \"create\": {\"n\": {\"bind\": "
                                 "[\"127.0.0.1:2600\"]}}}");
    assert_string_equal(err_type(r), "stateMismatch");
    json_decref(r);
    r = jcall(NL "/get", "{\"ids\": null}");
    assert_int_equal(json_array_size(json_object_get(r, "list")), 1);
    json_decref(r);
    char st[64];
    snprintf(st, sizeof st, "%s", state_of(NL));
    r = jcall(NL "/set",
              "{\"ifInState\": \"%s\", \"create\": {\"n\": {\"bind\": "
              "[\"127.0.0.1:2600\"]}}}",
              st);
    assert_string_equal(json_string_value(json_object_get(r, "oldState")), st);
    assert_non_null(json_object_get(json_object_get(r, "created"), "n"));
    json_decref(r);
    char many[GH_JMAP_MAX_OBJECTS_IN_SET * 8 + 64];
    size_t n = (size_t)snprintf(many, sizeof many, "{\"destroy\": [");
    for (int i = 0; i <= GH_JMAP_MAX_OBJECTS_IN_SET; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "%s\"x%d\"", i ? "," : "", i);
    snprintf(many + n, sizeof many - n, "]}");
    r = jcall(NL "/set", "%s", many);
    assert_string_equal(err_type(r), "requestTooLarge");
    json_decref(r);
    r = jcall(NL "/set", "{\"destroy\": \"x\"}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    r = jcall(NL "/set", "{\"bogus\": 1}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
}

static void get_rules(void **state)
{
    char id[32];
    snprintf(id, sizeof id, "%s", create_l("{\"bind\": [\"127.0.0.1:2700\"]}", NULL));
    json_t *r = jcall(NL "/get",
                      "{\"ids\": [\"%s\", \"%s\", \"zz\", \"zz\"], "
                      "\"properties\": [\"name\"]}",
                      id, id);
    assert_int_equal(json_array_size(json_object_get(r, "list")), 1);
    json_t *o = json_array_get(json_object_get(r, "list"), 0);
    assert_int_equal(json_object_size(o), 2);
    assert_non_null(json_object_get(o, "id"));
    assert_non_null(json_object_get(o, "name"));
    assert_int_equal(json_array_size(json_object_get(r, "notFound")), 1);
    assert_string_equal(json_string_value(json_object_get(r, "state")), state_of(NL));
    json_decref(r);
    r = jcall(NL "/get", "{\"ids\": [], \"properties\": []}");
    assert_int_equal(json_array_size(json_object_get(r, "list")), 0);
    json_decref(r);
    r = jcall(NL "/get", "{\"properties\": [\"name\", \"description\"]}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    r = jcall(NL "/get", "{\"ids\": \"x\"}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    r = jcall(NL "/get", "{\"ids\": [5]}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    /* ids: null over maxObjectsInGet */
    static char big[GH_JMAP_MAX_OBJECTS_IN_SET * 64 + 64];
    for (int round = 0; round < 2; round++) {
        size_t k = (size_t)snprintf(big, sizeof big, "{\"create\": {");
        for (int i = 0; i < GH_JMAP_MAX_OBJECTS_IN_GET / 2 + 1; i++)
            k += (size_t)snprintf(big + k, sizeof big - k,
                                  "%s\"d%d\": {\"address\": \"127.0.0.1:%d\"}", i ? "," : "", i,
                                  1000 + i);
        snprintf(big + k, sizeof big - k, "}}");
        json_decref(jcall("x:Destination/set", "%s", big));
    }
    r = jcall("x:Destination/get", "{\"ids\": null, \"properties\": [\"name\"]}");
    assert_string_equal(err_type(r), "requestTooLarge");
    json_decref(r);
    char many[GH_JMAP_MAX_OBJECTS_IN_GET * 8 + 64];
    size_t n = (size_t)snprintf(many, sizeof many, "{\"ids\": [");
    for (int i = 0; i <= GH_JMAP_MAX_OBJECTS_IN_GET; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "%s\"x%d\"", i ? "," : "", i);
    snprintf(many + n, sizeof many - n, "]}");
    r = jcall(NL "/get", "%s", many);
    assert_string_equal(err_type(r), "requestTooLarge");
    json_decref(r);
}

/* ---- /changes ---- */

static void changes_lists_and_coalescing(void **state)
{
    char s0[64], a[32], b[32], c[32];
    snprintf(a, sizeof a, "%s", create_l("{\"bind\": [\"127.0.0.1:2800\"]}", NULL));
    snprintf(b, sizeof b, "%s", create_l("{\"bind\": [\"127.0.0.1:2801\"]}", NULL));
    snprintf(s0, sizeof s0, "%s", state_of(NL));
    json_t *r = jcall(NL "/changes", "{\"sinceState\": \"%s\"}", s0);
    assert_string_equal(json_string_value(json_object_get(r, "oldState")), s0);
    assert_string_equal(json_string_value(json_object_get(r, "newState")), s0);
    assert_true(json_is_false(json_object_get(r, "hasMoreChanges")));
    assert_int_equal(json_array_size(json_object_get(r, "created")), 0);
    json_decref(r);
    snprintf(c, sizeof c, "%s", create_l("{\"bind\": [\"127.0.0.1:2802\"]}", NULL));
    json_decref(jcall(NL "/set", "{\"update\": {\"%s\": {\"socketTtl\": 3}}}", c));
    json_decref(jcall(NL "/set", "{\"update\": {\"%s\": {\"socketTtl\": 3}}}", a));
    json_decref(jcall(NL "/set", "{\"destroy\": [\"%s\"]}", b));
    /* created then destroyed in the window: nowhere */
    const char *d = create_l("{\"bind\": [\"127.0.0.1:2803\"]}", NULL);
    char did[32];
    snprintf(did, sizeof did, "%s", d);
    json_decref(jcall(NL "/set", "{\"destroy\": [\"%s\"]}", did));
    r = jcall(NL "/changes", "{\"sinceState\": \"%s\"}", s0);
    assert_int_equal(json_array_size(json_object_get(r, "created")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "created"), 0)), c);
    assert_int_equal(json_array_size(json_object_get(r, "updated")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "updated"), 0)), a);
    assert_int_equal(json_array_size(json_object_get(r, "destroyed")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "destroyed"), 0)), b);
    assert_string_equal(json_string_value(json_object_get(r, "newState")), state_of(NL));
    json_decref(r);
}

static void changes_paging(void **state)
{
    char s0[64], a[32];
    snprintf(s0, sizeof s0, "%s", state_of(NL));
    snprintf(a, sizeof a, "%s", create_l("{\"bind\": [\"127.0.0.1:2900\"]}", NULL));
    json_decref(jcall(NL "/set", "{\"update\": {\"%s\": {\"socketTtl\": 3}}}", a));
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:2901\"]}", NULL));
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:2902\"]}", NULL));
    char since[64];
    snprintf(since, sizeof since, "%s", s0);
    int pages = 0, seen_created = 0;
    bool more = true;
    while (more && pages < 10) {
        json_t *r = jcall(NL "/changes", "{\"sinceState\": \"%s\", \"maxChanges\": 1}", since);
        size_t n = json_array_size(json_object_get(r, "created")) +
                   json_array_size(json_object_get(r, "updated")) +
                   json_array_size(json_object_get(r, "destroyed"));
        assert_true(n <= 1);
        /* a is never reported updated before it was reported created */
        if (json_array_size(json_object_get(r, "updated")))
            assert_true(seen_created > 0);
        seen_created += (int)json_array_size(json_object_get(r, "created"));
        more = json_is_true(json_object_get(r, "hasMoreChanges"));
        if (more)
            assert_string_not_equal(json_string_value(json_object_get(r, "newState")), since);
        snprintf(since, sizeof since, "%s", json_string_value(json_object_get(r, "newState")));
        json_decref(r);
        pages++;
    }
    assert_false(more);
    assert_int_equal(seen_created, 3);
    assert_string_equal(since, state_of(NL));
    json_t *r = jcall(NL "/changes", "{\"sinceState\": \"garbage\"}");
    assert_string_equal(err_type(r), "cannotCalculateChanges");
    json_decref(r);
    r = jcall(NL "/changes", "{\"sinceState\": \"%s\", \"maxChanges\": 0}", s0);
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    r = jcall(NL "/changes", "{}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    /* another type's change does not move this type's state */
    char before[64];
    snprintf(before, sizeof before, "%s", state_of(NL));
    json_decref(
        jcall("x:Destination/set", "{\"create\": {\"d\": {\"address\": \"127.0.0.1:25\"}}}"));
    assert_string_equal(before, state_of(NL));
}

/* ---- /query and /queryChanges ---- */

static char L1[32], L2[32], L3[32];

static void fixture(void)
{
    snprintf(L1, sizeof L1, "%s",
             create_l("{\"name\": \"t1\", \"bind\": [\"127.0.0.1:3001\"]}", NULL));
    snprintf(L2, sizeof L2, "%s",
             create_l("{\"name\": \"t2\", \"protocol\": \"imap\", \"bind\": "
                      "[\"127.0.0.1:3002\"]}",
                      NULL));
    snprintf(L3, sizeof L3, "%s",
             create_l("{\"name\": \"T3\", \"bind\": [\"127.0.0.1:3003\"]}", NULL));
}

static char *ids_of(json_t *r)
{
    static char out[256];
    size_t n = 0, i;
    json_t *v;
    out[0] = 0;
    json_array_foreach(json_object_get(r, "ids"), i, v)
    {
        const char *id = json_string_value(v);
        const char *tag = !strcmp(id, L1)   ? "L1"
                          : !strcmp(id, L2) ? "L2"
                          : !strcmp(id, L3) ? "L3"
                                            : "?";
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%s", n ? "," : "", tag);
    }
    return out;
}

#define Q(...) (r = jcall(NL "/query", __VA_ARGS__), ids_of(r))

static void query_filters(void **state)
{
    fixture();
    json_t *r;
    /* "http" (the bootstrap listener) contains a t too */
    assert_string_equal(Q("{\"filter\": {\"operator\": \"AND\", \"conditions\": [{\"name\": "
                          "\"T\"}, {\"operator\": \"NOT\", \"conditions\": [{\"name\": "
                          "\"http\"}]}]}, \"sort\": [{\"property\": \"name\"}]}"),
                        "L1,L2,L3");
    json_decref(r);
    assert_string_equal(Q("{\"filter\": {\"protocol\": \"imap\"}}"), "L2");
    json_decref(r);
    assert_string_equal(Q("{\"filter\": {\"operator\": \"OR\", \"conditions\": [{\"protocol\": "
                          "\"imap\"}, {\"name\": \"t3\"}]}}"),
                        "L2,L3");
    json_decref(r);
    assert_string_equal(Q("{\"filter\": {\"operator\": \"AND\", \"conditions\": [{\"protocol\": "
                          "\"smtp\"}, {\"operator\": \"NOT\", \"conditions\": [{\"name\": "
                          "\"t1\"}]}]}}"),
                        "L3");
    json_decref(r);
    r = jcall(NL "/query", "{\"filter\": {\"operator\": \"XOR\", \"conditions\": []}}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    r = jcall(NL "/query", "{\"filter\": {\"port\": 25}}");
    assert_string_equal(err_type(r), "unsupportedFilter");
    json_decref(r);
    r = jcall(NL "/query", "{\"filter\": {\"name\": 5}}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    char deep[2048] = "";
    for (int i = 0; i < 20; i++)
        strcat(deep, "{\"operator\": \"NOT\", \"conditions\": [");
    strcat(deep, "{\"name\": \"x\"}");
    for (int i = 0; i < 20; i++)
        strcat(deep, "]}");
    r = jcall(NL "/query", "{\"filter\": %s}", deep);
    assert_non_null(err_type(r));
    json_decref(r);
}

#define SMTP_AND_IMAP                                                                              \
    "\"filter\": {\"operator\": \"NOT\", \"conditions\": [{\"protocol\": \"http\"}]}"

static void query_sort_and_window(void **state)
{
    fixture();
    json_t *r;
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"sort\": [{\"property\": \"name\"}]}"), "L1,L2,L3");
    json_decref(r);
    assert_string_equal(
        Q("{" SMTP_AND_IMAP ", \"sort\": [{\"property\": \"name\", \"isAscending\": false}]}"),
        "L3,L2,L1");
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"sort\": [{\"property\": \"name\", "
                          "\"collation\": \"i;octet\"}]}"),
                        "L3,L1,L2");
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"sort\": [{\"property\": \"protocol\", "
                          "\"isAscending\": false}, {\"property\": \"name\"}]}"),
                        "L1,L3,L2");
    json_decref(r);
    r = jcall(NL "/query", "{\"sort\": [{\"property\": \"bind\"}]}");
    assert_string_equal(err_type(r), "unsupportedSort");
    json_decref(r);
    r = jcall(NL "/query", "{\"sort\": [{\"property\": \"name\", \"collation\": \"i;nope\"}]}");
    assert_string_equal(err_type(r), "unsupportedSort");
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"sort\": [{\"property\": \"name\"}], "
                          "\"position\": 1, \"limit\": 1}"),
                        "L2");
    assert_int_equal(json_integer_value(json_object_get(r, "position")), 1);
    assert_null(json_object_get(r, "total"));
    assert_true(json_is_true(json_object_get(r, "canCalculateChanges")));
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"sort\": [{\"property\": \"name\"}], "
                          "\"position\": -2, \"calculateTotal\": true}"),
                        "L2,L3");
    assert_int_equal(json_integer_value(json_object_get(r, "position")), 1);
    assert_int_equal(json_integer_value(json_object_get(r, "total")), 3);
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"position\": -100}"), "L1,L2,L3");
    assert_int_equal(json_integer_value(json_object_get(r, "position")), 0);
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"position\": 10}"), "");
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"limit\": 0}"), "");
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"sort\": [{\"property\": \"name\"}], "
                          "\"anchor\": \"%s\", \"anchorOffset\": -1, \"position\": 2}",
                          L2),
                        "L1,L2,L3");
    assert_int_equal(json_integer_value(json_object_get(r, "position")), 0);
    json_decref(r);
    assert_string_equal(Q("{" SMTP_AND_IMAP ", \"anchor\": \"%s\", \"anchorOffset\": 5}", L2), "");
    assert_int_equal(json_integer_value(json_object_get(r, "position")), 3);
    json_decref(r);
    r = jcall(NL "/query", "{\"anchor\": \"nope\"}");
    assert_string_equal(err_type(r), "anchorNotFound");
    json_decref(r);
    r = jcall(NL "/query", "{\"limit\": -1}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    r = jcall(NL "/query", "{\"position\": 9007199254740992}");
    assert_string_equal(err_type(r), "invalidArguments");
    json_decref(r);
    /* queryState is the type state */
    r = jcall(NL "/query", "{}");
    assert_string_equal(json_string_value(json_object_get(r, "queryState")), state_of(NL));
    json_decref(r);
}

static void query_changes(void **state)
{
    fixture();
    json_t *r = jcall(NL "/query", "{\"filter\": {\"protocol\": \"smtp\"}, \"sort\": "
                                   "[{\"property\": \"name\"}]}");
    char qs[64];
    snprintf(qs, sizeof qs, "%s", json_string_value(json_object_get(r, "queryState")));
    json_decref(r);
    r = jcall(NL "/queryChanges",
              "{\"filter\": {\"protocol\": \"smtp\"}, \"sinceQueryState\": "
              "\"%s\"}",
              qs);
    assert_int_equal(json_array_size(json_object_get(r, "removed")), 0);
    assert_int_equal(json_array_size(json_object_get(r, "added")), 0);
    assert_string_equal(json_string_value(json_object_get(r, "newQueryState")), qs);
    json_decref(r);
    /* L1 moves to imap: removed and not re-added; a new t0 is added at index 0 */
    json_decref(jcall(NL "/set", "{\"update\": {\"%s\": {\"protocol\": \"imap\"}}}", L1));
    char t0[32];
    snprintf(t0, sizeof t0, "%s",
             create_l("{\"name\": \"t0\", \"bind\": [\"127.0.0.1:3004\"]}", NULL));
    r = jcall(NL "/queryChanges",
              "{\"filter\": {\"protocol\": \"smtp\"}, \"sort\": "
              "[{\"property\": \"name\"}], \"sinceQueryState\": \"%s\", "
              "\"calculateTotal\": true}",
              qs);
    json_t *removed = json_object_get(r, "removed"), *added = json_object_get(r, "added");
    bool l1_removed = false;
    size_t i;
    json_t *v;
    json_array_foreach(removed, i, v) l1_removed |= !strcmp(json_string_value(v), L1);
    assert_true(l1_removed);
    assert_int_equal(json_array_size(added), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(added, 0), "id")), t0);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(added, 0), "index")), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "total")), 2);
    json_decref(r);
    r = jcall(NL "/queryChanges", "{\"sinceQueryState\": \"%s\", \"maxChanges\": 1}", qs);
    assert_string_equal(err_type(r), "tooManyChanges");
    json_decref(r);
    r = jcall(NL "/queryChanges", "{\"sinceQueryState\": \"old-1\"}");
    assert_string_equal(err_type(r), "cannotCalculateChanges");
    json_decref(r);
}

/* ---- permissions ---- */

static void permissions(void **state)
{
    struct gh_principal who = {.username = "k"};
    who.permissions = json_pack("[ss]", "sysNetworkListenerGet", "sysNetworkListenerUpdate");
    char id[32];
    snprintf(id, sizeof id, "%s", create_l("{\"bind\": [\"127.0.0.1:3100\"]}", NULL));
    json_t *r = jcall_as(&who, NL "/get", "{}");
    assert_non_null(json_object_get(r, "list"));
    json_decref(r);
    r = jcall_as(&who, NL "/query", "{}");
    assert_string_equal(err_type(r), "forbidden");
    json_decref(r);
    r = jcall_as(&who, NL "/queryChanges", "{\"sinceQueryState\": \"x\"}");
    assert_string_equal(err_type(r), "forbidden");
    json_decref(r);
    r = jcall_as(&who, NL "/changes", "{\"sinceState\": \"%s\"}", state_of(NL));
    assert_null(err_type(r));
    json_decref(r);
    r = jcall_as(&who, NL "/set",
                 "{\"create\": {\"c\": {\"bind\": [\"127.0.0.1:3101\"]}}, \"update\": {\"%s\": "
                 "{\"socketTtl\": 4}}, \"destroy\": [\"%s\"]}",
                 id, id);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "notCreated"), "c"), "type")),
                        "forbidden");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "notDestroyed"), id), "type")),
                        "forbidden");
    json_decref(r);
    r = jcall_as(&who, NL "/set", "{\"update\": {\"%s\": {\"socketTtl\": 4}}}", id);
    assert_non_null(json_object_get(json_object_get(r, "updated"), id));
    json_decref(r);
    r = jcall_as(&who, "x:Destination/get", "{}");
    assert_string_equal(err_type(r), "forbidden");
    json_decref(r);
    json_decref(who.permissions);
}

/* ---- other types ---- */

static void settings_singleton(void **state)
{
    json_t *r = jcall("x:SystemSettings/get", "{}");
    json_t *s = json_array_get(json_object_get(r, "list"), 0);
    assert_string_equal(json_string_value(json_object_get(s, "id")), "singleton");
    assert_non_null(json_object_get(s, "defaultHostname"));
    json_decref(r);
    r = jcall("x:SystemSettings/set", "{\"create\": {\"c\": {}}, \"destroy\": [\"singleton\"]}");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "notCreated"), "c"), "type")),
                        "singleton");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(r, "notDestroyed"), "singleton"), "type")),
        "singleton");
    json_decref(r);
    r = jcall("x:SystemSettings/set",
              "{\"update\": {\"singleton\": {\"defaultHostname\": \"mx.example.com\", "
              "\"proxyTrustedNetworks\": [\"10.0.0.0/8\"]}}}");
    assert_non_null(json_object_get(json_object_get(r, "updated"), "singleton"));
    json_decref(r);
    r = jcall("x:SystemSettings/set",
              "{\"update\": {\"singleton\": {\"defaultHostname\": \"bad host\"}}}");
    assert_true(lists_prop(json_object_get(json_object_get(r, "notUpdated"), "singleton"),
                           "defaultHostname"));
    json_decref(r);
    r = jcall("x:SystemSettings/set",
              "{\"update\": {\"singleton\": {\"proxyTrustedNetworks\": [\"10.0.0.1/8\"]}}}");
    assert_true(lists_prop(json_object_get(json_object_get(r, "notUpdated"), "singleton"),
                           "proxyTrustedNetworks"));
    json_decref(r);
    r = jcall("x:SystemSettings/get", "{}");
    s = json_array_get(json_object_get(r, "list"), 0);
    assert_string_equal(json_string_value(json_object_get(s, "defaultHostname")), "mx.example.com");
    json_decref(r);
}

static void api_keys(void **state)
{
    json_t *r = jcall("x:ApiKey/set", "{\"create\": {\"k\": {\"name\": \"ops\", \"permissions\": "
                                      "[\"sysNetworkListenerGet\"]}}}");
    json_t *c = json_object_get(json_object_get(r, "created"), "k");
    const char *secret = json_string_value(json_object_get(c, "secret"));
    assert_non_null(secret);
    assert_true(strlen(secret) > 40);
    char sec[128], id[32];
    snprintf(sec, sizeof sec, "%s", secret);
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(c, "id")));
    json_decref(r);
    r = jcall("x:ApiKey/get", "{}");
    json_t *k = json_array_get(json_object_get(r, "list"), 0);
    assert_null(json_object_get(k, "secret"));
    assert_null(json_object_get(k, "_secretHash"));
    json_decref(r);
    struct gh_principal who;
    assert_true(gh_objects_authenticate(NULL, sec, &who));
    assert_false(who.admin);
    assert_string_equal(who.username, "ops");
    assert_string_equal(json_string_value(json_array_get(who.permissions, 0)),
                        "sysNetworkListenerGet");
    gh_principal_clear(&who);
    assert_true(gh_objects_authenticate("ops", sec, &who));
    gh_principal_clear(&who);
    assert_false(gh_objects_authenticate("other", sec, &who));
    assert_false(gh_objects_authenticate("admin", sec, &who)); /* admin is only the admin */
    assert_false(gh_objects_authenticate(NULL, "gh_wrong", &who));
    assert_false(gh_objects_authenticate(NULL, "", &who));
    assert_true(gh_objects_authenticate(NULL, "admin-secret", &who));
    assert_true(who.admin);
    gh_principal_clear(&who);
    assert_true(gh_objects_authenticate("admin", "admin-secret", &who));
    gh_principal_clear(&who);
    assert_false(gh_objects_authenticate("ops", "admin-secret", &who));
    /* permissions are an enum list; the secret cannot be set */
    r = jcall("x:ApiKey/set", "{\"create\": {\"k\": {\"permissions\": [\"everything\"]}, "
                              "\"s\": {\"secret\": \"mine\"}}}");
    assert_true(lists_prop(json_object_get(json_object_get(r, "notCreated"), "k"), "permissions"));
    assert_true(lists_prop(json_object_get(json_object_get(r, "notCreated"), "s"), "secret"));
    json_decref(r);
    r = jcall("x:ApiKey/set", "{\"create\": {\"a\": {\"name\": \"Admin\"}}}");
    assert_true(lists_prop(json_object_get(json_object_get(r, "notCreated"), "a"), "name"));
    json_decref(r);
    /* destroying a key revokes it */
    json_decref(jcall("x:ApiKey/set", "{\"destroy\": [\"%s\"]}", id));
    assert_false(gh_objects_authenticate(NULL, sec, &who));
}

static void destinations(void **state)
{
    json_t *r = jcall("x:Destination/set",
                      "{\"create\": {\"a\": {\"address\": \"[0::1]:2525\", \"listeners\": "
                      "[\"smtp\"]}, \"b\": {\"address\": \"unix:/run/mail.sock\", \"forwarding\": "
                      "\"none\", \"connectTimeout\": 2000}, \"c\": {\"address\": \"unix:rel\"}, "
                      "\"d\": {\"address\": \"127.0.0.1:25\", \"forwarding\": \"proxyV3\"}, "
                      "\"e\": {}}}");
    json_t *a = json_object_get(json_object_get(r, "created"), "a");
    assert_string_equal(json_string_value(json_object_get(a, "address")), "[::1]:2525");
    assert_string_equal(json_string_value(json_object_get(a, "forwarding")), "proxyV2");
    assert_string_equal(json_string_value(json_object_get(a, "connectTimeout")), "10s");
    assert_string_equal(json_string_value(json_object_get(a, "name")), "smtp");
    json_t *b = json_object_get(json_object_get(r, "created"), "b");
    assert_string_equal(json_string_value(json_object_get(b, "connectTimeout")), "2s");
    assert_string_equal(json_string_value(json_object_get(b, "name")), "smtp-2");
    json_t *nc = json_object_get(r, "notCreated");
    assert_true(lists_prop(json_object_get(nc, "c"), "address"));
    assert_true(lists_prop(json_object_get(nc, "d"), "forwarding"));
    assert_true(lists_prop(json_object_get(nc, "e"), "address"));
    json_decref(r);
    r = jcall("x:Destination/query", "{\"filter\": {\"name\": \"SMTP-2\"}}");
    assert_int_equal(json_array_size(json_object_get(r, "ids")), 1);
    json_decref(r);
}

/* ---- failures and restarts ---- */

static void store_failure_changes_nothing(void **state)
{
    char before[64], id[32];
    snprintf(id, sizeof id, "%s",
             create_l("{\"name\": \"keep\", \"bind\": [\"127.0.0.1:3200\"]}", NULL));
    snprintf(before, sizeof before, "%s", state_of(NL));
    gh_store_fail_writes(store, 1);
    json_t *r = jcall(NL "/set", "{\"create\": {\"n\": {\"bind\": [\"127.0.0.1:3201\"]}}}");
    assert_string_equal(err_type(r), "serverFail");
    json_decref(r);
    gh_store_fail_writes(store, 1);
    r = jcall(NL "/set", "{\"update\": {\"%s\": {\"socketTtl\": 7}}}", id);
    assert_string_equal(err_type(r), "serverFail");
    json_decref(r);
    assert_string_equal(before, state_of(NL));
    r = jcall(NL "/get", "{}");
    assert_int_equal(json_array_size(json_object_get(r, "list")), 2);
    json_decref(r);
    json_t *o = get_one(NL, id);
    assert_true(json_is_null(json_object_get(o, "socketTtl")));
    json_decref(o);
    /* the refused address is still free */
    assert_non_null(create_l("{\"bind\": [\"127.0.0.1:3201\"]}", NULL));
}

static void reload_restores_everything(void **state)
{
    char id[32], st[64];
    snprintf(id, sizeof id, "%s",
             create_l("{\"name\": \"durable\", \"bind\": [\"127.0.0.1:3300\"], \"socketTtl\": 9}",
                      NULL));
    snprintf(st, sizeof st, "%s", state_of(NL));
    gh_objects_shutdown();
    struct gh_objects_options opt = {
        .store = store, .http_bind = "127.0.0.1:1", .admin_secret = "changed-secret"};
    gh_err err = {0};
    assert_true(gh_objects_init(&opt, &err));
    assert_string_equal(st, state_of(NL));
    json_t *r = jcall(NL "/get", "{}");
    assert_int_equal(json_array_size(json_object_get(r, "list")), 2); /* http + durable */
    json_decref(r);
    json_t *o = get_one(NL, id);
    assert_int_equal(json_integer_value(json_object_get(o, "socketTtl")), 9);
    json_decref(o);
    struct gh_principal who;
    assert_false(gh_objects_authenticate(NULL, "admin-secret", &who));
    assert_true(gh_objects_authenticate(NULL, "changed-secret", &who));
    gh_principal_clear(&who);
}

static void listener_conf_from_object(void **state)
{
    const char *id = create_l("{\"name\": \"c\", \"protocol\": \"pop3\", \"bind\": "
                              "[\"127.0.0.1:3400\", \"[::1]:3400\"], \"socketTtl\": 64, "
                              "\"tlsTimeout\": \"30s\", \"tlsDisableProtocols\": [\"tls12\"], "
                              "\"overrideProxyTrustedNetworks\": [\"10.0.0.0/8\"], "
                              "\"socketReusePort\": false, \"maxConnections\": 5}",
                              NULL);
    json_t *o = get_one(NL, id);
    gh_err err = {0};
    struct gh_listener_conf *c = gh_listener_conf_from(o, &err);
    assert_non_null(c);
    assert_string_equal(c->name, "c");
    assert_string_equal(c->id, id);
    assert_int_equal(c->protocol, GH_PROTO_POP3);
    assert_int_equal(c->nbind, 2);
    assert_int_equal(c->ntrusted, 1);
    assert_int_equal(c->ttl, 64);
    assert_int_equal(c->rcvbuf, 0);
    assert_int_equal(c->tls_timeout_ms, 30000);
    assert_int_equal(c->tls_disabled_versions, 1 << GH_TLS12);
    assert_false(c->reuseport);
    assert_true(c->reuseaddr);
    assert_int_equal(c->max_connections, 5);
    assert_int_equal(c->backlog, 1024);
    gh_listener_conf_unref(c);
    json_decref(o);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(bootstrap_created_http_listener),
        T(created_has_defaults_and_normalised_values),
        T(name_derived_and_unique),
        T(bind_rules),
        T(enum_and_number_rules),
        T(tls_rules),
        T(update_rules),
        T(destroy_not_found_will_destroy),
        T(set_arguments),
        T(get_rules),
        T(changes_lists_and_coalescing),
        T(changes_paging),
        T(query_filters),
        T(query_sort_and_window),
        T(query_changes),
        T(permissions),
        T(settings_singleton),
        T(api_keys),
        T(destinations),
        T(store_failure_changes_nothing),
        T(reload_restores_everything),
        T(listener_conf_from_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
