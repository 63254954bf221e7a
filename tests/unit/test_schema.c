/*
 * test_schema: the generic schema engine — durations, JSON-pointer keys, value checks by
 * property type, create/patch semantics and the schema JSON served to the CLI and page.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "objects/model.h"
#include "objects/schema.h"
#include "net/listener-t.h"
#include <stdio.h>
#include <stdlib.h>

static char *duration_of(json_t *in)
{
    static char out[32];
    uint64_t ms;
    gh_err err = {0};
    bool ok = gh_duration_parse(in, &ms, &err);
    json_decref(in);
    if (!ok)
        return NULL;
    gh_duration_format(ms, out);
    return out;
}

static void durations_normalise(void **state)
{
    assert_string_equal(duration_of(json_string("60000")), "1m");
    assert_string_equal(duration_of(json_integer(60000)), "1m");
    assert_string_equal(duration_of(json_string("90s")), "90s");
    assert_string_equal(duration_of(json_string("1500ms")), "1500ms");
    assert_string_equal(duration_of(json_string("120m")), "2h");
    assert_string_equal(duration_of(json_string("24h")), "1d");
    assert_string_equal(duration_of(json_string("500ms")), "500ms");
    assert_string_equal(duration_of(json_string("1000ms")), "1s");
    assert_string_equal(duration_of(json_string("2d")), "2d");
}

static void durations_refused(void **state)
{
    assert_null(duration_of(json_string("1x")));
    assert_null(duration_of(json_string("m")));
    assert_null(duration_of(json_string("")));
    assert_null(duration_of(json_string("-1s")));
    assert_null(duration_of(json_string("1.5s")));
    assert_null(duration_of(json_string("1 m")));
    assert_null(duration_of(json_integer(-5)));
    assert_null(duration_of(json_real(1.5)));
    assert_null(duration_of(json_true()));
    assert_null(duration_of(json_string("99999999999999999999999s")));
}

static void pointer_unescape(void **state)
{
    char out[64];
    assert_true(gh_pointer_unescape("10.0.0.0~18", out, sizeof out));
    assert_string_equal(out, "10.0.0.0/8");
    assert_true(gh_pointer_unescape("a~0b", out, sizeof out));
    assert_string_equal(out, "a~b");
    assert_true(gh_pointer_unescape("~01", out, sizeof out));
    assert_string_equal(out, "~1");
    assert_false(gh_pointer_unescape("a~2", out, sizeof out));
    assert_false(gh_pointer_unescape("a~", out, sizeof out));
}

static const struct gh_prop *lprop(const char *name)
{
    const struct gh_prop *p = gh_prop_find(&gh_type_listener, name);
    assert_non_null(p);
    return p;
}

/* The normalised value as compact JSON text, or NULL when refused. */
static char *value_of(const char *prop, const char *json)
{
    static char out[512];
    json_t *in = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(in);
    gh_err err = {0};
    json_t *v = gh_prop_value(lprop(prop), in, &err);
    json_decref(in);
    if (!v) {
        assert_true(err.msg[0] != 0); /* every refusal says why */
        return NULL;
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(out, sizeof out, "%s", s);
    free(s);
    json_decref(v);
    return out;
}

static void uint_bounds(void **state)
{
    assert_string_equal(value_of("socketBacklog", "1"), "1");
    assert_null(value_of("socketBacklog", "0"));
    assert_null(value_of("socketBacklog", "-1"));
    assert_null(value_of("socketBacklog", "1.5"));
    assert_null(value_of("socketBacklog", "1e3"));
    assert_null(value_of("socketBacklog", "\"10\""));
    assert_string_equal(value_of("socketBacklog", "null"), "1024");
    assert_string_equal(value_of("maxConnections", "null"), "8192");
    assert_null(value_of("maxConnections", "0"));
    assert_string_equal(value_of("socketTtl", "255"), "255");
    assert_null(value_of("socketTtl", "256"));
    assert_null(value_of("socketTtl", "0"));
    assert_null(value_of("socketTosV4", "1000"));
    assert_string_equal(value_of("socketTosV4", "null"), "null");
    assert_string_equal(value_of("socketReceiveBufferSize", "null"), "null");
    assert_null(value_of("socketReceiveBufferSize", "0"));
    assert_null(value_of("socketSendBufferSize", "0"));
    assert_null(value_of("maxConnections", "9007199254740992"));
}

static void booleans(void **state)
{
    assert_string_equal(value_of("useTls", "false"), "false");
    assert_string_equal(value_of("useTls", "null"), "true");
    assert_string_equal(value_of("tlsImplicit", "null"), "false");
    assert_null(value_of("useTls", "\"true\""));
    assert_null(value_of("socketNoDelay", "1"));
}

static void enums(void **state)
{
    assert_string_equal(value_of("protocol", "\"manageSieve\""), "\"manageSieve\"");
    assert_string_equal(value_of("protocol", "null"), "\"smtp\"");
    assert_null(value_of("protocol", "\"ftp\""));
    assert_null(value_of("protocol", "\"SMTP\""));
    assert_null(value_of("protocol", "3"));
    assert_string_equal(value_of("tlsDisableProtocols", "[\"tls12\"]"), "[\"tls12\"]");
    assert_null(value_of("tlsDisableProtocols", "[\"tls11\"]"));
    assert_null(value_of("tlsDisableCipherSuites", "[\"tls-rsa-with-rc4\"]"));
}

static void socket_addresses(void **state)
{
    assert_string_equal(value_of("bind", "[\"127.0.0.1:25\"]"), "[\"127.0.0.1:25\"]");
    assert_string_equal(value_of("bind", "[\"[::1]:25\"]"), "[\"[::1]:25\"]");
    assert_string_equal(value_of("bind", "[\"[0:0::1]:25\"]"), "[\"[::1]:25\"]");
    assert_string_equal(value_of("bind", "{\"127.0.0.1:25\": true}"), "[\"127.0.0.1:25\"]");
    assert_null(value_of("bind", "[]"));
    assert_null(value_of("bind", "null"));
    assert_null(value_of("bind", "\"127.0.0.1:25\""));
    assert_null(value_of("bind", "[\"127.0.0.1\"]"));
    assert_null(value_of("bind", "[\"127.0.0.1:0\"]"));
    assert_null(value_of("bind", "[\"127.0.0.1:65536\"]"));
    assert_null(value_of("bind", "[\"localhost:25\"]"));
    assert_null(value_of("bind", "[\"::1:25\"]"));
    assert_null(value_of("bind", "[\" 127.0.0.1:25\"]"));
    assert_null(value_of("bind", "[\"127.0.0.1:25\", \"127.0.0.1:25\"]"));
    assert_null(value_of("bind", "[\"[::1]:25\", \"[0::1]:25\"]"));
    assert_null(value_of("bind", "{\"127.0.0.1:25\": false}"));
    assert_null(value_of("bind", "[5]"));
}

static void ip_masks(void **state)
{
    assert_string_equal(value_of("overrideProxyTrustedNetworks", "[\"10.0.0.0/8\", \"::1\"]"),
                        "[\"10.0.0.0/8\",\"::1\"]");
    assert_string_equal(value_of("overrideProxyTrustedNetworks", "[\"0.0.0.0/0\"]"),
                        "[\"0.0.0.0/0\"]");
    assert_string_equal(value_of("overrideProxyTrustedNetworks", "null"), "[]");
    assert_null(value_of("overrideProxyTrustedNetworks", "[\"10.0.0.1/8\"]"));
    assert_null(value_of("overrideProxyTrustedNetworks", "[\"10.0.0.0/33\"]"));
    assert_null(value_of("overrideProxyTrustedNetworks", "[\"::/129\"]"));
    assert_null(value_of("overrideProxyTrustedNetworks", "[\"example.com\"]"));
}

static void tls_timeout(void **state)
{
    assert_string_equal(value_of("tlsTimeout", "\"60000\""), "\"1m\"");
    assert_string_equal(value_of("tlsTimeout", "60000"), "\"1m\"");
    assert_string_equal(value_of("tlsTimeout", "\"90s\""), "\"90s\"");
    assert_string_equal(value_of("tlsTimeout", "\"1500ms\""), "\"1500ms\"");
    assert_string_equal(value_of("tlsTimeout", "\"1d\""), "\"1d\"");
    assert_string_equal(value_of("tlsTimeout", "null"), "\"1m\"");
    assert_null(value_of("tlsTimeout", "0"));
    assert_null(value_of("tlsTimeout", "\"0s\""));
    assert_null(value_of("tlsTimeout", "\"2d\""));
    assert_null(value_of("tlsTimeout", "\"soon\""));
}

static void names(void **state)
{
    assert_string_equal(value_of("name", "\"smtp-in.1_x\""), "\"smtp-in.1_x\"");
    assert_null(value_of("name", "\"\""));
    assert_null(value_of("name", "\"a b\""));
    assert_null(value_of("name", "\"caf\\u00e9\""));
    assert_null(value_of("name", "\"a\\u0000b\""));
    char big[80];
    snprintf(big, sizeof big, "\"%065d\"", 0);
    assert_null(value_of("name", big));
    snprintf(big, sizeof big, "\"%064d\"", 0);
    assert_non_null(value_of("name", big));
}

static json_t *create(const char *json, struct gh_verr *ve)
{
    json_t *in = json_loads(json, 0, NULL);
    assert_non_null(in);
    gh_verr_init(ve);
    json_t *obj = gh_schema_create(&gh_type_listener, in, ve);
    json_decref(in);
    return obj;
}

static bool names_prop(const struct gh_verr *ve, const char *prop)
{
    size_t i;
    json_t *v;
    json_array_foreach(ve->props, i, v) if (!strcmp(json_string_value(v), prop)) return true;
    return false;
}

static void create_defaults(void **state)
{
    struct gh_verr ve;
    json_t *o = create("{\"bind\": [\"127.0.0.1:2525\"]}", &ve);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "protocol")), "smtp");
    assert_int_equal(json_integer_value(json_object_get(o, "socketBacklog")), 1024);
    assert_int_equal(json_integer_value(json_object_get(o, "maxConnections")), 8192);
    assert_string_equal(json_string_value(json_object_get(o, "tlsTimeout")), "1m");
    assert_true(json_is_true(json_object_get(o, "useTls")));
    assert_true(json_is_false(json_object_get(o, "tlsImplicit")));
    assert_true(json_is_true(json_object_get(o, "tlsIgnoreClientOrder")));
    assert_true(json_is_null(json_object_get(o, "socketTtl")));
    assert_int_equal(json_array_size(json_object_get(o, "tlsDisableCipherSuites")), 0);
    json_decref(o);
    gh_verr_clear(&ve);
}

