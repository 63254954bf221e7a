/*
 * test_jmap: the JMAP core without the HTTP layer: request problems, dispatch order and
 * capability gating, result references and JSON Pointer, creation ids, Core/echo, session.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jmap/jmap.h"

static struct gh_principal admin = {.username = "admin", .admin = true};

/* Fake methods registered by the tests. */
static json_t *fake_get(struct gh_jmap_call *call, json_t **error)
{
    json_t *ids = json_object_get(call->args, "ids");
    if (ids && !json_is_array(ids) && !json_is_null(ids)) {
        *error = gh_jmap_error("invalidArguments", "ids must be an array");
        return NULL;
    }
    return json_pack("{sO s[{ss s[ss]} {ss s[s]}] ss s[]}", "accountId",
                     json_object_get(call->args, "accountId"), "list", "id", "L1", "bind",
                     "127.0.0.1:1", "127.0.0.1:2", "id", "L2", "bind", "127.0.0.1:3", "state", "S1",
                     "notFound");
}

static json_t *fake_set(struct gh_jmap_call *call, json_t **error)
{
    json_t *create = json_object_get(call->args, "create"), *v;
    const char *cid;
    json_t *created = json_object();
    int n = 0;
    json_object_foreach(create, cid, v)
    {
        char id[16];
        snprintf(id, sizeof id, "N%d", ++n);
        gh_jmap_set_created_id(call->req, cid, id);
        json_object_set_new(created, cid, json_pack("{ss}", "id", id));
    }
    json_t *destroyed = json_array();
    size_t i;
    json_array_foreach(json_object_get(call->args, "destroy"), i, v)
    {
        const char *id = gh_jmap_resolve_id(call->req, json_string_value(v));
        json_array_append_new(destroyed, json_string(id ? id : "unknown"));
    }
    return json_pack("{so so}", "created", created, "destroyed", destroyed);
}

static json_t *fake_args(struct gh_jmap_call *call, json_t **error)
{
    return json_pack("{sO ss}", "args", call->args, "callId", call->call_id);
}

static json_t *fake_slow(struct gh_jmap_call *call, json_t **error)
{
    usleep(600 * 1000);
    return json_object();
}

static void *run_slow(void *arg)
{
    const char *body = arg;
    char *out = NULL;
    bool problem;
    gh_jmap_handle(body, strlen(body), &admin, &out, &problem);
    free(out);
    return NULL;
}

static int setup(void **state)
{
    gh_jmap_register("Fake/slow", GH_JMAP_CAP_STALWART, fake_slow);
    gh_jmap_register("Fake/get", GH_JMAP_CAP_STALWART, fake_get);
    gh_jmap_register("Fake/set", GH_JMAP_CAP_STALWART, fake_set);
    gh_jmap_register("Fake/args", GH_JMAP_CAP_STALWART, fake_args);
    return 0;
}

/* Runs a request; returns the parsed body and the status. */
static json_t *run(const char *body, int *status, bool *problem)
{
    char *out = NULL;
    *status = gh_jmap_handle(body, strlen(body), &admin, &out, problem);
    assert_non_null(out);
    json_t *j = json_loads(out, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    free(out);
    return j;
}

static void expect_problem(const char *body, int want_status, const char *type, const char *limit)
{
    int status;
    bool problem;
    json_t *j = run(body, &status, &problem);
    assert_int_equal(status, want_status);
    assert_true(problem);
    assert_string_equal(json_string_value(json_object_get(j, "type")), type);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), want_status);
    assert_non_null(json_string_value(json_object_get(j, "detail")));
    if (limit)
        assert_string_equal(json_string_value(json_object_get(j, "limit")), limit);
    json_decref(j);
}

/* methodResponses of a request that must succeed. */
static json_t *responses(const char *body)
{
    int status;
    bool problem;
    json_t *j = run(body, &status, &problem);
    assert_int_equal(status, 200);
    assert_false(problem);
    json_t *r = json_incref(json_object_get(j, "methodResponses"));
    assert_non_null(r);
    json_decref(j);
    return r;
}

