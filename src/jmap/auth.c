/*
 * auth: credential checks for the management API, the rate limit on clients that keep failing
 * (per address and per login name, counted here; a wait is served by the HTTP server as a
 * held request) and the web
 * page's cookie sessions. Touched only when credentials are checked, never on the read path.
 */
#include "jmap/auth.h"

#include <arpa/inet.h>
#include <ctype.h>
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
#include "security/security.h"

#define FAIL_FREE          3     /* failures before checks take turns */
#define FAIL_WINDOW_MS     60000 /* an entry is forgotten this long after its last use */
#define FAIL_BASE_DELAY_MS 500   /* the first turn: this long after the last free failure */
#define FAIL_MAX_GAP_MS    4000  /* turns are 1 s, 2 s, then this far apart */
#define FAIL_QUEUE_MS      10000 /* a check whose turn is further away is refused (429) */
#define LIMIT_SETS         256   /* the table: LIMIT_SETS x LIMIT_WAYS entries, fixed */
#define LIMIT_WAYS         8
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

/*
 * Failed checks per client address and per login name, in a fixed set-associative table:
 * a key hashes to one set of LIMIT_WAYS entries, and a new key takes the set's least
 * recently used entry, so a flood of addresses costs no memory and evicts the oldest. After
 * FAIL_FREE failures, checks take turns (next_ms), however many connections ask at once.
 * Touched only when credentials are checked, never on the accept or read path.
 */
struct limit {
    char key[GH_ADDR_TEXT + 2]; /* "a" + address, or "u" + lower-case login name */
    uint64_t last_ms;           /* latest failure or turn; unused after FAIL_WINDOW_MS */
    uint64_t next_ms;           /* the earliest the next turn may start */
    unsigned failures;
    unsigned turns; /* turns handed out since the entry was made */
};
static struct limit limits[LIMIT_SETS][LIMIT_WAYS];
static pthread_mutex_t limits_lock = PTHREAD_MUTEX_INITIALIZER;

/* The table key of an address (an IPv6 address counts as its /64, which one client
 * usually holds whole) or of a login name (case-insensitive, as API key names are). */
static void limit_key(char kind, const char *what, char key[GH_ADDR_TEXT + 2])
{
    struct in6_addr a6;
    char text[INET6_ADDRSTRLEN];
    if (kind == 'a' && inet_pton(AF_INET6, what, &a6) == 1 && !IN6_IS_ADDR_V4MAPPED(&a6)) {
        memset(a6.s6_addr + 8, 0, 8);
        if (inet_ntop(AF_INET6, &a6, text, sizeof text))
            what = text;
    }
    size_t n = strlen(what);
    if (n > GH_ADDR_TEXT)
        n = GH_ADDR_TEXT; /* longer names share an entry: only guessers use them */
    key[0] = kind;
    for (size_t i = 0; i < n; i++)
        key[i + 1] = kind == 'u' ? (char)tolower((unsigned char)what[i]) : what[i];
    key[n + 1] = '\0';
}

static struct limit *limit_set(const char *key)
{
    uint64_t x = 0xcbf29ce484222325ULL;
    for (const char *p = key; *p; p++)
        x = (x ^ (unsigned char)*p) * 0x100000001b3ULL;
    return limits[x % LIMIT_SETS];
}

/* The live entry for key, or NULL; with make, a new one in place of the oldest. */
static struct limit *limit_find(const char *key, uint64_t now, bool make)
{
    struct limit *set = limit_set(key), *oldest = &set[0];
    for (size_t i = 0; i < LIMIT_WAYS; i++) {
        struct limit *e = &set[i];
        bool live = e->key[0] && now <= e->last_ms + FAIL_WINDOW_MS;
        if (live && !strcmp(e->key, key))
            return e;
        if (!live)
            e->key[0] = '\0';
        if (!e->key[0] || (oldest->key[0] && e->last_ms < oldest->last_ms))
            oldest = e;
    }
    if (!make)
        return NULL;
    memset(oldest, 0, sizeof *oldest);
    snprintf(oldest->key, sizeof oldest->key, "%s", key);
    oldest->last_ms = now;
    return oldest;
}

static bool takes_turns(const struct limit *e)
{
    return e && (e->failures >= FAIL_FREE || e->turns);
}