/* The reference page's create example: empty bind and out-of-range TOS/TTL. */
static void create_reference_example(void **state)
{
    struct gh_verr ve;
    json_t *o = create("{\"bind\": [], \"maxConnections\": 8192, "
                       "\"overrideProxyTrustedNetworks\": [], \"protocol\": \"smtp\", "
                       "\"socketBacklog\": 1024, \"socketNoDelay\": true, "
                       "\"socketReceiveBufferSize\": 1000, \"socketReuseAddress\": true, "
                       "\"socketReusePort\": true, \"socketSendBufferSize\": 1000, "
                       "\"socketTosV4\": 1000, \"socketTtl\": 1000, "
                       "\"tlsDisableCipherSuites\": [], \"tlsDisableProtocols\": [], "
                       "\"tlsIgnoreClientOrder\": true, \"tlsImplicit\": false, "
                       "\"tlsTimeout\": \"1m\", \"useTls\": true}",
                       &ve);
    assert_null(o);
    assert_string_equal(ve.type, "invalidProperties");
    assert_true(names_prop(&ve, "bind"));
    assert_true(names_prop(&ve, "socketTosV4"));
    assert_true(names_prop(&ve, "socketTtl"));
    assert_false(names_prop(&ve, "socketBacklog"));
    assert_non_null(strstr(ve.desc, "bind: "));
    gh_verr_clear(&ve);
}

