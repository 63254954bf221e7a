/*
 * jmap: the JMAP core (RFC 8620) — request parsing and limits, result and creation-id
 * references, method dispatch, the session object, push. Object types register methods here.
 */
#ifndef GH_JMAP_H
#define GH_JMAP_H
#include <jansson.h>
#include <stdbool.h>

#define GH_JMAP_CAP_CORE                "urn:ietf:params:jmap:core"
#define GH_JMAP_CAP_STALWART            "urn:stalwart:jmap"
#define GH_JMAP_ACCOUNT_ID              "a"
#define GH_JMAP_MAX_OBJECTS_IN_GET      500
#define GH_JMAP_MAX_OBJECTS_IN_SET      500
#define GH_JMAP_MAX_CALLS_IN_REQUEST    16
#define GH_JMAP_MAX_SIZE_REQUEST        10000000
#define GH_JMAP_MAX_CONCURRENT_REQUESTS 4
#define GH_JMAP_MAX_SIZE_UPLOAD         50000000
#define GH_JMAP_MAX_CONCURRENT_UPLOAD   4

/* Request-level problem types (RFC 8620 §3.6.1). */
#define GH_JMAP_PROBLEM_NOT_JSON           "urn:ietf:params:jmap:error:notJSON"
#define GH_JMAP_PROBLEM_NOT_REQUEST        "urn:ietf:params:jmap:error:notRequest"
#define GH_JMAP_PROBLEM_UNKNOWN_CAPABILITY "urn:ietf:params:jmap:error:unknownCapability"
#define GH_JMAP_PROBLEM_LIMIT              "urn:ietf:params:jmap:error:limit"

/* Who is calling: the administrator (every permission) or an API key. */
struct gh_principal {
    char username[65];
    bool admin;
    json_t *permissions; /* array of permission names; owned; NULL for admin */
    char client[64];     /* the address the request comes from; "" when not known */
};

bool gh_principal_can(const struct gh_principal *who, const char *permission);
void gh_principal_clear(struct gh_principal *who);
/* Deep copy (permissions included) into an empty dst. */
void gh_principal_copy(struct gh_principal *dst, const struct gh_principal *src);

struct gh_jmap_request;

struct gh_jmap_call {
    const char *method; /* "x:NetworkListener/get" */
    json_t *args;       /* references already resolved; accountId checked; owned by the core */
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

/*
 * Management is serialized by one process-wide mutex: gh_jmap_handle holds it for a whole
 * request, so methods need no locks of their own and ifInState checks are atomic. Anything
 * else that reads or changes management objects from another thread (authentication, store
 * notifications) takes it too. Not recursive.
 */
void gh_jmap_lock(void);
void gh_jmap_unlock(void);
/* From now on every request is answered 503: a binary upgrade handed the store over. */
void gh_jmap_retire(void);

/* An RFC 7807 problem body: {"type","status","title","detail"[,"limit"]} (caller frees).
 * limit may be NULL. */
char *gh_jmap_problem(int status, const char *type, const char *limit, const char *detail);

/* Evaluates a result-reference path: an RFC 6901 JSON Pointer extended with "*" (RFC 8620
 * §3.7). "" is the whole value. Returns a new reference, or NULL when the path does not
 * resolve. */
json_t *gh_jmap_pointer(json_t *value, const char *path);

/* True for an RFC 8620 §1.2 Id: 1-255 octets of A-Za-z0-9, "-" and "_". */
bool gh_jmap_valid_id(const char *s);

/* The Session object (RFC 8620 §2) for who; base_url is "http://host:port" (no slash at the
 * end) and prefixes every URL. A new reference. */
json_t *gh_jmap_session(const struct gh_principal *who, const char *base_url);
/* The session state of who (equal to the Session's "state" and every sessionState). */
void gh_jmap_session_state(const struct gh_principal *who, char out[24]);
/* The account is read-only for who: it holds no Create, Update or Destroy permission. */
bool gh_jmap_read_only(const struct gh_principal *who);

/* The latest state of every type reported through gh_jmap_state_changed: {type: state}.
 * A new reference. Any thread. Object layers report every type's state once at start. */
json_t *gh_jmap_states(void);
/* The push transport (the EventSource streams of jmap/eventsource.c) is told of every change: fn
 * receives a snapshot as gh_jmap_states() would return it and takes ownership of the reference. */
typedef void (*gh_jmap_push_fn)(json_t *states);
void gh_jmap_set_push(gh_jmap_push_fn fn);

#endif
