/*
 * auth: credential checks for the management API, the slow-down of clients that keep failing
 * (per address, counted here, served by the HTTP server as a held request) and the web
 * page's cookie sessions. Touched only when credentials are checked, never on the read path.
 */
#include "jmap/auth.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "net/addr.h"

#define FAIL_FREE          3     /* failures per window before checks are slowed */
#define FAIL_WINDOW_MS     60000 /* failures older than this are forgotten */
#define FAIL_BASE_DELAY_MS 500
#define FAIL_MAX_DELAY_MS  4000
#define FAIL_SLOTS         512
#define SESSION_SLOTS      1024

static gh_auth_fn check; /* set once, before the first connection */

void gh_auth_set_check(gh_auth_fn fn)
{
    check = fn;
}

bool gh_auth_check(const char *username, const char *secret, struct gh_principal *who)
{
    return check && check(username, secret, who);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Failed checks per client address. Touched only when credentials fail or are checked
 * from an address with failures, never on the accept or read path. */
struct failure {
    char client[GH_ADDR_TEXT];
    uint64_t first_ms;
    unsigned count;
};
static struct failure failures[FAIL_SLOTS];
static pthread_mutex_t failures_lock = PTHREAD_MUTEX_INITIALIZER;

static struct failure *failure_find(const char *client, uint64_t now)
{
    for (size_t i = 0; i < FAIL_SLOTS; i++) {
        struct failure *f = &failures[i];
        if (f->count && !strcmp(f->client, client)) {
            if (now - f->first_ms > FAIL_WINDOW_MS)
                f->count = 0;
            return f->count ? f : NULL;
        }
    }
    return NULL;
}

unsigned gh_auth_penalty_ms(const char *client)
{
    pthread_mutex_lock(&failures_lock);
    struct failure *f = failure_find(client, now_ms());
    unsigned over = f && f->count >= FAIL_FREE ? f->count - FAIL_FREE : 0;
    bool slowed = f && f->count >= FAIL_FREE;
    pthread_mutex_unlock(&failures_lock);
    if (!slowed)
        return 0;
    unsigned ms = FAIL_BASE_DELAY_MS << (over > 4 ? 4 : over);
    return ms > FAIL_MAX_DELAY_MS ? FAIL_MAX_DELAY_MS : ms;
}

void gh_auth_failed(const char *client)
{
    uint64_t now = now_ms();
    pthread_mutex_lock(&failures_lock);
    struct failure *f = failure_find(client, now);
    if (!f) {
        /* A free or expired slot, else the one whose window started first. */
        f = &failures[0];
        for (size_t i = 0; i < FAIL_SLOTS; i++) {
            struct failure *g = &failures[i];
            if (!g->count || now - g->first_ms > FAIL_WINDOW_MS) {
                f = g;
                break;
            }
            if (g->first_ms < f->first_ms)
                f = g;
        }
        snprintf(f->client, sizeof f->client, "%s", client);
        f->first_ms = now;
        f->count = 0;
    }
    f->count++;
    pthread_mutex_unlock(&failures_lock);
}

/* Cookie sessions: token -> the secret it signed in with. */
struct session {
    char token[GH_AUTH_TOKEN_LEN + 1];
    char *secret; /* owned */
    uint64_t used_ms;
};
static struct session sessions[SESSION_SLOTS];
static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;

bool gh_auth_session_new(const char *secret, char token[GH_AUTH_TOKEN_LEN + 1])
{
    unsigned char raw[32], b64[48];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return false;
    EVP_EncodeBlock(b64, raw, sizeof raw);
    for (int i = 0; i < GH_AUTH_TOKEN_LEN; i++)
        token[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    token[GH_AUTH_TOKEN_LEN] = '\0';
    char *copy = strdup(secret);
    if (!copy)
        return false;
    pthread_mutex_lock(&sessions_lock);
    struct session *s = &sessions[0];
    for (size_t i = 0; i < SESSION_SLOTS; i++) {
        if (!sessions[i].secret) {
            s = &sessions[i];
            break;
        }
        if (sessions[i].used_ms < s->used_ms)
            s = &sessions[i];
    }
    free(s->secret);
    memcpy(s->token, token, sizeof s->token);
    s->secret = copy;
    s->used_ms = now_ms();
    pthread_mutex_unlock(&sessions_lock);
    return true;
}

char *gh_auth_session_secret(const char *token)
{
    char *secret = NULL;
    pthread_mutex_lock(&sessions_lock);
    for (size_t i = 0; i < SESSION_SLOTS; i++) {
        struct session *s = &sessions[i];
        if (s->secret && !strcmp(s->token, token)) {
            s->used_ms = now_ms();
            secret = strdup(s->secret);
            break;
        }
    }
    pthread_mutex_unlock(&sessions_lock);
    return secret;
}

void gh_auth_session_end(const char *token)
{
    pthread_mutex_lock(&sessions_lock);
    for (size_t i = 0; i < SESSION_SLOTS; i++) {
        struct session *s = &sessions[i];
        if (s->secret && !strcmp(s->token, token)) {
            free(s->secret);
            memset(s, 0, sizeof *s);
        }
    }
    pthread_mutex_unlock(&sessions_lock);
}

static bool base64_decode(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in);
    if (n % 4 || n / 4 * 3 >= cap)
        return false;
    int len = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
    if (len < 0)
        return false;
    if (n >= 1 && in[n - 1] == '=')
        len--;
    if (n >= 2 && in[n - 2] == '=')
        len--;
    out[len] = '\0';
    return strlen(out) == (size_t)len;
}

bool gh_auth_basic(const char *value, bool (*accepts)(const char *user, const char *secret))
{
    while (*value == ' ')
        value++;
    if (strncasecmp(value, "Basic ", 6))
        return false;
    const char *b64 = value + 6;
    while (*b64 == ' ')
        b64++;
    size_t cap = strlen(b64) + 4;
    char *plain = calloc(1, cap);
    bool ok = false;
    if (plain && base64_decode(b64, plain, cap)) {
        char *colon = strchr(plain, ':');
        if (colon) {
            *colon = '\0';
            ok = colon[1] && accepts(plain, colon + 1);
        }
    }
    if (plain)
        memset(plain, 0, cap); /* the secret does not outlive the check */
    free(plain);
    return ok;
}

bool gh_auth_header(const char *value, struct gh_principal *who)
{
    while (*value == ' ')
        value++;
    if (!strncasecmp(value, "Bearer ", 7)) {
        const char *tok = value + 7;
        while (*tok == ' ')
            tok++;
        return *tok && gh_auth_check(NULL, tok, who);
    }
    if (!strncasecmp(value, "Basic ", 6)) {
        const char *b64 = value + 6;
        while (*b64 == ' ')
            b64++;
        size_t cap = strlen(b64) + 4;
        char *plain = calloc(1, cap);
        bool ok = false;
        if (plain && base64_decode(b64, plain, cap)) {
            char *colon = strchr(plain, ':');
            if (colon) {
                *colon = '\0';
                ok = colon[1] && gh_auth_check(plain, colon + 1, who);
            }
        }
        if (plain)
            memset(plain, 0, cap); /* the secret does not outlive the check */
        free(plain);
        return ok;
    }
    return false;
}
