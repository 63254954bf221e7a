/*
 * tls: OpenSSL 3 server contexts built from a listener's TLS fields, and the process-wide
 * certificate store that every context reads during its handshakes (SNI: exact name, then
 * wildcard, then the default, then any). The store is immutable and replaced whole.
 */
#include "net/tls.h"

#include "net/challenge.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* OpenSSL's names for the suites of enum gh_tls_suite, in the same order. */
const char *const gh_tls_suite_openssl[GH_SUITE_COUNT] = {
    "TLS_AES_256_GCM_SHA384",        "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",  "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES256-GCM-SHA384",   "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
};

/* OpenSSL security level 2 (Debian's default, set here so it holds everywhere): keys of
 * 112 bits of strength or more (RSA 2048, P-256), no SHA-1 signatures. */
#define SECURITY_LEVEL 2

static bool suite_is_tls13(int s)
{
    return s <= GH_SUITE_TLS13_CHACHA20_POLY1305_SHA256;
}

/* ---------------------------------------------------------------------------------------
 * Shared, immutable objects replaced whole (the certificate store, the ticket keys).
 * Readers take a reference without a lock. The window between loading the pointer and
 * taking the reference is announced in `loading`; a writer swaps the pointer, then waits
 * for that count to drain before dropping its own reference to the old object: a reader
 * either saw the new pointer, or is counted and holds its reference before the old object
 * can go. The window is a handful of instructions, so the writer's wait is short.
 */
static atomic_uint loading;

static void wait_readers(void)
{
    while (atomic_load(&loading))
        sched_yield();
}

/* ---------------------------------------------------------------------------------------
 * Session tickets. One key set for the whole process, so a ticket issued by any worker's
 * context (or by a listener's previous version) resumes on any other. The key is replaced
 * every hour and the previous one kept for decryption, so a ticket resumes for one to two
 * hours (its lifetime is two) and a key stolen from memory opens at most two hours of
 * tickets.
 */
#define TICKET_ROTATE_SECS   3600
#define TICKET_LIFETIME_SECS 7200 /* SSL_CTX_set_timeout: how long a ticket resumes */

struct ticket_key {
    unsigned char name[16], hmac[32], aes[32];
};

/* Owner: whoever holds a reference (the published pointer holds one). */
struct ticket_keys {
    atomic_uint refs;
    time_t made;
    struct ticket_key cur, prev;
    bool has_prev;
};

static _Atomic(struct ticket_keys *) ticket_keys;
static atomic_bool ticket_rotating;

static void keys_unref(struct ticket_keys *k)
{
    if (k && atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1) {
        OPENSSL_cleanse(k, sizeof *k);
        free(k);
    }
}

/* Makes a new current key, keeping `old`'s current one as the previous when asked.
 * Callers hold ticket_rotating, so rotations never overlap. */
static bool keys_rotate(const struct ticket_keys *old, time_t now, bool keep_old)
{
    struct ticket_keys *k = calloc(1, sizeof *k);
    if (!k || RAND_bytes((unsigned char *)&k->cur, sizeof k->cur) != 1) {
        free(k);
        return false;
    }
    atomic_init(&k->refs, 1);
    k->made = now;
    if (old && keep_old) {
        k->prev = old->cur;
        k->has_prev = true;
    }
    struct ticket_keys *was = atomic_exchange(&ticket_keys, k);
    wait_readers();
    keys_unref(was);
    return true;
}

static struct ticket_keys *keys_load(void)
{
    atomic_fetch_add(&loading, 1);
    struct ticket_keys *k = atomic_load(&ticket_keys);
    if (k)
        atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    atomic_fetch_sub(&loading, 1);
    return k;
}

/* The current keys, rotated first when they are due. */
static struct ticket_keys *keys_acquire(void)
{
    struct ticket_keys *k = keys_load();
    time_t now = time(NULL);
    if (k && now - k->made >= TICKET_ROTATE_SECS && !atomic_exchange(&ticket_rotating, true)) {
        /* One handshake rotates; the others go on with the key they have. The old key's
         * last ticket was issued before it was due (a later handshake would have rotated),
         * so after a long quiet spell it has no live tickets left and is not kept. */
        bool rotated =
            keys_rotate(k, now, now - k->made < TICKET_ROTATE_SECS + TICKET_LIFETIME_SECS);
        atomic_store(&ticket_rotating, false);
        if (rotated) {
            keys_unref(k);
            k = keys_load();
        }
    }
    return k;
}

