/*
 * http: the client's only transport — one libcurl handle reused for every request to the
 * daemon (keep-alive), with the credentials attached and transport failures turned into
 * messages that say what went wrong (refused, unknown host, certificate, 401).
 */
#ifndef GH_CLI_HTTP_H
#define GH_CLI_HTTP_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "cli/cli.h"

struct gh_cli_http {
    void *curl;           /* CURL *, owned; made by gh_cli_http_open */
    const char *base_url; /* "http://127.0.0.1:8080", no trailing slash; owned by the caller */
    const char *token;    /* Bearer token, or NULL; borrowed */
    const char *user;     /* HTTP Basic user, or NULL; borrowed */
    const char *password; /* HTTP Basic password; borrowed */
    bool insecure;        /* -k: accept any certificate */
};

/* Checks base_url (http:// or https://) and makes the curl handle. Exit code, 0 on success. */
int gh_cli_http_open(struct gh_cli_http *h, gh_cli_err *err);
void gh_cli_http_close(struct gh_cli_http *h);

/*
 * Sends GET (body NULL) or POST (JSON body) to url and parses a JSON answer into *out
 * (a new reference). 401/403 give GH_CLI_CONNECT ("authentication failed (401)"); another
 * error status gives GH_CLI_REFUSED with the problem's detail; transport failures give
 * GH_CLI_CONNECT naming the base URL.
 */
int gh_cli_http_json(struct gh_cli_http *h, const char *url, const char *body, json_t **out,
                     gh_cli_err *err);

#endif
