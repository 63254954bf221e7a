/*
 * api: session discovery and method calls for gatehouse-cli. The API path comes from the
 * session's apiUrl, but requests always go to the origin given with --url, so credentials
 * are never sent to a host the operator did not name.
 */
#include "cli/api.h"

#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/util.h"

/* The path (and query) part of an absolute or relative URL. */
static const char *url_path(const char *url)
{
    const char *scheme = strstr(url, "://");
    if (!scheme)
        return url;
    const char *path = strchr(scheme + 3, '/');
    return path ? path : "/";
}

static char *join_url(const char *base, const char *path)
{
    size_t n = strlen(base) + strlen(path) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s%s", base, path[0] == '/' ? "" : "/", path);
    return out;
}

static size_t limit_of(json_t *core, const char *key, size_t fallback)
{
    json_int_t v = json_integer_value(json_object_get(core, key));
    return v > 0 ? (size_t)v : fallback;
}

static int read_session(struct gh_cli_api *api, gh_cli_err *err)
{
    char *url = join_url(api->http.base_url, "/jmap/session");
    json_t *session = NULL;
    int status = url ? gh_cli_http_json(&api->http, url, NULL, &session, err)
                     : gh_cli_fail(err, GH_CLI_CONNECT, "out of memory");
    free(url);
    if (status == GH_CLI_REFUSED) { /* the wrong URL: as good as no connection */
        gh_cli_err_context(err, "no JMAP session at %s (is it a Gatehouse HTTP listener?)",
                           api->http.base_url);
        status = GH_CLI_CONNECT;
    }
    if (status != GH_CLI_OK)
        return status;

    const char *api_url = json_string_value(json_object_get(session, "apiUrl"));
    if (!api_url) {
        json_decref(session);
        return gh_cli_fail(err, GH_CLI_REFUSED, "the session at %s/jmap/session has no apiUrl",
                           api->http.base_url);
    }
    api->api_url = join_url(api->http.base_url, url_path(api_url));
    json_t *primary = json_object_get(session, "primaryAccounts");
    const char *account = json_string_value(json_object_get(primary, GH_CLI_CAP_STALWART));
    if (!account)
        account = json_string_value(json_object_get(primary, GH_CLI_CAP_CORE));
    if (account)
        api->account_id = strdup(account);
    json_t *core = json_object_get(json_object_get(session, "capabilities"), GH_CLI_CAP_CORE);
    api->max_get = limit_of(core, "maxObjectsInGet", 100);
    api->max_set = limit_of(core, "maxObjectsInSet", 100);
    json_decref(session);
    return api->api_url ? GH_CLI_OK : gh_cli_fail(err, GH_CLI_CONNECT, "out of memory");
}

static int read_schema(struct gh_cli_api *api, gh_cli_err *err)
{
    char *url = join_url(api->http.base_url, "/api/schema");
    int status = url ? gh_cli_http_json(&api->http, url, NULL, &api->schema, err)
                     : gh_cli_fail(err, GH_CLI_CONNECT, "out of memory");
    free(url);
    if (status == GH_CLI_OK && !json_is_object(json_object_get(api->schema, "types")))
        status = gh_cli_fail(err, GH_CLI_REFUSED, "the schema at %s/api/schema has no types",
                             api->http.base_url);
    return status;
}

int gh_cli_api_open(struct gh_cli_api *api, gh_cli_err *err)
{
    int status = gh_cli_http_open(&api->http, err);
    if (status == GH_CLI_OK)
        status = read_session(api, err);
    if (status == GH_CLI_OK)
        status = read_schema(api, err);
    return status;
}

void gh_cli_api_close(struct gh_cli_api *api)
{
    gh_cli_http_close(&api->http);
    free(api->api_url);
    free(api->account_id);
    json_decref(api->schema);
    api->api_url = api->account_id = NULL;
    api->schema = NULL;
}

/* "type: description" of a method error, with the properties it names. */
static int method_error(json_t *e, const char *method, gh_cli_err *err)
{
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *desc = json_string_value(json_object_get(e, "description"));
    return gh_cli_fail(err, GH_CLI_REFUSED, "%s refused: %s%s%s", method, type ? type : "error",
                       desc ? ": " : "", desc ? desc : "");
}

int gh_cli_api_call(struct gh_cli_api *api, const char *method, json_t *args, json_t **result,
                    gh_cli_err *err)
{
    *result = NULL;
    if (api->account_id)
        json_object_set_new(args, "accountId", json_string(api->account_id));
    json_t *req = json_pack("{s:[s,s], s:[[s,o,s]]}", "using", GH_CLI_CAP_CORE, GH_CLI_CAP_STALWART,
                            "methodCalls", method, args, "c1");
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return gh_cli_fail(err, GH_CLI_USAGE, "cannot encode the request for %s", method);

    json_t *resp = NULL;
    int status = gh_cli_http_json(&api->http, api->api_url, body, &resp, err);
    free(body);
    if (status != GH_CLI_OK)
        return status;

    json_t *first = json_array_get(json_object_get(resp, "methodResponses"), 0);
    const char *name = json_string_value(json_array_get(first, 0));
    json_t *answer = json_array_get(first, 1);
    if (!name || !json_is_object(answer))
        status = gh_cli_fail(err, GH_CLI_REFUSED, "the server gave no answer to %s", method);
    else if (strcmp(name, "error") == 0)
        status = method_error(answer, method, err);
    else
        *result = json_incref(answer);
    json_decref(resp);
    return status;
}
