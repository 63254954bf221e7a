/*
 * tls: OpenSSL 3 contexts built from a listener's TLS fields, and the process-wide
 * certificate store (SNI: exact name, then wildcard, then the default), replaced whole.
 */
#ifndef GH_TLS_H
#define GH_TLS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/err.h"
#include "net/listener-t.h"

typedef struct ssl_ctx_st SSL_CTX;

/* A certificate as the management layer hands it over. */
struct gh_cert_input {
    const char *id;        /* x:Certificate id, for logs */
    const char *pem_chain; /* leaf first */
    const char *pem_key;
    bool is_default; /* used when no name matches the SNI (or there is no SNI) */
};

/* What a certificate says about itself, derived from the PEM. */
struct gh_cert_info {
    char subject_cn[256];
    char **names; /* SAN DNS names (and the CN when there are none); owned, see below */
    unsigned nnames;
    time_t not_before, not_after;
    char issuer_cn[256];
    char fingerprint_sha256[96]; /* "AB:CD:..." */
};

bool gh_tls_init(gh_err *err);

/*
 * A context for a listener: only the nine suites of the reference page, in their order,
 * minus conf->tls_disabled_suites; TLS 1.2/1.3 minus conf->tls_disabled_versions;
 * server order when conf->tls_ignore_client_order; session tickets on; certificates
 * chosen per handshake from the current store. Refused when nothing usable remains.
 * Caller owns the result (SSL_CTX_free).
 */
SSL_CTX *gh_tls_ctx_new(const struct gh_listener_conf *conf, gh_err *err);
/* Checks only: would gh_tls_ctx_new succeed for these TLS fields? (used by validation) */
bool gh_tls_check_conf(const struct gh_listener_conf *conf, gh_err *err);

/* Replaces the certificate store; new handshakes use it at once. Thread-safe. */
bool gh_tls_certs_set(const struct gh_cert_input *certs, unsigned n, gh_err *err);

/* Parses and checks a chain and key: PEM well-formed, key matches the leaf, not expired.
 * pem_key NULL: a trust anchor (a chain only, used to verify peers). Fills info (free with
 * gh_cert_info_free). */
bool gh_tls_cert_inspect(const char *pem_chain, const char *pem_key, struct gh_cert_info *info,
                         gh_err *err);
void gh_cert_info_free(struct gh_cert_info *info);

/* A self-signed ECDSA P-256 certificate for hostname, valid for a year; PEM strings are
 * malloc'd and owned by the caller. */
bool gh_tls_selfsigned(const char *hostname, char **pem_chain, char **pem_key, gh_err *err);

/* ---- Additions beyond the first contract ---- */

/* OpenSSL's names for enum gh_tls_suite, in the same order ("TLS_AES_256_GCM_SHA384",
 * "ECDHE-ECDSA-AES256-GCM-SHA384", ...). */
extern const char *const gh_tls_suite_openssl[GH_SUITE_COUNT];

/* Key types, as a mask: what a TLS 1.2 suite's authentication needs. */
enum { GH_CERT_KEY_EC = 1, GH_CERT_KEY_RSA = 2, GH_CERT_KEY_OTHER = 4 };

/*
 * What the certificate choice looks at, one per certificate. The choice, apart from
 * OpenSSL so it can be tested: only certificates whose key type is in key_types (0 = all;
 * when none is, all are considered), then the exact SNI name (case-insensitive, a trailing
 * dot ignored), then a wildcard covering exactly one label ("*.example.com" covers
 * "a.example.com", not "example.com" nor "b.a.example.com"), then the default, then any;
 * among equals, one valid at `now`, then the one expiring last, then the first.
 * Returns the index, -1 when n is 0. sni is NULL or "" when the client sent none.
 */
struct gh_cert_choice {
    char *const *names;
    unsigned nnames;
    time_t not_before, not_after;
    bool is_default;
    unsigned key_type; /* GH_CERT_KEY_* */
};
int gh_tls_cert_select(const struct gh_cert_choice *certs, unsigned n, const char *sni,
                       unsigned key_types, time_t now);

/* How many certificates the current store holds. */
unsigned gh_tls_certs_count(void);

/* Replaces the session-ticket key now (it also happens by itself every hour): tickets
 * under the key before are still accepted (and replaced by a new ticket), older ones are
 * not, and their clients make a full handshake. */
void gh_tls_rotate_ticket_key(void);

/* Drops the certificate store (at exit, once no handshake runs). */
void gh_tls_shutdown(void);

/* "2024-01-01T00:00:00Z", as error messages and the API write times. */
#define GH_TLS_TIME_TEXT 24
void gh_tls_time_text(time_t t, char out[GH_TLS_TIME_TEXT]);

/*
 * Contexts from gh_tls_ctx_new choose their certificate in a certificate callback, so the
 * SSL objects made from them need nothing else. They set SSL_MODE_RELEASE_BUFFERS and
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER (not partial writes: SSL_write either writes all it
 * was given or reports SSL_ERROR_WANT_*), and keep no server-side session cache: resumption
 * is by session tickets, whose key is the same for every context of the process.
 */

#endif
