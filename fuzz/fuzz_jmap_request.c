/*
 * fuzz_jmap_request: arbitrary bytes as a JMAP API request body through gh_jmap_handle:
 * the parser, the Request checks, dispatch, result references and JSON Pointer paths.
 * Two fake methods give references something to point into.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jmap/jmap.h"

static json_t *fake_get(struct gh_jmap_call *call, json_t **error)
{
    json_t *ids = json_object_get(call->args, "ids");
    if (ids && !json_is_array(ids) && !json_is_null(ids)) {
        *error = gh_jmap_error("invalidArguments", "ids must be an array");
        return NULL;
    }
    return json_pack("{sO s[{ss s[ss]} {ss s[]}] ss sO}", "accountId",
                     json_object_get(call->args, "accountId"), "list", "id", "L1", "bind",
                     "127.0.0.1:1", "127.0.0.1:2", "id", "L2", "bind", "state", "S1", "notFound",
                     ids ? ids : json_null());
}

static json_t *fake_set(struct gh_jmap_call *call, json_t **error)
{
    json_t *create = json_object_get(call->args, "create"), *v;
    const char *cid;
    json_object_foreach(create, cid, v)
    {
        if (gh_jmap_valid_id(cid))
            gh_jmap_set_created_id(call->req, cid, "N1");
    }
    json_t *destroyed = json_array();
    size_t i;
    json_array_foreach(json_object_get(call->args, "destroy"), i, v)
    {
        const char *id =
            json_is_string(v) ? gh_jmap_resolve_id(call->req, json_string_value(v)) : NULL;
        if (id)
            json_array_append_new(destroyed, json_string(id));
    }
    return json_pack("{so}", "destroyed", destroyed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool registered;
    if (!registered) {
        gh_jmap_register("Fake/get", GH_JMAP_CAP_STALWART, fake_get);
        gh_jmap_register("Fake/set", GH_JMAP_CAP_STALWART, fake_set);
        registered = true;
    }
    static struct gh_principal admin = {.username = "admin", .admin = true};
    char *out = NULL;
    bool problem = false;
    int status = gh_jmap_handle((const char *)data, size, &admin, &out, &problem);
    if (status != 200 && !problem)
        abort(); /* every failure is a problem document */
    if (!out)
        abort();
    json_t *j = json_loads(out, JSON_ALLOW_NUL, NULL);
    if (!j)
        abort(); /* whatever came in, valid JSON goes out */
    json_decref(j);
    free(out);
    return 0;
}