static uint64_t turn_gap(unsigned turns)
{
    uint64_t gap = (uint64_t)FAIL_BASE_DELAY_MS << (turns > 3 ? 3 : turns);
    return gap > FAIL_MAX_GAP_MS ? FAIL_MAX_GAP_MS : gap;
}

static void take_turn(struct limit *e, uint64_t slot, uint64_t now)
{
    if (!takes_turns(e))
        return;
    e->turns++;
    e->next_ms = slot + turn_gap(e->turns);
    e->last_ms = now;
}

enum gh_auth_turn gh_auth_turn(const char *client, const char *user, unsigned *ms)
{
    char akey[GH_ADDR_TEXT + 2], ukey[GH_ADDR_TEXT + 2];
    limit_key('a', client, akey);
    if (user)
        limit_key('u', user, ukey);
    /* the clock is read under the lock, so the entries' stamps never run ahead of it */
    pthread_mutex_lock(&limits_lock);
    uint64_t now = now_ms();
    struct limit *a = limit_find(akey, now, false), *u = user ? limit_find(ukey, now, false) : NULL;
    uint64_t slot = now;
    if (takes_turns(a) && a->next_ms > slot)
        slot = a->next_ms;
    if (takes_turns(u) && u->next_ms > slot)
        slot = u->next_ms;
    enum gh_auth_turn turn = slot == now ? GH_AUTH_NOW : GH_AUTH_WAIT;
    if (slot - now > FAIL_QUEUE_MS) {
        turn = GH_AUTH_REFUSE;
    } else {
        take_turn(a, slot, now);
        if (u != a)
            take_turn(u, slot, now);
    }
    pthread_mutex_unlock(&limits_lock);
    *ms = (unsigned)(slot - now);
    return turn;
}

static void limit_failed(const char *key, uint64_t now)
{
    struct limit *e = limit_find(key, now, true);
    e->failures++;
    e->last_ms = now;
    if (e->failures == FAIL_FREE && e->next_ms < now + FAIL_BASE_DELAY_MS)
        e->next_ms = now + FAIL_BASE_DELAY_MS;
}

void gh_auth_failed(const char *client, const char *user)
{
    gh_security_auth_failure(client, user ? user : "");
    char key[GH_ADDR_TEXT + 2];
    pthread_mutex_lock(&limits_lock);
    uint64_t now = now_ms();
    limit_key('a', client, key);
    limit_failed(key, now);
    if (user) {
        limit_key('u', user, key);
        limit_failed(key, now);
    }
    pthread_mutex_unlock(&limits_lock);
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

/* The decoded "name:secret" of Basic credentials (caller frees with basic_free); NULL when
 * value is not Basic or does not decode. */
static char *basic_plain(const char *value, size_t *cap)
{
    while (*value == ' ')
        value++;
    if (strncasecmp(value, "Basic ", 6))
        return NULL;
    const char *b64 = value + 6;
    while (*b64 == ' ')
        b64++;
    *cap = strlen(b64) + 4;
    char *plain = calloc(1, *cap);
    if (plain && !base64_decode(b64, plain, *cap)) {
        free(plain);
        plain = NULL;
    }
    return plain;
}

static void basic_free(char *plain, size_t cap)
{
    if (plain)
        memset(plain, 0, cap); /* the secret does not outlive the check */
    free(plain);
}

bool gh_auth_header_user(const char *value, char *out, size_t cap)
{
    size_t pcap = 0;
    char *plain = basic_plain(value, &pcap);
    char *colon = plain ? strchr(plain, ':') : NULL;
    if (colon)
        snprintf(out, cap, "%.*s", (int)(colon - plain), plain);
    basic_free(plain, pcap);
    return colon != NULL;
}

bool gh_auth_basic(const char *value, bool (*accepts)(const char *user, const char *secret))
{
    size_t cap = 0;
    char *plain = basic_plain(value, &cap);
    char *colon = plain ? strchr(plain, ':') : NULL;
    bool ok = false;
    if (colon) {
        *colon = '\0';
        ok = colon[1] && accepts(plain, colon + 1);
    }
    basic_free(plain, cap);
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
    size_t cap = 0;
    char *plain = basic_plain(value, &cap);
    char *colon = plain ? strchr(plain, ':') : NULL;
    bool ok = false;
    if (colon) {
        *colon = '\0';
        ok = colon[1] && gh_auth_check(plain, colon + 1, who);
    }
    basic_free(plain, cap);
    return ok;
}
