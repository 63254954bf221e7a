/*
 * api: the JMAP side of the client. Reads the session (apiUrl, account, limits) and the
 * schema the daemon serves at /api/schema, then sends method calls with the `using` list
 * every Gatehouse method needs, turning method errors into messages.
 */
#ifndef GH_CLI_API_H
#define GH_CLI_API_H
#include <jansson.h>

#include "cli/http.h"
#include "cli/cli.h"

#define GH_CLI_CAP_CORE     "urn:ietf:params:jmap:core"
#define GH_CLI_CAP_STALWART "urn:stalwart:jmap"

struct gh_cli_api {
    struct gh_cli_http http; /* owned (the curl handle in it) */
    char *api_url;           /* absolute, on the --url origin; owned */
    char *account_id;        /* the primary account for urn:stalwart:jmap, or NULL; owned */
    size_t max_get;          /* maxObjectsInGet from the session */
    size_t max_set;          /* maxObjectsInSet from the session */
    json_t *schema;          /* the /api/schema document ({"types": {...}}); owned */
};

/* Opens the transport, reads the session and the schema. Exit code, 0 on success. */
int gh_cli_api_open(struct gh_cli_api *api, gh_cli_err *err);
void gh_cli_api_close(struct gh_cli_api *api);

/*
 * Calls one method; on success *result holds its response arguments (a new reference).
 * args is consumed; the account id is added. A method error gives GH_CLI_REFUSED with
 * "type: description" in err.
 */
int gh_cli_api_call(struct gh_cli_api *api, const char *method, json_t *args, json_t **result,
                    gh_cli_err *err);

#endif
