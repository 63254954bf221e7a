/*
 * acme: an ACME client (RFC 8555) that orders one certificate from start to finish —
 * account, order, challenges answered by the listeners themselves, finalize with a fresh
 * key, download — and asks for ACME Renewal Information (RFC 9773). Blocking (libcurl):
 * it runs only on the renewal thread, never on a worker.
 */
#ifndef GH_ACME_H
#define GH_ACME_H
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "core/err.h"

typedef struct evp_pkey_st EVP_PKEY;

enum gh_acme_challenge { GH_ACME_TLS_ALPN_01, GH_ACME_HTTP_01 };

struct gh_acme_account {
    const char *directory; /* https URL of the directory */
    const char *ca_pem;    /* trust anchors for the directory's TLS; NULL: system store */
    EVP_PKEY *key;         /* the account key (borrowed) */
    char *const *contact;  /* e-mail addresses (without mailto:) */
    unsigned ncontact;
    const char *eab_key_id;   /* External Account Binding, when the CA asks; else NULL */
    const char *eab_hmac_key; /* base64url */
    char *account_uri;        /* in: known URI or NULL; out: malloc'd when learnt (owned) */
    const atomic_bool *stop;  /* set when the process stops: waits end early */
};

/* What an order brings back (owned, free with gh_acme_result_free). */
struct gh_acme_result {
    char *chain_pem; /* leaf first */
    char *key_pem;   /* the fresh certificate key */
};
void gh_acme_result_free(struct gh_acme_result *r);

/* Orders a certificate for names, answering each authorization by the challenge type. */
bool gh_acme_order(struct gh_acme_account *acct, enum gh_acme_challenge type, char *const *names,
                   unsigned n, struct gh_acme_result *out, gh_err *err);

/*
 * The CA's suggested renewal window for a certificate it issued (RFC 9773). False with
 * *offered false when the directory has no renewalInfo; false with err on a failure.
 */
bool gh_acme_renewal_info(struct gh_acme_account *acct, const char *chain_pem, time_t *start,
                          time_t *end, bool *offered, gh_err *err);

/* The ARI certificate identifier (RFC 9773 §4.1) of the chain's leaf: base64url of the
 * authority key identifier "." base64url of the serial's DER content; malloc'd, NULL when
 * the leaf has no AKI. */
char *gh_acme_cert_id(const char *chain_pem);

/* "R23" (two thirds of the lifetime) or a duration ("30d"): when to renew a certificate
 * valid from not_before to not_after. False when spec is neither. */
bool gh_acme_renew_at(const char *spec, time_t not_before, time_t not_after, time_t *at);

#endif