static const char *resp_name(json_t *r, size_t i)
{
    return json_string_value(json_array_get(json_array_get(r, i), 0));
}
static json_t *resp_args(json_t *r, size_t i)
{
    return json_array_get(json_array_get(r, i), 1);
}
static const char *resp_type(json_t *r, size_t i)
{
    return json_string_value(json_object_get(resp_args(r, i), "type"));
}

#define U "\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\"]"

static void test_not_json(void **state)
{
    expect_problem("{not json", 400, GH_JMAP_PROBLEM_NOT_JSON, NULL);
    expect_problem("{" U ",\"using\":[],\"methodCalls\":[]}", 400, GH_JMAP_PROBLEM_NOT_JSON, NULL);
    expect_problem("{" U ",\"methodCalls\":[[\"Core/echo\",{\"a\":\"\\ud800\"},\"c\"]]}", 400,
                   GH_JMAP_PROBLEM_NOT_JSON, NULL);
    expect_problem("{" U ",\"methodCalls\":[]} trailing", 400, GH_JMAP_PROBLEM_NOT_JSON, NULL);
    /* invalid UTF-8 inside a string */
    expect_problem("{" U ",\"methodCalls\":[[\"Core/echo\",{\"a\":\"\xff\"},\"c\"]]}", 400,
                   GH_JMAP_PROBLEM_NOT_JSON, NULL);
    /* deep nesting is refused, never a crash */
    size_t n = 100000;
    char *deep = malloc(n + 1);
    memset(deep, '[', n);
    deep[n] = '\0';
    expect_problem(deep, 400, GH_JMAP_PROBLEM_NOT_JSON, NULL);
    free(deep);
}

