/*
 * challenge: a small table of the ACME challenge answers currently published. Entries
 * live for the seconds an order takes; lookups come only from requests for
 * /.well-known/acme-challenge/ and handshakes that offer ALPN acme-tls/1, so the mutex
 * here is never taken on an ordinary connection's path (gh_challenge_any is one atomic load).
 */
#include "net/challenge.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define MAX_ENTRIES 64

struct entry {
    bool used, alpn;
    char name[256]; /* token (HTTP-01) or host (TLS-ALPN-01) */
    char *key_auth; /* HTTP-01 */
    X509 *cert;     /* TLS-ALPN-01 */
    EVP_PKEY *key;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry table[MAX_ENTRIES];
static atomic_uint published;

static void entry_clear(struct entry *e)
{
    free(e->key_auth);
    X509_free(e->cert);
    EVP_PKEY_free(e->key);
    memset(e, 0, sizeof *e);
    atomic_fetch_sub(&published, 1);
}

static struct entry *find(const char *name, bool alpn)
{
    for (int i = 0; i < MAX_ENTRIES; i++)
        if (table[i].used && table[i].alpn == alpn &&
            (alpn ? !strcasecmp(table[i].name, name) : !strcmp(table[i].name, name)))
            return &table[i];
    return NULL;
}

/* A slot for name: its old entry, else a free one; NULL when the table is full. */
static struct entry *slot(const char *name, bool alpn)
{
    struct entry *e = find(name, alpn);
    if (e) {
        entry_clear(e);
    } else {
        for (int i = 0; i < MAX_ENTRIES && !e; i++)
            if (!table[i].used)
                e = &table[i];
    }
    if (e) {
        e->used = true;
        e->alpn = alpn;
        snprintf(e->name, sizeof e->name, "%s", name);
        atomic_fetch_add(&published, 1);
    }
    return e;
}

bool gh_challenge_http_put(const char *token, const char *key_authorization)
{
    if (strlen(token) >= sizeof table[0].name)
        return false;
    pthread_mutex_lock(&mu);
    struct entry *e = slot(token, false);
    bool ok = e && (e->key_auth = strdup(key_authorization));
    if (e && !ok)
        entry_clear(e);
    pthread_mutex_unlock(&mu);
    return ok;
}

void gh_challenge_http_remove(const char *token)
{
    pthread_mutex_lock(&mu);
    struct entry *e = find(token, false);
    if (e)
        entry_clear(e);
    pthread_mutex_unlock(&mu);
}

bool gh_challenge_http_get(const char *token, char *out, size_t cap)
{
    if (!atomic_load(&published))
        return false;
    pthread_mutex_lock(&mu);
    struct entry *e = find(token, false);
    bool ok = e && strlen(e->key_auth) < cap;
    if (ok)
        snprintf(out, cap, "%s", e->key_auth);
    pthread_mutex_unlock(&mu);
    return ok;
}

bool gh_challenge_alpn_put(const char *host, X509 *cert, EVP_PKEY *key)
{
    if (strlen(host) >= sizeof table[0].name)
        return false;
    pthread_mutex_lock(&mu);
    struct entry *e = slot(host, true);
    if (e && X509_up_ref(cert) && EVP_PKEY_up_ref(key)) {
        e->cert = cert;
        e->key = key;
    }
    pthread_mutex_unlock(&mu);
    return e != NULL;
}

void gh_challenge_alpn_remove(const char *host)
{
    pthread_mutex_lock(&mu);
    struct entry *e = find(host, true);
    if (e)
        entry_clear(e);
    pthread_mutex_unlock(&mu);
}

bool gh_challenge_alpn_get(const char *host, X509 **cert, EVP_PKEY **key)
{
    if (!atomic_load(&published) || !host)
        return false;
    pthread_mutex_lock(&mu);
    struct entry *e = find(host, true);
    bool ok = e && e->cert && e->key && X509_up_ref(e->cert) && EVP_PKEY_up_ref(e->key);
    if (ok) {
        *cert = e->cert;
        *key = e->key;
    }
    pthread_mutex_unlock(&mu);
    return ok;
}

bool gh_challenge_any(void)
{
    return atomic_load(&published) != 0;
}
