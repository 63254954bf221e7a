/*
 * jws: the cryptography an ACME client needs (RFC 8555, 7515, 7638, 8737), all through
 * OpenSSL: base64url, P-256 keys, the account JWK and its thumbprint, ES256 and HS256
 * (External Account Binding) signatures, the CSR and the TLS-ALPN-01 certificate.
 */
#ifndef GH_ACME_JWS_H
#define GH_ACME_JWS_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;

/* base64url without padding; malloc'd (NULL when out of memory). */
char *gh_b64url(const unsigned char *in, size_t len);
/* Decodes base64url (padding tolerated); *out malloc'd. False when malformed. */
bool gh_b64url_decode(const char *in, unsigned char **out, size_t *len);

/* A new ECDSA P-256 key; its PEM (PKCS#8, malloc'd); a key back from PEM. */
EVP_PKEY *gh_acme_key_new(void);
char *gh_acme_key_pem(EVP_PKEY *key);
EVP_PKEY *gh_acme_key_from_pem(const char *pem);

/* The public JWK {"crv","kty","x","y"} (members in RFC 7638 order) of a P-256 key. */
json_t *gh_jwk(EVP_PKEY *key);
/* RFC 7638 thumbprint, base64url of SHA-256 (43 characters). */
bool gh_jwk_thumbprint(EVP_PKEY *key, char out[64]);

/*
 * A flattened JWS (RFC 7515 §7.2.2) signed ES256 by key: protected header {"alg","kid" or
 * "jwk","nonce","url"}; payload NULL means POST-as-GET (an empty payload). Returns the
 * JSON text (malloc'd) or NULL with err.
 */
char *gh_jws_es256(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                   const char *payload, gh_err *err);
/* The raw r||s (64 bytes) of a DER ECDSA-Sig-Value; false when it is not one. */
bool gh_ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64]);

/* The externalAccountBinding object (RFC 8555 §7.3.4): a JWS over the account JWK, HS256
 * with the CA's key (base64url) under its key id. A new reference, or NULL with err. */
json_t *gh_jws_eab(const char *key_id, const char *hmac_key_b64url, EVP_PKEY *account_key,
                   const char *url, gh_err *err);

/* A CSR for names (the first also the CN), signed by key: base64url DER (malloc'd). */
char *gh_acme_csr(char *const *names, unsigned n, EVP_PKEY *key, gh_err *err);

/* The TLS-ALPN-01 certificate for name (RFC 8737): self-signed, SAN name, the critical
 * acmeIdentifier extension holding SHA-256(key_authorization). */
bool gh_acme_alpn_cert(const char *name, const char *key_authorization, X509 **cert, EVP_PKEY **key,
                       gh_err *err);

#endif