static void create_unknown_and_server_set(void **state)
{
    struct gh_verr ve;
    assert_null(create("{\"bind\": [\"127.0.0.1:1\"], \"description\": \"x\", "
                       "\"protocol\": \"ftp\", \"id\": \"X\"}",
                       &ve));
    assert_true(names_prop(&ve, "description"));
    assert_true(names_prop(&ve, "protocol"));
    assert_true(names_prop(&ve, "id"));
    assert_int_equal(json_array_size(ve.props), 3);
    gh_verr_clear(&ve);
    assert_null(create("{}", &ve));
    assert_true(names_prop(&ve, "bind"));
    gh_verr_clear(&ve);
}

static json_t *patch(const json_t *cur, const char *json, struct gh_verr *ve)
{
    json_t *p = json_loads(json, 0, NULL);
    assert_non_null(p);
    gh_verr_init(ve);
    json_t *obj = gh_schema_patch(&gh_type_listener, cur, p, ve);
    json_decref(p);
    return obj;
}

static void patch_rules(void **state)
{
    struct gh_verr ve;
    json_t *cur = create("{\"name\": \"a\", \"bind\": [\"127.0.0.1:1\"]}", &ve);
    gh_verr_clear(&ve);
    json_object_set_new(cur, "id", json_string("l1"));

    json_t *o = patch(cur, "{\"bind/127.0.0.1:2\": true, \"bind/127.0.0.1:1\": null}", &ve);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "bind"), 0)),
                        "127.0.0.1:2");
    assert_int_equal(json_array_size(json_object_get(o, "bind")), 1);
    json_decref(o);
    gh_verr_clear(&ve);

    o = patch(cur, "{\"overrideProxyTrustedNetworks/10.0.0.0~18\": true}", &ve);
    assert_non_null(o);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(o, "overrideProxyTrustedNetworks"), 0)),
        "10.0.0.0/8");
    json_decref(o);
    gh_verr_clear(&ve);

    assert_null(patch(cur, "{\"bind/127.0.0.1:1\": null}", &ve)); /* last address */
    assert_true(names_prop(&ve, "bind"));
    gh_verr_clear(&ve);
    assert_null(patch(cur, "{\"socketTtl/x\": 1}", &ve));
    assert_string_equal(ve.type, "invalidPatch");
    gh_verr_clear(&ve);
    assert_null(patch(cur, "{\"bind\": [\"127.0.0.1:3\"], \"bind/127.0.0.1:4\": true}", &ve));
    assert_string_equal(ve.type, "invalidPatch");
    gh_verr_clear(&ve);
    assert_null(patch(cur, "{\"bind/127.0.0.1:4\": false}", &ve));
    assert_string_equal(ve.type, "invalidPatch");
    gh_verr_clear(&ve);
    assert_null(patch(cur, "{\"description\": \"Updated\"}", &ve));
    assert_string_equal(ve.type, "invalidProperties");
    assert_true(names_prop(&ve, "description"));
    gh_verr_clear(&ve);
    assert_null(patch(cur, "{\"name\": \"b\"}", &ve));
    assert_true(names_prop(&ve, "name"));
    gh_verr_clear(&ve);
    o = patch(cur, "{\"name\": \"a\", \"id\": \"l1\"}", &ve); /* unchanged: fine */
    assert_non_null(o);
    json_decref(o);
    gh_verr_clear(&ve);
    assert_null(patch(cur, "{\"id\": \"l2\"}", &ve));
    assert_true(names_prop(&ve, "id"));
    gh_verr_clear(&ve);
    o = patch(cur, "{\"socketBacklog\": null, \"socketTtl\": 5}", &ve);
    assert_int_equal(json_integer_value(json_object_get(o, "socketBacklog")), 1024);
    assert_int_equal(json_integer_value(json_object_get(o, "socketTtl")), 5);
    json_decref(o);
    gh_verr_clear(&ve);
    json_decref(cur);
}

