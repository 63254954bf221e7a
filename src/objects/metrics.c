/*
 * metrics: the x:Metrics singleton (id "singleton"): whether GET /metrics/prometheus
 * answers, and the HTTP Basic pair a Prometheus server may scrape it with (besides any
 * credential holding sysMetricsGet). The secret is write-only: /get never returns it.
 */
#include <stdlib.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"
#include "objects/model.h"
#include "store/store.h"

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = "Prometheus",
     .description = "Always \"singleton\""},
    {.name = "prometheusEnabled",
     .type = GH_PT_BOOLEAN,
     .def = "true",
     .label = "Prometheus endpoint",
     .group = "Prometheus",
     .description = "Whether GET /metrics/prometheus answers on the management listeners; "
                    "when off it answers 404"},
    {.name = "prometheusAuthUsername",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 128,
     .label = "Scrape user name",
     .group = "Prometheus",
     .description = "User name of the HTTP Basic pair a Prometheus server scrapes with "
                    "(basic_auth in its scrape configuration)",
     .rule = "up to 128 characters, no colon; the pair works only with a secret set"},
    {.name = "prometheusAuthSecret",
     .type = GH_PT_STRING,
     .nullable = true,
     .mut = GH_WRITE_ONLY,
     .max_len = 128,
     .label = "Scrape secret",
     .group = "Prometheus",
     .description = "Secret of that HTTP Basic pair; write-only, never returned",
     .rule = "up to 128 characters"},
};

static const char *str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

void gh_metrics_settings_apply(void)
{
    json_t *m = gh_obj_find(&gh_type_metrics, "singleton", NULL);
    if (!m)
        return;
    json_t *enabled = json_object_get(m, "prometheusEnabled");
    gh_metrics_set_access(!json_is_false(enabled), str(m, "prometheusAuthUsername"),
                          str(m, "prometheusAuthSecret"));
}

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    const char *user = str(obj, "prometheusAuthUsername");
    if (user && strchr(user, ':'))
        gh_verr_add(ve, "prometheusAuthUsername", "an HTTP Basic user name cannot contain ':'");
}

static void committed(struct gh_objtype *t)
{
    gh_metrics_settings_apply();
}

static const char *const groups[] = {"Prometheus", NULL};
static const char *const columns[] = {"prometheusEnabled", "prometheusAuthUsername", NULL};

struct gh_objtype gh_type_metrics = {
    .type = "x:Metrics",
    .name = "Metrics",
    .cli_name = "metrics",
    .label = "Metrics",
    .perm_prefix = "sysMetrics",
    .nav = "Settings › Telemetry › Metrics",
    .singleton = true,
    .id_prefix = 'm',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.validate = validate, .committed = committed},
};

bool gh_metrics_settings_ensure(gh_err *err)
{
    if (gh_obj_find(&gh_type_metrics, "singleton", NULL))
        return true;
    json_t *obj = json_pack("{ss sb sn sn}", "id", "singleton", "prometheusEnabled", 1,
                            "prometheusAuthUsername", "prometheusAuthSecret");
    char *text = json_dumps(obj, JSON_COMPACT);
    uint64_t seq = 0;
    bool ok =
        text && gh_store_begin(gh_model.store, err) &&
        gh_store_put(gh_model.store, gh_type_metrics.type, "singleton", text, err) &&
        gh_store_log_change(gh_model.store, gh_type_metrics.type, "singleton", 'c', &seq, err) &&
        gh_store_commit(gh_model.store, err);
    if (!ok) {
        gh_store_rollback(gh_model.store);
    } else {
        json_array_append(gh_type_metrics.objs, obj);
        gh_sync_note(seq);
    }
    free(text);
    json_decref(obj);
    return ok;
}
