/* placeholder JMAP core until the real one lands. */
#include "jmap/jmap.h"

#include <string.h>

bool gh_principal_can(const struct gh_principal *who, const char *permission)
{
    return who->admin;
}
void gh_principal_clear(struct gh_principal *who)
{
    json_decref(who->permissions);
    memset(who, 0, sizeof *who);
}
void gh_jmap_register(const char *method, const char *capability, gh_jmap_method_fn fn)
{
}
json_t *gh_jmap_error(const char *type, const char *description_fmt, ...)
{
    return json_pack("{ss}", "type", type);
}
const char *gh_jmap_created_id(struct gh_jmap_request *req, const char *creation_id)
{
    return NULL;
}
void gh_jmap_set_created_id(struct gh_jmap_request *req, const char *creation_id, const char *id)
{
}
const char *gh_jmap_resolve_id(struct gh_jmap_request *req, const char *id)
{
    return id[0] == '#' ? NULL : id;
}
void gh_jmap_state_changed(const char *type, const char *new_state)
{
}
