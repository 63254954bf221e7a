/*
 * http_api: the management application the HTTP server (proto/http.h) serves: the JMAP API,
 * the session, EventSource push, cookie sign-in for the web page and the page itself.
 */
#ifndef GH_HTTP_API_H
#define GH_HTTP_API_H
#include <jansson.h>

#include "jmap/auth.h"
#include "proto/http.h"

#define GH_API_COOKIE "gh_session"

/* What the application asks of the layers above it (the object layer in the daemon). */
struct gh_api_hooks {
    gh_auth_fn authenticate; /* checks a secret (gh_objects_authenticate) */
    json_t *(*schema)(void); /* GET /api/schema: a new reference */
    json_t *(*status)(void); /* GET /api/status: a new reference */
};

/* Installs the hooks and the EventSource push transport; once, before the first connection,
 * and before gh_http_set_handler(&gh_api_http). */
void gh_api_init(const struct gh_api_hooks *hooks);

/* The application to register with gh_http_set_handler. */
extern const struct gh_http_app gh_api_http;

#endif
