/*
 * settings: the x:SystemSettings singleton (id "singleton"): server-wide values the
 * engine reads for new connections — the host name used in greetings and the networks
 * whose PROXY headers are trusted when a listener does not override them.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "net/engine.h"
#include "objects/model.h"
#include "store/store.h"

/* A DNS host name: labels of letters, digits and hyphens, 1-63 each, 253 in all. */
static bool check_hostname(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    size_t len = strlen(s), label = 0;
    if (len > 253)
        return gh_fail(err, "a host name is at most 253 characters");
    for (const char *p = s;; p++) {
        if (*p == '.' || !*p) {
            if (label == 0 || p[-1] == '-')
                return gh_fail(err,
                               "\"%s\" is not a host name: each dot-separated label needs 1-63 "
                               "letters, digits or hyphens, not starting or ending with '-'",
                               s);
            if (!*p)
                break;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-')
            return gh_fail(err, "\"%s\" is not a host name: '%c' is not allowed", s, *p);
        if (label == 0 && *p == '-')
            return gh_fail(err, "\"%s\" is not a host name: a label cannot start with '-'", s);
        if (++label > 63)
            return gh_fail(err, "\"%s\" is not a host name: a label is at most 63 characters", s);
    }
    return true;
}

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = "Server",
     .description = "Always \"singleton\""},
    {.name = "defaultHostname",
     .type = GH_PT_STRING,
     .required = true,
     .max_len = 253,
     .check = check_hostname,
     .label = "Host name",
     .group = "Server",
     .description = "The server's host name, used in greetings (SMTP 220, IMAP OK, ...) and "
                    "for the self-signed certificate",
     .rule = "a DNS host name; set to the machine's host name on first start"},
    {.name = "proxyTrustedNetworks",
     .type = GH_PT_IPMASK,
     .list = true,
     .label = "Trusted proxy networks",
     .group = "Proxy networks",
     .description = "Networks whose connections must start with a PROXY header, for every "
                    "listener that does not override them",
     .rule = "IP or CIDR with the host bits zero"},
};

void gh_settings_apply(void)
{
    json_t *s = gh_obj_find(&gh_type_settings, "singleton", NULL);
    if (!s || !gh_model.engine)
        return;
    gh_engine_set_hostname(gh_model.engine,
                           json_string_value(json_object_get(s, "defaultHostname")));
    json_t *nets = json_object_get(s, "proxyTrustedNetworks");
    size_t n = json_array_size(nets);
    struct gh_ipmask *masks = calloc(n ? n : 1, sizeof *masks);
    if (!masks)
        return;
    unsigned k = 0;
    for (size_t i = 0; i < n; i++)
        if (gh_ipmask_parse(json_string_value(json_array_get(nets, i)), &masks[k], NULL))
            k++;
    if (!gh_engine_set_proxy_trusted(gh_model.engine, masks, k))
        gh_log(NULL, NULL, "settings-error", "could not apply proxyTrustedNetworks");
    free(masks);
}

static void committed(struct gh_objtype *t)
{
    gh_settings_apply();
}

static const char *const groups[] = {"Server", "Proxy networks", NULL};
static const char *const columns[] = {"defaultHostname", "proxyTrustedNetworks", NULL};

struct gh_objtype gh_type_settings = {
    .type = "x:SystemSettings",
    .name = "SystemSettings",
    .cli_name = "system-settings",
    .label = "System settings",
    .perm_prefix = "sysSystemSettings",
    .nav = "System settings",
    .singleton = true,
    .id_prefix = 's',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.committed = committed},
};

/* The machine's host name when it is a valid one, else "localhost". */
static json_t *system_hostname(void)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        return json_string("localhost");
    json_t *v = json_string(host);
    if (!v || !check_hostname(&v, NULL)) {
        json_decref(v);
        return json_string("localhost");
    }
    return v;
}

bool gh_settings_ensure(gh_err *err)
{
    if (gh_obj_find(&gh_type_settings, "singleton", NULL))
        return true;
    json_t *obj = json_pack("{ss so s[]}", "id", "singleton", "defaultHostname", system_hostname(),
                            "proxyTrustedNetworks");
    char *text = json_dumps(obj, JSON_COMPACT);
    uint64_t seq = 0;
    bool ok =
        text && gh_store_begin(gh_model.store, err) &&
        gh_store_put(gh_model.store, gh_type_settings.type, "singleton", text, err) &&
        gh_store_log_change(gh_model.store, gh_type_settings.type, "singleton", 'c', &seq, err) &&
        gh_store_commit(gh_model.store, err);
    if (!ok) {
        gh_store_rollback(gh_model.store);
    } else {
        json_array_append(gh_type_settings.objs, obj);
        gh_sync_note(seq);
    }
    free(text);
    json_decref(obj);
    return ok;
}