static json_t *find_by_name(json_t *list, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(
        list, i, v) if (!strcmp(json_string_value(json_object_get(v, "name")), name)) return v;
    return NULL;
}

static void schema_json(void **state)
{
    json_t *s = gh_schema_json(gh_types, GH_NTYPES);
    json_t *types = json_object_get(s, "types");
    json_t *nl = json_object_get(types, "x:NetworkListener");
    assert_non_null(nl);
    assert_string_equal(json_string_value(json_object_get(nl, "cliName")), "network-listener");
    assert_string_equal(json_string_value(json_object_get(nl, "permissionPrefix")),
                        "sysNetworkListener");
    json_t *props = json_object_get(nl, "properties");
    /* every property of SPEC §2 plus id */
    assert_int_equal(json_array_size(props), 20);
    json_t *bind = find_by_name(props, "bind");
    assert_string_equal(json_string_value(json_object_get(bind, "type")), "SocketAddr");
    assert_true(json_is_true(json_object_get(bind, "list")));
    assert_true(json_is_true(json_object_get(bind, "required")));
    assert_int_equal(json_integer_value(json_object_get(bind, "minItems")), 1);
    json_t *proto = find_by_name(props, "protocol");
    assert_string_equal(json_string_value(json_object_get(proto, "default")), "smtp");
    assert_int_equal(json_array_size(json_object_get(proto, "enum")), 6);
    assert_string_equal(json_string_value(json_object_get(proto, "filter")), "equals");
    json_t *name = find_by_name(props, "name");
    assert_string_equal(json_string_value(json_object_get(name, "filter")), "text");
    assert_string_equal(json_string_value(json_object_get(name, "mutability")), "createOnly");
    json_t *ttl = find_by_name(props, "socketTtl");
    assert_int_equal(json_integer_value(json_object_get(ttl, "min")), 1);
    assert_int_equal(json_integer_value(json_object_get(ttl, "max")), 255);
    assert_true(json_is_null(json_object_get(ttl, "default")));
    json_t *timeout = find_by_name(props, "tlsTimeout");
    assert_string_equal(json_string_value(json_object_get(timeout, "default")), "1m");
    assert_string_equal(json_string_value(json_object_get(timeout, "type")), "Duration");
    json_t *suites = find_by_name(props, "tlsDisableCipherSuites");
    assert_int_equal(json_array_size(json_object_get(suites, "enum")), 9);
    assert_true(
        json_is_true(json_object_get(json_object_get(types, "x:SystemSettings"), "singleton")));
    json_t *cert = json_object_get(types, "x:Certificate");
    json_t *key = find_by_name(json_object_get(cert, "properties"), "privateKey");
    assert_string_equal(json_string_value(json_object_get(key, "mutability")), "writeOnly");
    assert_non_null(json_object_get(types, "x:ApiKey"));
    assert_non_null(json_object_get(types, "x:Destination"));
    json_decref(s);
}