void gh_tls_rotate_ticket_key(void)
{
    while (atomic_exchange(&ticket_rotating, true))
        sched_yield();
    struct ticket_keys *k = keys_load();
    keys_rotate(k, time(NULL), true);
    keys_unref(k);
    atomic_store(&ticket_rotating, false);
}

static int ticket_mac_init(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* OpenSSL's ticket callback: 1 = done, 2 = decrypted, and issue a new ticket (an old key,
 * or any TLS 1.3 resumption: clients use a 1.3 ticket once, so without a fresh one every
 * other connection would be a full handshake), 0 = unknown key (full handshake), -1 = error. */
static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_keys *k = keys_acquire();
    int rc = -1;
    if (!k)
        return -1;
    if (enc) {
        memcpy(name, k->cur.name, sizeof k->cur.name);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) == 1 &&
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->cur.aes, iv) &&
            ticket_mac_init(hctx, k->cur.hmac))
            rc = 1;
    } else {
        struct ticket_key *key = !memcmp(name, k->cur.name, 16)                   ? &k->cur
                                 : k->has_prev && !memcmp(name, k->prev.name, 16) ? &k->prev
                                                                                  : NULL;
        if (!key)
            rc = 0;
        else if (ticket_mac_init(hctx, key->hmac) &&
                 EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key->aes, iv))
            rc = key == &k->cur && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
    }
    keys_unref(k);
    return rc;
}

static pthread_once_t ticket_once = PTHREAD_ONCE_INIT;

static void first_ticket_keys(void)
{
    keys_rotate(NULL, time(NULL), false);
}

bool gh_tls_init(gh_err *err)
{
    if (!OPENSSL_init_ssl(0, NULL))
        return gh_fail(err, "TLS: OpenSSL failed to initialise");
    pthread_once(&ticket_once, first_ticket_keys);
    if (!atomic_load(&ticket_keys))
        return gh_fail(err, "TLS: no randomness for the session ticket key");
    return true;
}

/* ---------------------------------------------------------------------------------------
 * Versions and suites: one plan, used by both the check and the builder.
 */
struct tls_plan {
    int min_version, max_version;
    char tls13[128]; /* SSL_CTX_set_ciphersuites */
    char tls12[256]; /* SSL_CTX_set_cipher_list */
};

static void join(char *dst, size_t size, const char *name)
{
    size_t len = strlen(dst);
    snprintf(dst + len, size - len, "%s%s", len ? ":" : "", name);
}

static bool plan_conf(const struct gh_listener_conf *conf, struct tls_plan *p, gh_err *err)
{
    memset(p, 0, sizeof *p);
    bool v12 = !(conf->tls_disabled_versions & (1u << GH_TLS12));
    bool v13 = !(conf->tls_disabled_versions & (1u << GH_TLS13));
    if (!v12 && !v13)
        return gh_fail(err, "tlsDisableProtocols disables both tls12 and tls13; keep at least "
                            "one enabled");
    for (int s = 0; s < GH_SUITE_COUNT; s++) {
        if (conf->tls_disabled_suites & (1u << s))
            continue;
        if (suite_is_tls13(s))
            join(p->tls13, sizeof p->tls13, gh_tls_suite_openssl[s]);
        else
            join(p->tls12, sizeof p->tls12, gh_tls_suite_openssl[s]);
    }
    /* A version whose suites are all disabled cannot be negotiated: say so in the
     * context's version range instead of letting clients find out. */
    bool use13 = v13 && p->tls13[0];
    bool use12 = v12 && p->tls12[0];
    if (!use12 && !use13)
        return gh_fail(err,
                       "tlsDisableCipherSuites leaves no cipher suite for the enabled protocol "
                       "versions (%s%s%s); enable a %s suite",
                       v12 ? "tls12" : "", v12 && v13 ? ", " : "", v13 ? "tls13" : "",
                       v13 ? "tls13-*" : "tls-ecdhe-*");
    if (!use13)
        p->tls13[0] = '\0';
    if (!use12)
        p->tls12[0] = '\0';
    p->min_version = use12 ? TLS1_2_VERSION : TLS1_3_VERSION;
    p->max_version = use13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    return true;
}

