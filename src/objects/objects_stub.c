/* placeholder object layer until the real one lands. */
#include "objects/objects.h"

bool gh_objects_init(const struct gh_objects_options *opt, gh_err *err)
{
    return true;
}
void gh_objects_shutdown(void)
{
}
bool gh_objects_reload(gh_err *err)
{
    return true;
}
bool gh_objects_authenticate(const char *username, const char *secret, struct gh_principal *who)
{
    return false;
}
json_t *gh_objects_schema(void)
{
    return json_object();
}
json_t *gh_objects_listener_status(void)
{
    return json_pack("{s{}}", "listeners");
}
