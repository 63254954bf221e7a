/*
 * challenge: the answers to ACME challenges that the listeners give themselves — HTTP-01
 * key authorizations by token, TLS-ALPN-01 certificates by host name. Filled by the ACME
 * client while an order is open, read by the HTTP application and the TLS handshake.
 */
#ifndef GH_CHALLENGE_H
#define GH_CHALLENGE_H
#include <stdbool.h>
#include <stddef.h>

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;

/* HTTP-01: publishes token → key authorization until withdrawn. */
bool gh_challenge_http_put(const char *token, const char *key_authorization);
void gh_challenge_http_remove(const char *token);
/* The key authorization for token (copied into out), false when none is published. */
bool gh_challenge_http_get(const char *token, char *out, size_t cap);

/* TLS-ALPN-01: publishes the acmeIdentifier certificate for host (references taken). */
bool gh_challenge_alpn_put(const char *host, X509 *cert, EVP_PKEY *key);
void gh_challenge_alpn_remove(const char *host);
/* The certificate for host with new references (caller frees both), false when none. */
bool gh_challenge_alpn_get(const char *host, X509 **cert, EVP_PKEY **key);

/* Whether anything is published: the TLS handshake looks no further when nothing is. */
bool gh_challenge_any(void);

#endif