bool gh_tls_check_conf(const struct gh_listener_conf *conf, gh_err *err)
{
    struct tls_plan p;
    return plan_conf(conf, &p, err);
}

/* ---------------------------------------------------------------------------------------
 * The certificate store. Immutable once published; readers (handshakes on any worker) take
 * a reference without a lock; gh_tls_certs_set publishes a new one and drops the old one
 * once no reader can still be about to take a reference to it.
 */
struct cert_entry {
    char id[64];
    X509 *leaf;
    STACK_OF(X509) * chain; /* the certificates after the leaf; may be empty */
    EVP_PKEY *key;
    struct gh_cert_info info;
};

/* Owner: whoever holds a reference (the published pointer holds one). */
struct cert_store {
    atomic_uint refs;
    unsigned n;
    struct cert_entry *entries;     /* n */
    struct gh_cert_choice *choices; /* n, pointing into entries[i].info */
};

static _Atomic(struct cert_store *) current_store;
/* Serialises writers only; the handshake path never takes it. */
static pthread_mutex_t store_writer = PTHREAD_MUTEX_INITIALIZER;

static void entry_clear(struct cert_entry *e)
{
    X509_free(e->leaf);
    sk_X509_pop_free(e->chain, X509_free);
    EVP_PKEY_free(e->key);
    gh_cert_info_free(&e->info);
}

static void store_unref(struct cert_store *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < s->n; i++)
        entry_clear(&s->entries[i]);
    free(s->entries);
    free(s->choices);
    free(s);
}

static struct cert_store *store_acquire(void)
{
    atomic_fetch_add(&loading, 1);
    struct cert_store *s = atomic_load(&current_store);
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    atomic_fetch_sub(&loading, 1);
    return s;
}

static void store_publish(struct cert_store *s)
{
    pthread_mutex_lock(&store_writer);
    struct cert_store *old = atomic_exchange(&current_store, s);
    wait_readers();
    pthread_mutex_unlock(&store_writer);
    store_unref(old);
}

/* ---------------------------------------------------------------------------------------
 * Choosing a certificate for a server name.
 */
static bool name_is(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && !strncasecmp(a, b, alen);
}

/* "*.example.com" covers "a.example.com", not "example.com" nor "b.a.example.com". */
static bool wildcard_covers(const char *pattern, const char *sni, size_t len)
{
    if (strncmp(pattern, "*.", 2))
        return false;
    const char *dot = memchr(sni, '.', len);
    if (!dot || dot == sni)
        return false;
    return name_is(dot + 1, len - (size_t)(dot + 1 - sni), pattern + 2);
}

enum match { MATCH_NONE, MATCH_ANY, MATCH_DEFAULT, MATCH_WILDCARD, MATCH_EXACT };

static enum match match_level(const struct gh_cert_choice *c, const char *sni, size_t len)
{
    enum match best = c->is_default ? MATCH_DEFAULT : MATCH_ANY;
    for (unsigned i = 0; len && i < c->nnames; i++) {
        const char *name = c->names[i];
        if (name_is(sni, len, name))
            return MATCH_EXACT;
        if (wildcard_covers(name, sni, len))
            best = MATCH_WILDCARD;
    }
    return best;
}

/* Between two certificates of the same match: one valid now, then the later expiry. */
static bool better(const struct gh_cert_choice *a, const struct gh_cert_choice *b, time_t now)
{
    bool va = a->not_before <= now && now <= a->not_after;
    bool vb = b->not_before <= now && now <= b->not_after;
    if (va != vb)
        return va;
    return a->not_after > b->not_after;
}

static int select_among(const struct gh_cert_choice *certs, unsigned n, const char *sni, size_t len,
                        unsigned key_types, time_t now)
{
    int best = -1;
    enum match best_level = MATCH_NONE;
    for (unsigned i = 0; i < n; i++) {
        if (key_types && !(certs[i].key_type & key_types))
            continue;
        enum match m = match_level(&certs[i], sni, len);
        if (m > best_level || (m == best_level && better(&certs[i], &certs[best], now))) {
            best = (int)i;
            best_level = m;
        }
    }
    return best;
}

