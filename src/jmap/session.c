/*
 * session: who may do what (principals and permissions) and the Session object of
 * RFC 8620 §2 built for one credential, with its state string.
 */
#include "jmap/jmap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool gh_principal_can(const struct gh_principal *who, const char *permission)
{
    if (who->admin)
        return true;
    size_t i;
    json_t *p;
    json_array_foreach(who->permissions, i, p)
    {
        if (json_is_string(p) && !strcmp(json_string_value(p), permission))
            return true;
    }
    return false;
}

void gh_principal_clear(struct gh_principal *who)
{
    json_decref(who->permissions);
    memset(who, 0, sizeof *who);
}

void gh_principal_copy(struct gh_principal *dst, const struct gh_principal *src)
{
    *dst = *src;
    dst->permissions = src->permissions ? json_deep_copy(src->permissions) : NULL;
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

bool gh_jmap_read_only(const struct gh_principal *who)
{
    if (who->admin)
        return false;
    size_t i;
    json_t *p;
    json_array_foreach(who->permissions, i, p)
    {
        const char *s = json_string_value(p);
        if (s && (ends_with(s, "Create") || ends_with(s, "Update") || ends_with(s, "Destroy")))
            return false;
    }
    return true;
}

/* Everything of the session that does not depend on the URL it is served under. */
static json_t *session_core(const struct gh_principal *who)
{
    json_t *core = json_pack("{sI sI sI sI sI sI sI s[ss]}", "maxSizeUpload",
                             (json_int_t)GH_JMAP_MAX_SIZE_UPLOAD, "maxConcurrentUpload",
                             (json_int_t)GH_JMAP_MAX_CONCURRENT_UPLOAD, "maxSizeRequest",
                             (json_int_t)GH_JMAP_MAX_SIZE_REQUEST, "maxConcurrentRequests",
                             (json_int_t)GH_JMAP_MAX_CONCURRENT_REQUESTS, "maxCallsInRequest",
                             (json_int_t)GH_JMAP_MAX_CALLS_IN_REQUEST, "maxObjectsInGet",
                             (json_int_t)GH_JMAP_MAX_OBJECTS_IN_GET, "maxObjectsInSet",
                             (json_int_t)GH_JMAP_MAX_OBJECTS_IN_SET, "collationAlgorithms",
                             "i;ascii-casemap", "i;unicode-casemap");
    bool usable = may_use_account(who);
    json_t *account_caps = usable ? json_pack("{s{}}", GH_JMAP_CAP_STALWART) : json_object();
    json_t *primary =
        usable ? json_pack("{ss}", GH_JMAP_CAP_STALWART, GH_JMAP_ACCOUNT_ID) : json_object();
    return json_pack("{s{so s{}} s{s{ss sb sb so}} so ss}", "capabilities", GH_JMAP_CAP_CORE, core,
                     GH_JMAP_CAP_STALWART, "accounts", GH_JMAP_ACCOUNT_ID, "name", "gatehouse",
                     "isPersonal", 1, "isReadOnly", gh_jmap_read_only(who), "accountCapabilities",
                     account_caps, "primaryAccounts", primary, "username", who->username);
}

/* The state is a digest of everything the session says plus the credential's permissions,
 * so a permission change (which may change no visible member) still changes it. */
static void state_of(json_t *core, const struct gh_principal *who, char out[24])
{
    json_t *all = json_pack("{sO sO}", "session", core, "permissions",
                            who->permissions ? who->permissions : json_null());
    char *text = all ? json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = text ? text : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    snprintf(out, 24, "s%016llx", (unsigned long long)h);
    free(text);
    json_decref(all);
}

void gh_jmap_session_state(const struct gh_principal *who, char out[24])
{
    json_t *core = session_core(who);
    state_of(core, who, out);
    json_decref(core);
}

static json_t *url(const char *base, const char *path)
{
    size_t n = strlen(base) + strlen(path) + 1;
    char *s = malloc(n);
    if (!s)
        return NULL;
    snprintf(s, n, "%s%s", base, path);
    json_t *v = json_string(s);
    free(s);
    return v;
}

json_t *gh_jmap_session(const struct gh_principal *who, const char *base_url)
{
    json_t *s = session_core(who);
    if (!s)
        return NULL;
    char state[24];
    state_of(s, who, state);
    json_object_set_new(s, "apiUrl", url(base_url, "/api"));
    json_object_set_new(s, "downloadUrl",
                        url(base_url, "/jmap/download/{accountId}/{blobId}/{name}?accept={type}"));
    json_object_set_new(s, "uploadUrl", url(base_url, "/jmap/upload/{accountId}/"));
    json_object_set_new(
        s, "eventSourceUrl",
        url(base_url, "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}"));
    json_object_set_new(s, "state", json_string(state));
    return s;
}