/* The console's navigation path: segments split on "›" or ">", trimmed; "Other" without. */
static void schema_nav_path(void **state)
{
    static const struct gh_prop one[] = {{.name = "id", .type = GH_PT_ID, .mut = GH_SERVER_SET}};
    struct gh_objtype a = {.type = "x:A",
                           .name = "A",
                           .cli_name = "a",
                           .label = "Thing A",
                           .perm_prefix = "sysA",
                           .nav = "  Settings \u203a Security>Blocked IPs ",
                           .props = one,
                           .nprops = 1};
    struct gh_objtype b = a;
    b.type = "x:B";
    b.nav = NULL;
    struct gh_objtype *const types[] = {&a, &b, &gh_type_listener};
    json_t *s = gh_schema_json(types, 3);
    json_t *t = json_object_get(s, "types");
    char *na = json_dumps(json_object_get(json_object_get(t, "x:A"), "nav"), JSON_COMPACT);
    char *nb = json_dumps(json_object_get(json_object_get(t, "x:B"), "nav"), JSON_COMPACT);
    char *nl =
        json_dumps(json_object_get(json_object_get(t, "x:NetworkListener"), "nav"), JSON_COMPACT);
    assert_string_equal(na, "[\"Settings\",\"Security\",\"Blocked IPs\"]");
    assert_string_equal(nb, "[\"Other\",\"Thing A\"]");
    assert_string_equal(nl, "[\"Settings\",\"Network\",\"Listeners\"]");
    free(na);
    free(nb);
    free(nl);
    json_decref(s);
}

/* The enum tables of the schema must match the engine's name tables index for index. */
static void enum_tables_match_engine(void **state)
{
    const struct gh_prop *p = lprop("protocol");
    for (int i = 0; i < GH_PROTO_COUNT; i++)
        assert_string_equal(p->values[i].value, gh_protocol_names[i]);
    p = lprop("tlsDisableCipherSuites");
    for (int i = 0; i < GH_SUITE_COUNT; i++)
        assert_string_equal(p->values[i].value, gh_tls_suite_names[i]);
    p = lprop("tlsDisableProtocols");
    for (int i = 0; i < GH_TLS_VERSION_COUNT; i++)
        assert_string_equal(p->values[i].value, gh_tls_version_names[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations_normalise),
        cmocka_unit_test(durations_refused),
        cmocka_unit_test(pointer_unescape),
        cmocka_unit_test(uint_bounds),
        cmocka_unit_test(booleans),
        cmocka_unit_test(enums),
        cmocka_unit_test(socket_addresses),
        cmocka_unit_test(ip_masks),
        cmocka_unit_test(tls_timeout),
        cmocka_unit_test(names),
        cmocka_unit_test(create_defaults),
        cmocka_unit_test(create_reference_example),
        cmocka_unit_test(create_unknown_and_server_set),
        cmocka_unit_test(patch_rules),
        cmocka_unit_test(schema_json),
        cmocka_unit_test(schema_nav_path),
        cmocka_unit_test(enum_tables_match_engine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