static void test_not_request(void **state)
{
    const char *bodies[] = {
        "[]",
        "\"x\"",
        "{}",
        "{" U "}",
        "{\"methodCalls\":[]}",
        "{\"using\":\"urn:ietf:params:jmap:core\",\"methodCalls\":[]}",
        "{\"using\":[1],\"methodCalls\":[]}",
        "{" U ",\"methodCalls\":\"x\"}",
        "{" U ",\"methodCalls\":[[\"Core/echo\",{}]]}",
        "{" U ",\"methodCalls\":[[\"Core/echo\",[],\"c\"]]}",
        "{" U ",\"methodCalls\":[[1,{},\"c\"]]}",
        "{" U ",\"methodCalls\":[[\"Core/echo\",{},7]]}",
        "{" U ",\"methodCalls\":[],\"createdIds\":\"bogus\"}",
        "{" U ",\"methodCalls\":[],\"createdIds\":{\"k\":5}}",
        "{" U ",\"methodCalls\":[],\"createdIds\":{\"a/b\":\"x\"}}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++)
        expect_problem(bodies[i], 400, GH_JMAP_PROBLEM_NOT_REQUEST, NULL);
}

static void test_unknown_capability(void **state)
{
    expect_problem("{\"using\":[\"urn:ietf:params:jmap:core\",\"urn:example:nope\"],"
                   "\"methodCalls\":[[\"Core/echo\",{},\"c\"]]}",
                   400, GH_JMAP_PROBLEM_UNKNOWN_CAPABILITY, NULL);
    /* jmap-jam 0.13.0 sent using as single characters */
    expect_problem("{\"using\":[\"u\",\"r\",\"n\"],\"methodCalls\":[]}", 400,
                   GH_JMAP_PROBLEM_UNKNOWN_CAPABILITY, NULL);
}

static void test_limits(void **state)
{
    char body[4096] = "{" U ",\"methodCalls\":[";
    for (int i = 0; i <= GH_JMAP_MAX_CALLS_IN_REQUEST; i++)
        strcat(body, i ? ",[\"Core/echo\",{},\"c\"]" : "[\"Core/echo\",{},\"c\"]");
    strcat(body, "]}");
    expect_problem(body, 400, GH_JMAP_PROBLEM_LIMIT, "maxCallsInRequest");

    char *out = NULL;
    bool problem;
    assert_int_equal(gh_jmap_handle("{}", GH_JMAP_MAX_SIZE_REQUEST + 1, &admin, &out, &problem),
                     413);
    assert_true(problem);
    assert_non_null(strstr(out, "\"limit\":\"maxSizeRequest\""));
    free(out);
}

static void test_empty_and_extra_members(void **state)
{
    int status;
    bool problem;
    json_t *j = run("{" U ",\"methodCalls\":[],\"x-extra\":true}", &status, &problem);
    assert_int_equal(status, 200);
    assert_int_equal(json_array_size(json_object_get(j, "methodResponses")), 0);
    char st[24];
    gh_jmap_session_state(&admin, st);
    assert_string_equal(json_string_value(json_object_get(j, "sessionState")), st);
    assert_null(json_object_get(j, "createdIds"));
    json_decref(j);
}

static void test_echo(void **state)
{
    const char *args = "{\"hello\":true,\"high\":5,\"n\":null,\"a\":[1,\"two\",false],"
                       "\"o\":{\"d\":{\"e\":\"v\"}},\"big\":9007199254740991,\"z\":\"a\\u0000b\"}";
    char body[1024];
    snprintf(body, sizeof body, "{" U ",\"methodCalls\":[[\"Core/echo\",%s,\"b3ff\"]]}", args);
    char *out;
    bool problem;
    assert_int_equal(gh_jmap_handle(body, strlen(body), &admin, &out, &problem), 200);
    /* integers byte-exact, NUL kept */
    assert_non_null(strstr(out, "9007199254740991,"));
    assert_non_null(strstr(out, "\"a\\u0000b\""));
    json_t *j = json_loads(out, JSON_ALLOW_NUL, NULL), *want = json_loads(args, JSON_ALLOW_NUL, 0);
    json_t *r = json_array_get(json_object_get(j, "methodResponses"), 0);
    assert_string_equal(json_string_value(json_array_get(r, 0)), "Core/echo");
    assert_string_equal(json_string_value(json_array_get(r, 2)), "b3ff");
    assert_true(json_equal(json_array_get(r, 1), want));
    json_decref(j);
    json_decref(want);
    free(out);
}

static void test_dispatch_order_and_errors(void **state)
{
    json_t *r = responses("{" U ",\"methodCalls\":[[\"Fake/get\",{\"ids\":[]},\"c1\"],"
                          "[\"Core/echo\",{\"x\":1},\"c2\"],[\"Fake/nope\",{},\"c3\"],"
                          "[\"Fake/get\",{\"ids\":\"L1\"},\"c4\"]]}");
    assert_int_equal(json_array_size(r), 4);
    assert_string_equal(resp_name(r, 0), "Fake/get");
    assert_string_equal(resp_name(r, 1), "Core/echo");
    assert_string_equal(resp_name(r, 2), "error");
    assert_string_equal(resp_type(r, 2), "unknownMethod");
    assert_string_equal(resp_type(r, 3), "invalidArguments");
    for (size_t i = 0; i < 4; i++) {
        char id[4];
        snprintf(id, sizeof id, "c%zu", i + 1);
        assert_string_equal(json_string_value(json_array_get(json_array_get(r, i), 2)), id);
    }
    json_decref(r);
}

static void test_using_gates_methods(void **state)
{
    /* capability of the method missing */
    json_t *r = responses("{\"using\":[\"urn:ietf:params:jmap:core\"],"
                          "\"methodCalls\":[[\"Fake/get\",{},\"c\"],[\"Core/echo\",{},\"e\"]]}");
    assert_string_equal(resp_type(r, 0), "unknownMethod");
    assert_string_equal(resp_name(r, 1), "Core/echo");
    json_decref(r);
    /* core missing: even Core/echo is unknown */
    r = responses("{\"using\":[],\"methodCalls\":[[\"Core/echo\",{},\"c\"]]}");
    assert_string_equal(resp_type(r, 0), "unknownMethod");
    json_decref(r);
    r = responses("{" U ",\"methodCalls\":[[\"PushSubscription/get\",{},\"c\"],"
                  "[\"Blob/copy\",{},\"d\"]]}");
    assert_string_equal(resp_type(r, 0), "unknownMethod");
    assert_string_equal(resp_type(r, 1), "unknownMethod");
    json_decref(r);
}

static void test_account_id(void **state)
{
    json_t *r = responses("{" U ",\"methodCalls\":[[\"Fake/args\",{},\"c\"],"
                          "[\"Fake/args\",{\"accountId\":\"nope\"},\"d\"],"
                          "[\"Fake/args\",{\"accountId\":5},\"e\"],"
                          "[\"Fake/args\",{\"accountId\":\"a\"},\"f\"]]}");
    json_t *args = json_object_get(resp_args(r, 0), "args");
    assert_string_equal(json_string_value(json_object_get(args, "accountId")), "a");
    assert_string_equal(json_string_value(json_object_get(resp_args(r, 0), "callId")), "c");
    assert_string_equal(resp_type(r, 1), "accountNotFound");
    assert_string_equal(resp_type(r, 2), "invalidArguments");
    assert_string_equal(resp_name(r, 3), "Fake/args");
    json_decref(r);
    /* NUL inside a string is refused for object methods */
    r = responses("{" U ",\"methodCalls\":[[\"Fake/args\",{\"x\":\"a\\u0000b\"},\"c\"]]}");
    assert_string_equal(resp_type(r, 0), "invalidArguments");
    json_decref(r);
}

static void test_permissions_of_account(void **state)
{
    struct gh_principal ro = {.username = "ro"};
    ro.permissions = json_pack("[s]", "sysFakeGet");
    const char *body = "{" U ",\"methodCalls\":[[\"Fake/get\",{},\"g\"],[\"Fake/set\",{},\"s\"]]}";
    char *out;
    bool problem;
    assert_int_equal(gh_jmap_handle(body, strlen(body), &ro, &out, &problem), 200);
    json_t *j = json_loads(out, 0, NULL), *r = json_object_get(j, "methodResponses");
    assert_string_equal(resp_name(r, 0), "Fake/get");
    assert_string_equal(resp_type(r, 1), "accountReadOnly");
    json_decref(j);
    free(out);
    assert_true(gh_jmap_read_only(&ro));
    assert_true(gh_principal_can(&ro, "sysFakeGet"));
    assert_false(gh_principal_can(&ro, "sysFakeCreate"));

    struct gh_principal none = {.username = "none"};
    none.permissions = json_array();
    assert_int_equal(gh_jmap_handle(body, strlen(body), &none, &out, &problem), 200);
    j = json_loads(out, 0, NULL);
    r = json_object_get(j, "methodResponses");
    assert_string_equal(resp_type(r, 0), "accountNotSupportedByMethod");
    json_decref(j);
    free(out);
    json_t *s = gh_jmap_session(&none, "http://x");
    assert_int_equal(json_object_size(json_object_get(
                         json_object_get(json_object_get(json_object_get(s, "accounts"), "a"),
                                         "accountCapabilities"),
                         "x")),
                     0);
    assert_int_equal(json_object_size(json_object_get(s, "primaryAccounts")), 0);
    json_decref(s);
    gh_principal_clear(&ro);
    gh_principal_clear(&none);
}

static void test_references(void **state)
{
    json_t *r = responses(
        "{" U ",\"methodCalls\":[[\"Fake/get\",{},\"g\"],"
        "[\"Core/echo\",{\"#all\":{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/list/*/"
        "bind\"},\"#first\":{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/list/0/id\"},"
        "\"#ids\":{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/list/*/id\"}},\"e\"]]}");
    json_t *e = resp_args(r, 1);
    assert_string_equal(resp_name(r, 1), "Core/echo");
    json_t *want = json_pack("[sss]", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
    assert_true(json_equal(json_object_get(e, "all"), want));
    json_decref(want);
    assert_string_equal(json_string_value(json_object_get(e, "first")), "L1");
    assert_int_equal(json_array_size(json_object_get(e, "ids")), 2);
    assert_null(json_object_get(e, "#all"));
    json_decref(r);
}

static void test_reference_failures(void **state)
{
    const char *refs[] = {
        "{\"resultOf\":\"nope\",\"name\":\"Fake/get\",\"path\":\"/state\"}",
        "{\"resultOf\":\"g\",\"name\":\"Fake/set\",\"path\":\"/state\"}",
        "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/nope\"}",
        "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"state\"}",
        "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/list/*\"}", /* fine: control */
        "{\"resultOf\":\"bad\",\"name\":\"error\",\"path\":\"/type\"}",    /* fine: control */
        "{\"resultOf\":\"bad\",\"name\":\"Fake/nope\",\"path\":\"/type\"}",
        "{\"resultOf\":\"later\",\"name\":\"Core/echo\",\"path\":\"\"}",
        "{\"resultOf\":\"a\",\"name\":\"Fake/get\",\"path\":\"/state\"}",
        "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/state/*\"}",
        "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/list/7\"}",
        "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/list/01\"}",
        "{\"resultOf\":\"g\",\"path\":\"/state\"}",
        "\"g\"",
    };
    /* NULL: resolved. A reference to an error response resolves when it names "error", and
     * the string it yields for ids then fails as the method's invalidArguments. */
    const char *irr = "invalidResultReference";
    const char *want[] = {irr, irr, irr, irr, NULL, "invalidArguments", irr, irr, irr,
                          irr, irr, irr, irr, irr};
    for (size_t i = 0; i < sizeof refs / sizeof *refs; i++) {
        char body[1024];
        snprintf(body, sizeof body,
                 "{" U ",\"methodCalls\":[[\"Core/echo\",{},\"a\"],[\"Fake/get\",{},\"g\"],"
                 "[\"Fake/nope\",{},\"bad\"],[\"Fake/get\",{},\"a\"],"
                 "[\"Fake/get\",{\"#ids\":%s},\"x\"],[\"Core/echo\",{},\"later\"]]}",
                 refs[i]);
        json_t *r = responses(body);
        if (!want[i]) {
            assert_string_equal(resp_name(r, 4), "Fake/get");
        } else {
            assert_string_equal(resp_name(r, 4), "error");
            assert_string_equal(resp_type(r, 4), want[i]);
        }
        json_decref(r);
    }
    /* both ids and #ids */
    json_t *r = responses(
        "{" U ",\"methodCalls\":[[\"Fake/get\",{},\"g\"],[\"Fake/get\",{\"ids\":[],\"#ids\":"
        "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/list/*/id\"}},\"x\"]]}");
    assert_string_equal(resp_type(r, 1), "invalidArguments");
    json_decref(r);
    /* a resolved value of the wrong type is the method's invalidArguments */
    r = responses("{" U ",\"methodCalls\":[[\"Fake/get\",{},\"g\"],[\"Fake/get\",{\"#ids\":"
                  "{\"resultOf\":\"g\",\"name\":\"Fake/get\",\"path\":\"/state\"}},\"x\"]]}");
    assert_string_equal(resp_type(r, 1), "invalidArguments");
    json_decref(r);
}

static void test_pointer(void **state)
{
    json_t *doc = json_loads("{\"a/b\":1,\"m~n\":2,\"0\":\"zero\",\"*\":\"star\",\"arr\":[[1,2],"
                             "[3]],\"objs\":[{\"x\":[1]},{\"x\":[2,3]}],\"s\":\"t\"}",
                             0, NULL);
    struct {
        const char *path, *want;
    } cases[] = {
        {"/a~1b", "1"},        {"/m~0n", "2"},           {"/0", "\"zero\""}, {"/*", "\"star\""},
        {"/arr/*", "[1,2,3]"}, {"/objs/*/x", "[1,2,3]"}, {"/arr/1/0", "3"},  {"/arr/2", NULL},
        {"/s/*", NULL},        {"/a~2b", NULL},          {"nope", NULL},     {"/missing", NULL},
        {"/arr/-", NULL},      {"/objs/*/y", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *v = gh_jmap_pointer(doc, cases[i].path);
        if (!cases[i].want) {
            assert_null(v);
            continue;
        }
        assert_non_null(v);
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(s, cases[i].want);
        free(s);
        json_decref(v);
    }
    json_t *all = gh_jmap_pointer(doc, "");
    assert_ptr_equal(all, doc);
    json_decref(all);
    json_decref(doc);
}

static void test_created_ids(void **state)
{
    int status;
    bool problem;
    json_t *j = run("{" U ",\"createdIds\":{\"old\":\"L1\"},\"methodCalls\":["
                    "[\"Fake/set\",{\"create\":{\"c1\":{}}},\"a\"],"
                    "[\"Fake/set\",{\"destroy\":[\"#c1\",\"#old\",\"#zz\"]},\"b\"]]}",
                    &status, &problem);
    assert_int_equal(status, 200);
    json_t *ids = json_object_get(j, "createdIds");
    assert_string_equal(json_string_value(json_object_get(ids, "old")), "L1");
    assert_string_equal(json_string_value(json_object_get(ids, "c1")), "N1");
    json_t *r = json_object_get(j, "methodResponses");
    json_t *want = json_pack("[sss]", "N1", "L1", "unknown");
    assert_true(json_equal(json_object_get(resp_args(r, 1), "destroyed"), want));
    json_decref(want);
    json_decref(j);
    /* without createdIds in the request, none in the response */
    j = run("{" U ",\"methodCalls\":[[\"Fake/set\",{\"create\":{\"c1\":{}}},\"a\"]]}", &status,
            &problem);
    assert_null(json_object_get(j, "createdIds"));
    json_decref(j);
}

static void test_session(void **state)
{
    json_t *s = gh_jmap_session(&admin, "http://127.0.0.1:8080");
    json_t *core = json_object_get(json_object_get(s, "capabilities"), GH_JMAP_CAP_CORE);
    const char *limits[] = {"maxSizeUpload",         "maxConcurrentUpload", "maxSizeRequest",
                            "maxConcurrentRequests", "maxCallsInRequest",   "maxObjectsInGet",
                            "maxObjectsInSet"};
    for (size_t i = 0; i < 7; i++)
        assert_true(json_is_integer(json_object_get(core, limits[i])));
    assert_true(json_is_array(json_object_get(core, "collationAlgorithms")));
    assert_non_null(json_object_get(json_object_get(s, "capabilities"), GH_JMAP_CAP_STALWART));
    json_t *acct = json_object_get(json_object_get(s, "accounts"), GH_JMAP_ACCOUNT_ID);
    assert_non_null(
        json_object_get(json_object_get(acct, "accountCapabilities"), GH_JMAP_CAP_STALWART));
    assert_false(json_is_true(json_object_get(acct, "isReadOnly")));
    json_t *primary = json_object_get(s, "primaryAccounts");
    assert_string_equal(json_string_value(json_object_get(primary, GH_JMAP_CAP_STALWART)), "a");
    assert_null(json_object_get(primary, GH_JMAP_CAP_CORE));
    assert_string_equal(json_string_value(json_object_get(s, "username")), "admin");
    assert_string_equal(json_string_value(json_object_get(s, "apiUrl")),
                        "http://127.0.0.1:8080/api");
    const char *es = json_string_value(json_object_get(s, "eventSourceUrl"));
    assert_non_null(strstr(es, "{types}"));
    assert_non_null(strstr(es, "{closeafter}"));
    assert_non_null(strstr(es, "{ping}"));
    const char *dl = json_string_value(json_object_get(s, "downloadUrl"));
    assert_non_null(strstr(dl, "{accountId}"));
    assert_non_null(strstr(dl, "{blobId}"));
    assert_non_null(strstr(dl, "{type}"));
    assert_non_null(strstr(dl, "{name}"));
    char st[24];
    gh_jmap_session_state(&admin, st);
    assert_string_equal(json_string_value(json_object_get(s, "state")), st);
    json_decref(s);

    /* a permission change changes the state */
    struct gh_principal k1 = {.username = "k"}, k2 = {.username = "k"};
    k1.permissions = json_pack("[ss]", "sysFakeGet", "sysFakeUpdate");
    k2.permissions = json_pack("[sss]", "sysFakeGet", "sysFakeUpdate", "sysFakeQuery");
    char s1[24], s2[24];
    gh_jmap_session_state(&k1, s1);
    gh_jmap_session_state(&k2, s2);
    assert_string_not_equal(s1, s2);
    gh_principal_clear(&k1);
    gh_principal_clear(&k2);
}

static json_t *pushed;
static void capture_push(json_t *states)
{
    json_decref(pushed);
    pushed = states;
}

static void test_push_states(void **state)
{
    gh_jmap_set_push(capture_push);
    gh_jmap_state_changed("x:Fake", "S9");
    assert_non_null(pushed);
    assert_string_equal(json_string_value(json_object_get(pushed, "x:Fake")), "S9");
    json_t *all = gh_jmap_states();
    assert_string_equal(json_string_value(json_object_get(all, "x:Fake")), "S9");
    json_decref(all);
    gh_jmap_set_push(NULL);
    json_decref(pushed);
    pushed = NULL;
}

static void test_problem_body(void **state)
{
    char *p = gh_jmap_problem(401, "about:blank", NULL, "who are you");
    json_t *j = json_loads(p, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "title")), "Unauthorized");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 401);
    json_decref(j);
    free(p);
    assert_true(gh_jmap_valid_id("aZ0-_"));
    assert_false(gh_jmap_valid_id(""));
    assert_false(gh_jmap_valid_id("a b"));
}

