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
    bool is_default;       /* used when no name matches the SNI (or there is no SNI) */
};

/* What a certificate says about itself, derived from the PEM. */
struct gh_cert_info {
    char subject_cn[256];
    char **names;          /* SAN DNS names (and the CN when there are none); owned, see below */
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
 * Fills info (free with gh_cert_info_free). */
bool gh_tls_cert_inspect(const char *pem_chain, const char *pem_key, struct gh_cert_info *info,
                         gh_err *err);
void gh_cert_info_free(struct gh_cert_info *info);

/* A self-signed ECDSA P-256 certificate for hostname, valid for a year; PEM strings are
 * malloc'd and owned by the caller. */
bool gh_tls_selfsigned(const char *hostname, char **pem_chain, char **pem_key, gh_err *err);

#endif
