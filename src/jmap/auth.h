/*
 * auth: who is calling the management API. Checks credentials (Bearer, Basic, the web page's
 * session secret) through the check the daemon installs, slows clients that keep failing, and
 * keeps the web page's cookie sessions. Used by the HTTP application (jmap/http_api.c).
 */
#ifndef GH_AUTH_H
#define GH_AUTH_H
#include <stdbool.h>

#include "jmap/jmap.h"

#define GH_AUTH_TOKEN_LEN 43 /* a cookie session token: 32 random bytes, base64url */

/* Checks a secret, with the API key or user name it belongs to (NULL: any, by secret alone). */
typedef bool (*gh_auth_fn)(const char *username, const char *secret, struct gh_principal *who);

/* Installs the check (gh_objects_authenticate in the daemon); NULL refuses everything. */
void gh_auth_set_check(gh_auth_fn fn);
bool gh_auth_check(const char *username, const char *secret, struct gh_principal *who);

/* Checks an Authorization header value: "Bearer <secret>" or "Basic <base64 name:secret>". */
bool gh_auth_header(const char *authorization, struct gh_principal *who);

/* Whether value is "Basic <base64 user:secret>" that check accepts (a pair that is not an
 * API key, such as the metrics scrape's). */
bool gh_auth_basic(const char *value, bool (*check)(const char *user, const char *secret));

/* Milliseconds the next credential check from this client address is held back: 0 for the
 * first few failures within a minute, then growing to a few seconds. */
unsigned gh_auth_penalty_ms(const char *client);
/* Counts a failed credential check from client. */
void gh_auth_failed(const char *client);

/* Cookie sessions of the web page: a new token for secret (false when none could be made),
 * a copy of the secret a token signed in with (caller frees; NULL when unknown), and the end
 * of a session. The secret is checked again on every request, so a removed API key stops
 * working at once. In memory only. */
bool gh_auth_session_new(const char *secret, char token[GH_AUTH_TOKEN_LEN + 1]);
char *gh_auth_session_secret(const char *token);
void gh_auth_session_end(const char *token);

#endif
