/*
 * auth: who is calling the management API. Checks credentials (Bearer, Basic, the web page's
 * session secret) through the check the daemon installs, slows clients that keep failing, and
 * keeps the web page's cookie sessions. Used by the HTTP application (jmap/http_api.c).
 */
#ifndef GH_AUTH_H
#define GH_AUTH_H
#include <stdbool.h>
#include <stddef.h>

#include "jmap/jmap.h"

#define GH_AUTH_TOKEN_LEN 43 /* a cookie session token: 32 random bytes, base64url */

/* Checks a secret, with the API key or user name it belongs to (NULL: any, by secret alone). */
typedef bool (*gh_auth_fn)(const char *username, const char *secret, struct gh_principal *who);

/* Installs the check (gh_objects_authenticate in the daemon); NULL refuses everything. */
void gh_auth_set_check(gh_auth_fn fn);
bool gh_auth_check(const char *username, const char *secret, struct gh_principal *who);

/* Checks an Authorization header value: "Bearer <secret>" or "Basic <base64 name:secret>". */
bool gh_auth_header(const char *authorization, struct gh_principal *who);

/*
 * The turn of a credential check from client (and, for HTTP Basic, the login name user;
 * NULL for none). Clients with no recent failures check at once; after 3 failures from an
 * address or against a name, checks take turns 0.5 s, 1 s, 2 s and then 4 s apart however
 * many connections ask (*ms: the wait), and a check whose turn is over 10 s away is refused
 * (*ms: how long until one could be had). A given turn is used up: call once per check.
 */
enum gh_auth_turn { GH_AUTH_NOW, GH_AUTH_WAIT, GH_AUTH_REFUSE };
enum gh_auth_turn gh_auth_turn(const char *client, const char *user, unsigned *ms);
/* Records a failed credential check from client (with the login name tried, or NULL): the
 * one place every refused secret is counted. */
void gh_auth_failed(const char *client, const char *user);
/* The user name of "Basic ..." credentials, copied into out; false for other schemes. */
bool gh_auth_header_user(const char *authorization, char *out, size_t cap);
/* Whether value is "Basic <base64 user:secret>" that check accepts (a pair that is not an
 * API key, such as the metrics scrape's). */
bool gh_auth_basic(const char *value, bool (*check)(const char *user, const char *secret));

/* Cookie sessions of the web page: a new token for secret (false when none could be made),
 * a copy of the secret a token signed in with (caller frees; NULL when unknown), and the end
 * of a session. The secret is checked again on every request, so a removed API key stops
 * working at once. In memory only. */
bool gh_auth_session_new(const char *secret, char token[GH_AUTH_TOKEN_LEN + 1]);
char *gh_auth_session_secret(const char *token);
void gh_auth_session_end(const char *token);

#endif