/* One slow request holds the management lock; three more wait for it; the fifth of the
 * same credential is refused with the limit, another credential is not. */
static void test_max_concurrent_requests(void **state)
{
    static const char slow[] = "{\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\"],"
                               "\"methodCalls\":[[\"Fake/slow\",{},\"s\"]]}";
    static const char echo[] = "{\"using\":[\"urn:ietf:params:jmap:core\"],"
                               "\"methodCalls\":[[\"Core/echo\",{},\"e\"]]}";
    pthread_t t[GH_JMAP_MAX_CONCURRENT_REQUESTS];
    pthread_create(&t[0], NULL, run_slow, (void *)slow);
    usleep(100 * 1000);
    for (int i = 1; i < GH_JMAP_MAX_CONCURRENT_REQUESTS; i++)
        pthread_create(&t[i], NULL, run_slow, (void *)echo);
    usleep(100 * 1000);
    char *out = NULL;
    bool problem;
    assert_int_equal(gh_jmap_handle(echo, strlen(echo), &admin, &out, &problem), 429);
    assert_true(problem);
    assert_non_null(strstr(out, "\"limit\":\"maxConcurrentRequests\""));
    free(out);
    for (int i = 0; i < GH_JMAP_MAX_CONCURRENT_REQUESTS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(gh_jmap_handle(echo, strlen(echo), &admin, &out, &problem), 200);
    free(out);
}

/* A U+0000 must not cut a string the core compares: the call must not run. */
static void test_nul_in_names_ids_and_using(void **state)
{
    json_t *r = responses("{\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\"],"
                          "\"methodCalls\":[[\"Fake/get\\u0000garbage\",{},\"a\"],"
                          "[\"Core/echo\\u0000\",{},\"b\"],"
                          "[\"Core/echo\",{},\"c\\u0000d\"],"
                          "[\"Fake/get\",{},\"e\"]]}");
    assert_int_equal(json_array_size(r), 4);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(resp_name(r, i), "error");
        json_t *err = json_array_get(json_array_get(r, i), 1);
        assert_string_equal(json_string_value(json_object_get(err, "type")), "invalidArguments");
    }
    /* the call id comes back whole */
    json_t *id = json_array_get(json_array_get(r, 2), 2);
    assert_int_equal(json_string_length(id), 3);
    assert_string_equal(resp_name(r, 3), "Fake/get");
    json_decref(r);
    expect_problem("{\"using\":[\"urn:ietf:params:jmap:core\\u0000x\"],\"methodCalls\":[]}", 400,
                   GH_JMAP_PROBLEM_UNKNOWN_CAPABILITY, NULL);
    expect_problem("{\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\\u0000\"],"
                   "\"methodCalls\":[]}",
                   400, GH_JMAP_PROBLEM_UNKNOWN_CAPABILITY, NULL);
}