int gh_tls_cert_select(const struct gh_cert_choice *certs, unsigned n, const char *sni,
                       unsigned key_types, time_t now)
{
    size_t len = sni ? strlen(sni) : 0;
    if (len && sni[len - 1] == '.') /* "example.com." names the same host */
        len--;
    int i = select_among(certs, n, sni, len, key_types, now);
    return i >= 0 ? i : select_among(certs, n, sni, len, 0, now);
}

static unsigned suite_key_types(SSL *ssl);

/*
 * The key types the client's signature_algorithms accept (0 when it sent none). TLS 1.3
 * signs with RSA-PSS only, so a PKCS#1 entry does not count there.
 */
static unsigned sigalg_key_types(SSL *ssl, bool tls13)
{
    unsigned types = 0;
    int n = SSL_get_sigalgs(ssl, -1, NULL, NULL, NULL, NULL, NULL);
    for (int i = 0; i < n; i++) {
        int sign = 0;
        SSL_get_sigalgs(ssl, i, &sign, NULL, NULL, NULL, NULL);
        if (sign == EVP_PKEY_EC || sign == EVP_PKEY_ED25519 || sign == EVP_PKEY_ED448)
            types |= GH_CERT_KEY_EC;
        else if (sign == EVP_PKEY_RSA_PSS || (sign == EVP_PKEY_RSA && !tls13))
            types |= GH_CERT_KEY_RSA;
    }
    return types;
}

/*
 * The key types that can complete this handshake. TLS 1.3 signs with any the client's
 * signature_algorithms accept (the suite does not name one); TLS 1.2 needs a suite both
 * sides enabled whose authentication matches, narrowed by the signature algorithms when
 * that leaves any.
 */
static unsigned usable_key_types(SSL *ssl)
{
    if (SSL_version(ssl) >= TLS1_3_VERSION)
        return sigalg_key_types(ssl, true);
    unsigned types = suite_key_types(ssl);
    unsigned signable = types & sigalg_key_types(ssl, false);
    return signable ? signable : types;
}

/* TLS 1.2: the key types of the suites both sides enabled. */
static unsigned suite_key_types(SSL *ssl)
{
    STACK_OF(SSL_CIPHER) *ours = SSL_get_ciphers(ssl);
    STACK_OF(SSL_CIPHER) *theirs = SSL_get_client_ciphers(ssl);
    unsigned types = 0;
    for (int i = 0; i < sk_SSL_CIPHER_num(ours); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(ours, i);
        if (!theirs || sk_SSL_CIPHER_find(theirs, c) < 0)
            continue;
        int auth = SSL_CIPHER_get_auth_nid(c);
        types |= auth == NID_auth_ecdsa ? GH_CERT_KEY_EC
                 : auth == NID_auth_rsa ? GH_CERT_KEY_RSA
                                        : 0;
    }
    return types;
}

static unsigned key_type_of(EVP_PKEY *k)
{
    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_EC:
    case EVP_PKEY_ED25519: /* OpenSSL signs ECDHE-ECDSA suites with EdDSA keys too */
    case EVP_PKEY_ED448:
        return GH_CERT_KEY_EC;
    case EVP_PKEY_RSA:
        return GH_CERT_KEY_RSA;
    default:
        return GH_CERT_KEY_OTHER;
    }
}

/* ---------------------------------------------------------------------------------------
 * ACME TLS-ALPN-01 (RFC 8737): a handshake that offers only ALPN "acme-tls/1" while an
 * order for its SNI name is open gets the challenge certificate instead of a real one.
 */
static const unsigned char acme_alpn[] = "\x0a"
                                         "acme-tls/1";
static int acme_ex_index = -1;
static pthread_once_t acme_ex_once = PTHREAD_ONCE_INIT;

static void acme_ex_init(void)
{
    acme_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Whether an ALPN protocol list (wire format) offers acme-tls/1. */
static bool offers_acme(const unsigned char *list, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = list[i];
        if (i + 1 + n > len)
            return false;
        if (n == sizeof acme_alpn - 2 && !memcmp(list + i + 1, acme_alpn + 1, n))
            return true;
        i += 1 + n;
    }
    return false;
}

