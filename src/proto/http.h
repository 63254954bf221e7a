/*
 * http: the HTTP/1.1 front door of `http` listeners (gh_proto_http in proto.h): the JMAP
 * API, the session, EventSource push, cookie sign-in for the web page and the page itself.
 */
#ifndef GH_HTTP_H
#define GH_HTTP_H
#include <stdbool.h>

#include "jmap/jmap.h"

#define GH_HTTP_HEADER_LIMIT (64 * 1024) /* request line and header block */
#define GH_HTTP_IDLE_MS      60000       /* a whole request must arrive within this */
#define GH_HTTP_COOKIE       "gh_session"

/* Checks credentials; gh_objects_authenticate unless replaced (unit tests replace it). */
typedef bool (*gh_http_auth_fn)(const char *username, const char *secret, struct gh_principal *who);
void gh_http_set_authenticator(gh_http_auth_fn fn);

/* Milliseconds the next credential check from this client address is held back: 0 for the
 * first few failures within a minute, then growing to a few seconds. */
unsigned gh_http_auth_penalty_ms(const char *client);

#endif
