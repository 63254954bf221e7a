/*
 * listener-t: the data of a network listener as the engine sees it, one immutable
 * snapshot per version. The management layer builds it from the stored object.
 */
#ifndef GH_LISTENER_T_H
#define GH_LISTENER_T_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/addr.h"

enum gh_protocol {
    GH_PROTO_SMTP,
    GH_PROTO_LMTP,
    GH_PROTO_HTTP,
    GH_PROTO_IMAP,
    GH_PROTO_POP3,
    GH_PROTO_MANAGESIEVE,
    GH_PROTO_COUNT
};

/* The nine cipher suites of the reference page, in their order of preference. */
enum gh_tls_suite {
    GH_SUITE_TLS13_AES_256_GCM_SHA384,
    GH_SUITE_TLS13_AES_128_GCM_SHA256,
    GH_SUITE_TLS13_CHACHA20_POLY1305_SHA256,
    GH_SUITE_ECDHE_ECDSA_AES_256_GCM_SHA384,
    GH_SUITE_ECDHE_ECDSA_AES_128_GCM_SHA256,
    GH_SUITE_ECDHE_ECDSA_CHACHA20_POLY1305_SHA256,
    GH_SUITE_ECDHE_RSA_AES_256_GCM_SHA384,
    GH_SUITE_ECDHE_RSA_AES_128_GCM_SHA256,
    GH_SUITE_ECDHE_RSA_CHACHA20_POLY1305_SHA256,
    GH_SUITE_COUNT
};

enum gh_tls_version { GH_TLS12, GH_TLS13, GH_TLS_VERSION_COUNT };

/*
 * One version of a listener's settings. Immutable once handed to the engine and
 * reference-counted: each connection holds the version it was accepted under, so a
 * change applies to new connections while established ones keep theirs.
 * Owner: whoever holds a reference; gh_listener_conf_unref frees the last one.
 */
struct gh_listener_conf {
    atomic_uint refs;
    char id[64];
    char name[65];
    enum gh_protocol protocol;
    unsigned nbind;
    struct gh_sockaddr *bind; /* points into the same allocation */
    unsigned ntrusted;
    struct gh_ipmask *trusted; /* overrideProxyTrustedNetworks; empty = server-wide list */
    uint32_t backlog;
    bool nodelay, reuseaddr, reuseport;
    int rcvbuf, sndbuf, tos, ttl; /* 0 = not set: the system default applies */
    bool use_tls, tls_implicit, tls_ignore_client_order;
    uint16_t tls_disabled_suites;  /* bit (1 << enum gh_tls_suite) */
    uint8_t tls_disabled_versions; /* bit (1 << enum gh_tls_version) */
    uint32_t tls_timeout_ms;
    uint32_t max_connections;
};

extern const char *const gh_protocol_names[GH_PROTO_COUNT];  /* "smtp", ..., "manageSieve" */
extern const char *const gh_tls_suite_names[GH_SUITE_COUNT]; /* "tls13-aes-256-gcm-sha384" */
extern const char *const gh_tls_version_names[GH_TLS_VERSION_COUNT]; /* "tls12", "tls13" */

/* Allocates a conf with room for nbind addresses and ntrusted masks; refs = 1,
 * every other field zero. */
struct gh_listener_conf *gh_listener_conf_new(unsigned nbind, unsigned ntrusted);
struct gh_listener_conf *gh_listener_conf_ref(struct gh_listener_conf *c);
void gh_listener_conf_unref(struct gh_listener_conf *c);

#endif