/* Before anything else in the handshake: marks a validation handshake, only while a
 * challenge is published (one atomic load otherwise). */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert, (void)arg;
    const unsigned char *ext;
    size_t len;
    if (gh_challenge_any() && acme_ex_index >= 0 &&
        SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                  &len) &&
        len > 2 && offers_acme(ext + 2, len - 2))
        SSL_set_ex_data(ssl, acme_ex_index, (void *)acme_alpn);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static bool is_acme_handshake(SSL *ssl)
{
    return acme_ex_index >= 0 && SSL_get_ex_data(ssl, acme_ex_index) != NULL;
}

/* Only a validation handshake negotiates an ALPN protocol; the mail protocols use none. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    (void)arg;
    if (!is_acme_handshake(ssl) || !offers_acme(in, inlen))
        return SSL_TLSEXT_ERR_NOACK;
    *out = acme_alpn + 1;
    *outlen = (unsigned char)(sizeof acme_alpn - 2);
    return SSL_TLSEXT_ERR_OK;
}

/* The challenge certificate for this handshake's SNI; false when none is published. */
static bool use_acme_cert(SSL *ssl)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    if (!gh_challenge_alpn_get(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), &cert, &key))
        return false;
    int ok = SSL_use_cert_and_key(ssl, cert, key, NULL, 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ok == 1;
}

bool gh_tls_is_acme_validation(SSL *ssl)
{
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    return len == sizeof acme_alpn - 2 && !memcmp(proto, acme_alpn + 1, len);
}

/* Runs inside each handshake, after the ClientHello: installs the chosen certificate. */
static int cert_cb(SSL *ssl, void *arg)
{
    (void)arg;
    if (is_acme_handshake(ssl) && use_acme_cert(ssl))
        return 1;
    struct cert_store *s = store_acquire();
    if (!s || !s->n) {
        store_unref(s);
        return 0; /* the handshake fails with an alert: there is nothing to present */
    }
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int i = gh_tls_cert_select(s->choices, s->n, sni, usable_key_types(ssl), time(NULL));
    struct cert_entry *e = &s->entries[i];
    /* Takes its own references; the store may go away once we return. */
    int ok = SSL_use_cert_and_key(ssl, e->leaf, e->key, e->chain, 1);
    store_unref(s);
    return ok == 1;
}

/* ---------------------------------------------------------------------------------------
 * Contexts.
 */
SSL_CTX *gh_tls_ctx_new(const struct gh_listener_conf *conf, gh_err *err)
{
    struct tls_plan p;
    if (!plan_conf(conf, &p, err) || !gh_tls_init(err))
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        gh_fail(err, "TLS: cannot create a context (out of memory?)");
        goto fail;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, p.min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, p.max_version)) {
        gh_fail(err, "TLS: cannot set the protocol versions");
        goto fail;
    }
    if (!SSL_CTX_set_ciphersuites(ctx, p.tls13)) {
        gh_fail(err, "TLS: OpenSSL refused the TLS 1.3 suites %s", p.tls13);
        goto fail;
    }
    /*
     * With no TLS 1.2 suite OpenSSL still empties the list but reports "no cipher match";
     * the empty list is what we want (TLS 1.2 is then also off by version), so only a
     * refusal of a non-empty list is an error.
     */
    if (!SSL_CTX_set_cipher_list(ctx, p.tls12[0] ? p.tls12 : "!ALL") && p.tls12[0]) {
        gh_fail(err, "TLS: OpenSSL refused the TLS 1.2 suites %s", p.tls12);
        goto fail;
    }
    ERR_clear_error();

    SSL_CTX_set_security_level(ctx, SECURITY_LEVEL);
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
    if (conf->tls_ignore_client_order)
        opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
    SSL_CTX_set_options(ctx, opts);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    /* Stateless tickets only: no per-session memory kept on the server. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, TICKET_LIFETIME_SECS);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    /* Idle connections give their read/write buffers back (about 34 KB each). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_cert_cb(ctx, cert_cb, NULL);
    pthread_once(&acme_ex_once, acme_ex_init);
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Parsing and inspecting PEM.
 */

