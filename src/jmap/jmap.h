/*
 * jmap: the JMAP core (RFC 8620) — request parsing and limits, result and creation-id
 * references, method dispatch, the session object, push. Object types register methods here.
 */
#ifndef GH_JMAP_H
#define GH_JMAP_H
#include <jansson.h>
#include <stdbool.h>

#define GH_JMAP_CAP_CORE "urn:ietf:params:jmap:core"
#define GH_JMAP_CAP_STALWART "urn:stalwart:jmap"
#define GH_JMAP_ACCOUNT_ID "a"
#define GH_JMAP_MAX_OBJECTS_IN_GET 500
#define GH_JMAP_MAX_OBJECTS_IN_SET 500
#define GH_JMAP_MAX_CALLS_IN_REQUEST 16
#define GH_JMAP_MAX_SIZE_REQUEST 10000000

/* Who is calling: the administrator (every permission) or an API key. */
struct gh_principal {
    char username[65];
    bool admin;
    json_t *permissions; /* array of permission names; owned; NULL for admin */
};

bool gh_principal_can(const struct gh_principal *who, const char *permission);
void gh_principal_clear(struct gh_principal *who);

struct gh_jmap_request;

struct gh_jmap_call {
    const char *method;  /* "x:NetworkListener/get" */
    json_t *args;        /* references already resolved; accountId checked; owned by the core */
    const char *call_id;
    const struct gh_principal *who;
    struct gh_jmap_request *req;
};

/*
 * A method returns its response arguments (a new reference), or NULL with *error set to
 * a method error object made by gh_jmap_error (a new reference).
 */
typedef json_t *(*gh_jmap_method_fn)(struct gh_jmap_call *call, json_t **error);

/* Registers a method under the capability that must be in `using` to call it. */
void gh_jmap_register(const char *method, const char *capability, gh_jmap_method_fn fn);

/* {"type": type, "description": ...}; description may be NULL. */
json_t *gh_jmap_error(const char *type, const char *description_fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Creation ids of the request (seeded from the request's createdIds). */
const char *gh_jmap_created_id(struct gh_jmap_request *req, const char *creation_id);
void gh_jmap_set_created_id(struct gh_jmap_request *req, const char *creation_id, const char *id);

/* Resolves "#cid" through the creation ids; any other string is returned as is.
 * NULL when it is a "#cid" that is unknown. */
const char *gh_jmap_resolve_id(struct gh_jmap_request *req, const char *id);

/* Reports that a type's state changed, so push streams (EventSource) tell their clients.
 * Any thread. */
void gh_jmap_state_changed(const char *type, const char *new_state);

/* Handles one API request body; returns the HTTP status and the response body (owned by
 * the caller), a Response object or an RFC 7807 problem (*problem set to true). */
int gh_jmap_handle(const char *body, size_t len, const struct gh_principal *who, char **response,
                   bool *problem);

#endif
