/*
 * http: libcurl behind gh_cli_http_json. Every answer is read into memory (bounded), then
 * classified: transport failure, authentication failure, refusal (problem+json) or JSON.
 */
#include "cli/http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/util.h"

#define MAX_ANSWER (64u << 20) /* the largest answer read; a schema or page is far smaller */

struct answer {
    char *data; /* owned; NUL-terminated */
    size_t len;
    bool too_big;
};

static size_t collect(char *ptr, size_t size, size_t n, void *userdata)
{
    struct answer *a = userdata;
    size_t add = size * n;
    if (a->len + add > MAX_ANSWER) {
        a->too_big = true;
        return 0;
    }
    char *grown = realloc(a->data, a->len + add + 1);
    if (!grown)
        return 0;
    memcpy(grown + a->len, ptr, add);
    a->data = grown;
    a->len += add;
    a->data[a->len] = '\0';
    return add;
}

int gh_cli_http_open(struct gh_cli_http *h, gh_cli_err *err)
{
    const char *u = h->base_url;
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return gh_cli_fail(err, GH_CLI_USAGE, "--url %s: must start with http:// or https://", u);
    CURL *c = curl_easy_init();
    if (!c)
        return gh_cli_fail(err, GH_CLI_CONNECT, "cannot start libcurl");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, GH_CLI_NAME "/" GH_CLI_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    if (h->insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (h->token && !h->user) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, h->token);
    }
    if (h->user) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, h->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, h->password ? h->password : "");
    }
    h->curl = c;
    return GH_CLI_OK;
}

void gh_cli_http_close(struct gh_cli_http *h)
{
    if (h->curl)
        curl_easy_cleanup(h->curl);
    h->curl = NULL;
}

/* Says why no HTTP answer came, in the words an operator searches for. */
static int transport_failure(struct gh_cli_http *h, CURLcode rc, const char *detail,
                             gh_cli_err *err)
{
    long os_errno = 0;
    curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &os_errno);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        if (os_errno)
            return gh_cli_fail(err, GH_CLI_CONNECT, "cannot connect to %s: %s", h->base_url,
                               strerror((int)os_errno));
        return gh_cli_fail(err, GH_CLI_CONNECT, "cannot connect to %s: %s", h->base_url, detail);
    case CURLE_COULDNT_RESOLVE_HOST:
        return gh_cli_fail(err, GH_CLI_CONNECT, "cannot connect to %s: unknown host", h->base_url);
    case CURLE_OPERATION_TIMEDOUT:
        return gh_cli_fail(err, GH_CLI_CONNECT, "cannot connect to %s: timed out", h->base_url);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        return gh_cli_fail(err, GH_CLI_CONNECT,
                           "cannot verify the certificate of %s: %s (use -k to accept a "
                           "self-signed certificate)",
                           h->base_url, detail);
    case CURLE_SSL_CONNECT_ERROR:
        return gh_cli_fail(err, GH_CLI_CONNECT, "TLS handshake with %s failed: %s", h->base_url,
                           detail);
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_GOT_NOTHING:
        return gh_cli_fail(err, GH_CLI_CONNECT,
                           "%s did not answer as an HTTP server (%s); is it a Gatehouse HTTP "
                           "listener?",
                           h->base_url, detail);
    case CURLE_WRITE_ERROR:
        return gh_cli_fail(err, GH_CLI_CONNECT, "answer from %s too large or out of memory",
                           h->base_url);
    default:
        return gh_cli_fail(err, GH_CLI_CONNECT, "request to %s failed: %s", h->base_url, detail);
    }
}

/* The type and detail of an RFC 7807 problem; empty for any other body (an HTML page says
 * nothing an operator of this tool can act on). */
static void problem_text(const struct answer *a, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!a->data)
        return;
    json_t *p = json_loadb(a->data, a->len, 0, NULL);
    if (json_is_object(p)) {
        const char *type = json_string_value(json_object_get(p, "type"));
        const char *detail = json_string_value(json_object_get(p, "detail"));
        if (!detail)
            detail = json_string_value(json_object_get(p, "title"));
        snprintf(out, outlen, "%s%s%s", type ? type : "", type && detail ? ": " : "",
                 detail ? detail : "");
    }
    json_decref(p);
}

static int classify_status(struct gh_cli_http *h, long status, const struct answer *a,
                           const char *url, gh_cli_err *err)
{
    char why[512];
    problem_text(a, why, sizeof why);
    if (status == 401) {
        const char *hint = h->token || h->user ? "the server refused the credentials"
                                               : "no credentials given: use --token, "
                                                 "GATEHOUSE_TOKEN or --user/--password";
        return gh_cli_fail(err, GH_CLI_CONNECT, "authentication failed (401): %s", hint);
    }
    if (status == 403)
        return gh_cli_fail(err, GH_CLI_CONNECT, "access denied (403)%s%s", why[0] ? ": " : "", why);
    return gh_cli_fail(err, GH_CLI_REFUSED, "the server refused the request to %s (%ld)%s%s", url,
                       status, why[0] ? ": " : "", why);
}

int gh_cli_http_json(struct gh_cli_http *h, const char *url, const char *body, json_t **out,
                     gh_cli_err *err)
{
    CURL *c = h->curl;
    struct answer a = {0};
    char detail[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdr = NULL;

    *out = NULL;
    hdr = curl_slist_append(hdr, "Accept: application/json");
    if (body) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, detail);

    CURLcode rc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdr);

    int status = GH_CLI_OK;
    if (rc != CURLE_OK) {
        status = transport_failure(h, rc, detail[0] ? detail : curl_easy_strerror(rc), err);
    } else {
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        if (code < 200 || code > 299) {
            status = classify_status(h, code, &a, url, err);
        } else {
            json_error_t jerr;
            *out = a.data ? json_loadb(a.data, a.len, 0, &jerr) : NULL;
            if (!*out) {
                status =
                    gh_cli_fail(err, GH_CLI_REFUSED, "the answer from %s is not JSON (%ld): %s",
                                url, code, a.data ? jerr.text : "empty body");
            }
        }
    }
    free(a.data);
    return status;
}