/* Never prompt on a terminal for a passphrase: an encrypted key is refused instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

struct parsed {
    X509 *leaf;
    STACK_OF(X509) * chain;
    EVP_PKEY *key;
};

static void parsed_free(struct parsed *p)
{
    X509_free(p->leaf);
    sk_X509_pop_free(p->chain, X509_free);
    EVP_PKEY_free(p->key);
    memset(p, 0, sizeof *p);
}

/* True when the last OpenSSL error only says "no more PEM blocks". */
static bool pem_ended(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

static bool parse_chain(const char *pem, struct parsed *p, gh_err *err)
{
    if (!pem || !*pem)
        return gh_fail(err, "certificate: empty; paste the PEM chain, leaf first");
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio || !(p->chain = sk_X509_new_null())) {
        BIO_free(bio);
        return gh_fail(err, "certificate: out of memory");
    }
    bool ok = true;
    for (unsigned n = 0;; n++) {
        X509 *x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
        if (!x) {
            if (n == 0 && pem_ended())
                ok = gh_fail(err, "certificate: no PEM certificate found (expected "
                                  "-----BEGIN CERTIFICATE-----)");
            else if (n == 0 || !pem_ended())
                ok = gh_fail(err, "certificate: PEM block %u is not a valid certificate", n + 1);
            break;
        }
        if (!p->leaf)
            p->leaf = x;
        else if (!sk_X509_push(p->chain, x)) {
            X509_free(x);
            ok = gh_fail(err, "certificate: out of memory");
            break;
        }
    }
    BIO_free(bio);
    ERR_clear_error();
    return ok;
}

static bool parse_key(const char *pem, struct parsed *p, gh_err *err)
{
    if (!pem || !*pem)
        return gh_fail(err, "privateKey: empty; paste the PEM private key");
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio)
        return gh_fail(err, "privateKey: out of memory");
    p->key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (p->key)
        return true;
    if (strstr(pem, "ENCRYPTED"))
        return gh_fail(err, "privateKey is encrypted; provide it without a passphrase");
    return gh_fail(err, "privateKey: no PEM private key found (expected -----BEGIN PRIVATE "
                        "KEY-----)");
}

static bool parse_pair(const char *pem_chain, const char *pem_key, struct parsed *p, gh_err *err)
{
    memset(p, 0, sizeof *p);
    if (!parse_chain(pem_chain, p, err))
        goto fail;
    if (!pem_key || !*pem_key)
        return true; /* a trust anchor: a chain without a key, never served */
    if (!parse_key(pem_key, p, err))
        goto fail;
    if (X509_check_private_key(p->leaf, p->key) != 1) {
        ERR_clear_error();
        gh_fail(err, "privateKey does not match the certificate");
        goto fail;
    }
    return true;
fail:
    parsed_free(p);
    return false;
}

static void asn1_text(const ASN1_STRING *s, char *out, size_t size)
{
    out[0] = '\0';
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    if (len < 0)
        return;
    snprintf(out, size, "%.*s", len, (const char *)utf8);
    OPENSSL_free(utf8);
}

static void name_cn(const X509_NAME *name, char *out, size_t size)
{
    out[0] = '\0';
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i >= 0)
        asn1_text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)), out, size);
}

static bool add_name(struct gh_cert_info *info, const char *name, size_t len)
{
    char **names = realloc(info->names, (info->nnames + 1) * sizeof *names);
    if (!names)
        return false;
    info->names = names;
    if (!(names[info->nnames] = strndup(name, len)))
        return false;
    info->nnames++;
    return true;
}

/* The DNS names of the subjectAltName, else the subject CN. */
static bool fill_names(X509 *leaf, struct gh_cert_info *info)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    bool ok = true;
    for (int i = 0; ok && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const char *s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        if (len > 0 && !memchr(s, '\0', (size_t)len)) /* an embedded NUL is a forgery */
            ok = add_name(info, s, (size_t)len);
    }
    GENERAL_NAMES_free(sans);
    if (ok && info->nnames == 0 && info->subject_cn[0])
        ok = add_name(info, info->subject_cn, strlen(info->subject_cn));
    return ok;
}

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

