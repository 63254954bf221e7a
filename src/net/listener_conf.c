/*
 * listener_conf: allocation and reference counting of listener settings snapshots,
 * and the names of the enums as the management API spells them.
 */
#include "net/listener-t.h"

#include <stdlib.h>

const char *const gh_protocol_names[GH_PROTO_COUNT] = {
    "smtp", "lmtp", "http", "imap", "pop3", "manageSieve",
};

const char *const gh_tls_suite_names[GH_SUITE_COUNT] = {
    "tls13-aes-256-gcm-sha384",
    "tls13-aes-128-gcm-sha256",
    "tls13-chacha20-poly1305-sha256",
    "tls-ecdhe-ecdsa-with-aes-256-gcm-sha384",
    "tls-ecdhe-ecdsa-with-aes-128-gcm-sha256",
    "tls-ecdhe-ecdsa-with-chacha20-poly1305-sha256",
    "tls-ecdhe-rsa-with-aes-256-gcm-sha384",
    "tls-ecdhe-rsa-with-aes-128-gcm-sha256",
    "tls-ecdhe-rsa-with-chacha20-poly1305-sha256",
};

const char *const gh_tls_version_names[GH_TLS_VERSION_COUNT] = {"tls12", "tls13"};

struct gh_listener_conf *gh_listener_conf_new(unsigned nbind, unsigned ntrusted)
{
    size_t size = sizeof(struct gh_listener_conf) + nbind * sizeof(struct gh_sockaddr) +
                  ntrusted * sizeof(struct gh_ipmask);
    struct gh_listener_conf *c = calloc(1, size);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    c->nbind = nbind;
    c->bind = (struct gh_sockaddr *)(c + 1);
    c->ntrusted = ntrusted;
    c->trusted = (struct gh_ipmask *)(c->bind + nbind);
    return c;
}

struct gh_listener_conf *gh_listener_conf_ref(struct gh_listener_conf *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void gh_listener_conf_unref(struct gh_listener_conf *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        free(c);
}
