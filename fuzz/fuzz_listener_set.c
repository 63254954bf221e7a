/*
 * fuzz_listener_set: arbitrary JSON through the x:NetworkListener validation — as a
 * create argument and as a patch of an existing listener — with the listener's own rules
 * (bind conflicts, TLS, names). No store and no engine: only the checks that face the
 * network. The first byte picks create or patch.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "objects/model.h"

static json_t *existing;

static void init(void)
{
    if (existing)
        return;
    existing = json_pack(
        "{ss ss s[s] ss sI sb s[] s[] s[] sb sb ss sI sI sn sn sn sn sb sb sb}", "id", "lexisting",
        "name", "smtp", "bind", "127.0.0.1:25", "protocol", "smtp", "maxConnections",
        (json_int_t)8192, "useTls", 1, "overrideProxyTrustedNetworks", "tlsDisableProtocols",
        "tlsDisableCipherSuites", "tlsImplicit", 0, "tlsIgnoreClientOrder", 1, "tlsTimeout", "1m",
        "socketBacklog", (json_int_t)1024, "socketTtl", (json_int_t)64, "socketReceiveBufferSize",
        "socketSendBufferSize", "socketTosV4", "unused", "socketNoDelay", 1, "socketReuseAddress",
        1, "socketReusePort", 1);
    json_object_del(existing, "unused");
    gh_type_listener.objs = json_array();
    json_array_append(gh_type_listener.objs, existing);
    json_t *other = json_deep_copy(existing);
    json_object_set_new(other, "id", json_string("lother"));
    json_object_set_new(other, "name", json_string("imap"));
    json_object_set_new(other, "bind", json_pack("[s]", "[::]:143"));
    json_array_append_new(gh_type_listener.objs, other);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1)
        return 0;
    bool as_patch = data[0] & 1;
    json_t *in = json_loadb((const char *)data + 1, size - 1, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        return 0;
    }
    struct gh_verr ve;
    gh_verr_init(&ve);
    json_t *obj = as_patch ? gh_schema_patch(&gh_type_listener, existing, in, &ve)
                           : gh_schema_create(&gh_type_listener, in, &ve);
    if (obj) {
        if (!as_patch)
            json_object_set_new(obj, "id", json_string("lnew"));
        gh_type_listener.hooks.validate(&gh_type_listener, obj, as_patch ? existing : NULL, &ve);
        if (gh_verr_ok(&ve)) {
            gh_err err = {0};
            struct gh_listener_conf *c = gh_listener_conf_from(obj, &err);
            if (!c)
                __builtin_trap(); /* a validated listener always makes engine settings */
            gh_listener_conf_unref(c);
        }
        json_t *view = gh_schema_view(&gh_type_listener, obj, NULL, false);
        json_decref(view);
    } else if (gh_verr_ok(&ve)) {
        __builtin_trap(); /* a refusal always says why */
    }
    json_t *e = gh_verr_json(&ve);
    json_decref(e);
    gh_verr_clear(&ve);
    json_decref(obj);
    json_decref(in);
    return 0;
}