static bool fill_info(X509 *leaf, struct gh_cert_info *info, gh_err *err)
{
    memset(info, 0, sizeof *info);
    name_cn(X509_get_subject_name(leaf), info->subject_cn, sizeof info->subject_cn);
    name_cn(X509_get_issuer_name(leaf), info->issuer_cn, sizeof info->issuer_cn);
    info->not_before = asn1_time(X509_get0_notBefore(leaf));
    info->not_after = asn1_time(X509_get0_notAfter(leaf));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!X509_digest(leaf, EVP_sha256(), md, &mdlen) || !fill_names(leaf, info)) {
        gh_cert_info_free(info);
        ERR_clear_error();
        return gh_fail(err, "certificate: cannot read its names or digest (out of memory?)");
    }
    char *f = info->fingerprint_sha256;
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        f += sprintf(f, "%s%02X", i ? ":" : "", md[i]);
    return true;
}

void gh_tls_time_text(time_t t, char out[GH_TLS_TIME_TEXT])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, GH_TLS_TIME_TEXT, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Would OpenSSL serve it? The security level refuses weak keys and digests at handshake
 * time; say so now, in words, instead. */
static bool check_usable(struct parsed *p, gh_err *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return gh_fail(err, "certificate: cannot check it (out of memory?)");
    SSL_CTX_set_security_level(ctx, SECURITY_LEVEL);
    int ok = SSL_CTX_use_cert_and_key(ctx, p->leaf, p->key, p->chain, 1);
    unsigned long e = ok == 1 ? 0 : ERR_peek_last_error();
    int bits = EVP_PKEY_get_bits(p->key);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    if (ok == 1)
        return true;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_EE_KEY_TOO_SMALL:
        return gh_fail(err,
                       "privateKey is too weak (%d bits); use RSA of 2048 bits or more, or "
                       "ECDSA P-256",
                       bits);
    case SSL_R_CA_KEY_TOO_SMALL:
        return gh_fail(err, "certificate: an issuer in the chain has a key too weak to be "
                            "accepted; reissue the chain");
    case SSL_R_CA_MD_TOO_WEAK:
        return gh_fail(err, "certificate: signed with a weak digest (such as SHA-1); reissue it "
                            "with SHA-256");
    default: {
        char reason[128];
        ERR_error_string_n(e, reason, sizeof reason);
        return gh_fail(err, "certificate cannot be used for TLS: %s", reason);
    }
    }
}

bool gh_tls_cert_inspect(const char *pem_chain, const char *pem_key, struct gh_cert_info *info,
                         gh_err *err)
{
    memset(info, 0, sizeof *info);
    struct parsed p;
    memset(&p, 0, sizeof p);
    if (!pem_key) { /* a trust anchor: the chain alone */
        if (!parse_chain(pem_chain, &p, err)) {
            parsed_free(&p);
            return false;
        }
    } else if (!parse_pair(pem_chain, pem_key, &p, err)) {
        return false;
    } else if (!check_usable(&p, err)) {
        parsed_free(&p);
        return false;
    }
    bool ok = fill_info(p.leaf, info, err);
    if (ok && info->not_after < time(NULL)) {
        char when[GH_TLS_TIME_TEXT];
        gh_tls_time_text(info->not_after, when);
        ok = gh_fail(err, "certificate expired on %s", when);
        gh_cert_info_free(info);
    }
    parsed_free(&p);
    return ok;
}

void gh_cert_info_free(struct gh_cert_info *info)
{
    for (unsigned i = 0; i < info->nnames; i++)
        free(info->names[i]);
    free(info->names);
    info->names = NULL;
    info->nnames = 0;
}

/* ---------------------------------------------------------------------------------------
 * Replacing the store.
 */