static void test_nul_in_references_and_created_ids(void **state)
{
    json_t *r = responses(
        "{\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\"],"
        "\"methodCalls\":[[\"Core/echo\",{\"x\":[1]},\"c1\"],"
        "[\"Core/echo\",{\"#y\":{\"resultOf\":\"c1\\u0000z\",\"name\":\"Core/echo\",\"path\":\"/"
        "x\"}},"
        "\"c2\"],"
        "[\"Core/echo\",{\"#y\":{\"resultOf\":\"c1\",\"name\":\"Core/echo\\u0000\",\"path\":\"/"
        "x\"}},"
        "\"c3\"],"
        "[\"Core/echo\",{\"#y\":{\"resultOf\":\"c1\",\"name\":\"Core/echo\",\"path\":\"/"
        "x\\u0000\"}},"
        "\"c4\"],"
        "[\"Core/echo\",{\"#y\":{\"resultOf\":\"c1\",\"name\":\"Core/echo\",\"path\":\"/x\"}},"
        "\"c5\"]]}");
    for (size_t i = 1; i < 4; i++) {
        assert_string_equal(resp_name(r, i), "error");
        json_t *err = json_array_get(json_array_get(r, i), 1);
        assert_string_equal(json_string_value(json_object_get(err, "type")),
                            "invalidResultReference");
    }
    assert_string_equal(resp_name(r, 4), "Core/echo");
    json_decref(r);
    /* a reference to a call whose id holds U+0000 never matches the id cut short */
    r = responses("{\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\"],"
                  "\"methodCalls\":[[\"Core/echo\",{\"x\":[1]},\"c1\\u0000z\"],"
                  "[\"Core/echo\",{\"#y\":{\"resultOf\":\"c1\",\"name\":\"Core/echo\","
                  "\"path\":\"/x\"}},\"c2\"]]}");
    assert_string_equal(resp_name(r, 1), "error");
    json_decref(r);
    expect_problem("{\"using\":[\"urn:ietf:params:jmap:core\"],\"methodCalls\":[],"
                   "\"createdIds\":{\"k\":\"abc\\u0000def\"}}",
                   400, GH_JMAP_PROBLEM_NOT_REQUEST, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_not_request),
        cmocka_unit_test(test_unknown_capability),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_empty_and_extra_members),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_dispatch_order_and_errors),
        cmocka_unit_test(test_using_gates_methods),
        cmocka_unit_test(test_account_id),
        cmocka_unit_test(test_permissions_of_account),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_reference_failures),
        cmocka_unit_test(test_pointer),
        cmocka_unit_test(test_created_ids),
        cmocka_unit_test(test_session),
        cmocka_unit_test(test_push_states),
        cmocka_unit_test(test_problem_body),
        cmocka_unit_test(test_max_concurrent_requests),
        cmocka_unit_test(test_nul_in_names_ids_and_using),
        cmocka_unit_test(test_nul_in_references_and_created_ids),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