bool gh_tls_certs_set(const struct gh_cert_input *certs, unsigned n, gh_err *err)
{
    struct cert_store *s = calloc(1, sizeof *s);
    if (!s || (n && (!(s->entries = calloc(n, sizeof *s->entries)) ||
                     !(s->choices = calloc(n, sizeof *s->choices))))) {
        if (s)
            free(s->entries);
        free(s);
        return gh_fail(err, "certificates: out of memory");
    }
    atomic_init(&s->refs, 1);
    for (unsigned i = 0; i < n; i++) {
        struct cert_entry *e = &s->entries[i];
        struct parsed p;
        snprintf(e->id, sizeof e->id, "%s", certs[i].id ? certs[i].id : "");
        /* Expired certificates stay usable here (a restart must not lose the only one);
         * the choice prefers one that is valid now. */
        if (!parse_pair(certs[i].pem_chain, certs[i].pem_key, &p, err) ||
            !fill_info(p.leaf, &e->info, err)) {
            parsed_free(&p);
            gh_err_context(err, "certificate %s", e->id);
            s->n = i;
            store_unref(s);
            return false;
        }
        e->leaf = p.leaf;
        e->chain = p.chain;
        e->key = p.key;
        s->n = i + 1;
        s->choices[i] = (struct gh_cert_choice){
            .names = e->info.names,
            .nnames = e->info.nnames,
            .not_before = e->info.not_before,
            .not_after = e->info.not_after,
            .is_default = certs[i].is_default,
            .key_type = key_type_of(p.key),
        };
    }
    store_publish(s);
    return true;
}

unsigned gh_tls_certs_count(void)
{
    struct cert_store *s = store_acquire();
    unsigned n = s ? s->n : 0;
    store_unref(s);
    return n;
}

void gh_tls_shutdown(void)
{
    store_publish(NULL);
}

/* ---------------------------------------------------------------------------------------
 * Self-signed certificates.
 */

/* Host names only: letters, digits, '-', '.', so nothing can smuggle extra SAN entries. */
static bool host_ok(const char *h)
{
    size_t len = strlen(h);
    if (!len || len > 253)
        return false;
    for (const char *c = h; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.')
            return false;
    return true;
}

static bool add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    bool ok = ext && X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static char *bio_string(BIO *bio)
{
    char *data;
    long len = BIO_get_mem_data(bio, &data);
    return len > 0 ? strndup(data, (size_t)len) : NULL;
}

static X509 *make_selfsigned(const char *hostname, EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *serial = BN_new();
    char san[300];
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, hostname, ip) == 1 || inet_pton(AF_INET6, hostname, ip) == 1;
    snprintf(san, sizeof san, "%s:%s", is_ip ? "IP" : "DNS", hostname);
    bool ok = x && name && serial && X509_set_version(x, X509_VERSION_3) &&
              BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
              BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) &&
              X509_gmtime_adj(X509_getm_notBefore(x), -60) &&
              X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600) && X509_set_pubkey(x, key) &&
              /* CN is at most 64 characters; the SAN carries the full name anyway. */
              (strlen(hostname) > 64 ||
               X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                          (const unsigned char *)hostname, -1, -1, 0)) &&
              X509_set_subject_name(x, name) && X509_set_issuer_name(x, name) &&
              add_ext(x, NID_subject_alt_name, san) &&
              add_ext(x, NID_basic_constraints, "critical,CA:FALSE") &&
              add_ext(x, NID_key_usage, "critical,digitalSignature") &&
              add_ext(x, NID_ext_key_usage, "serverAuth") &&
              add_ext(x, NID_subject_key_identifier, "hash") && X509_sign(x, key, EVP_sha256());
    X509_NAME_free(name);
    BN_free(serial);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

bool gh_tls_selfsigned(const char *hostname, char **pem_chain, char **pem_key, gh_err *err)
{
    *pem_chain = *pem_key = NULL;
    if (!hostname || !host_ok(hostname))
        return gh_fail(err, "self-signed certificate: \"%s\" is not a host name",
                       hostname ? hostname : "");
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = key ? make_selfsigned(hostname, key) : NULL;
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    bool ok = x && cb && kb && PEM_write_bio_X509(cb, x) &&
              PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) &&
              (*pem_chain = bio_string(cb)) && (*pem_key = bio_string(kb));
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (!ok) {
        free(*pem_chain);
        free(*pem_key);
        *pem_chain = *pem_key = NULL;
        return gh_fail(err, "self-signed certificate for %s: OpenSSL failed", hostname);
    }
    return true;
}
