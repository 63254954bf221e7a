/*
 * session_log: builds the fields of the `session` line from a closing connection. Local
 * addresses of wildcard listeners cost a getsockname, done here once rather than at accept;
 * each thread keeps the text of the last local address it wrote. Only what the
 * session showed is logged: addresses, TLS parameters, names, counts — never a secret
 * or a byte of the dialogue.
 */
#include "net/session_log.h"

#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "net/conn.h"
#include "net/handoff.h"

const char *const gh_session_end_names[] = {
    [GH_END_UNSET] = "clientClosed",
    [GH_END_HANDED_OFF] = "handedOff",
    [GH_END_CLIENT_CLOSED] = "clientClosed",
    [GH_END_TIMEOUT] = "timeout",
    [GH_END_REFUSED] = "refused",
    [GH_END_BLOCKED] = "blocked",
    [GH_END_PROTOCOL_ERROR] = "protocolError",
    [GH_END_SHUTDOWN] = "shutdown",
};

bool gh_session_peer_differs(const struct gh_conn *c)
{
    const struct gh_sockaddr *a = &c->peer, *b = &c->tcp_peer;
    if (!b->len)
        return false;
    struct gh_sockaddr tcp = *b;
    gh_sockaddr_unmap_v4(&tcp);
    if (a->u.sa.sa_family != tcp.u.sa.sa_family)
        return true;
    if (a->u.sa.sa_family == AF_INET)
        return memcmp(&a->u.v4.sin_addr, &tcp.u.v4.sin_addr, sizeof tcp.u.v4.sin_addr) ||
               a->u.v4.sin_port != tcp.u.v4.sin_port;
    if (a->u.sa.sa_family == AF_INET6)
        return memcmp(&a->u.v6.sin6_addr, &tcp.u.v6.sin6_addr, sizeof tcp.u.v6.sin6_addr) ||
               a->u.v6.sin6_port != tcp.u.v6.sin6_port;
    return false;
}

static const char *tls_version(SSL *ssl)
{
    switch (SSL_version(ssl)) {
    case TLS1_3_VERSION:
        return "tls13";
    case TLS1_2_VERSION:
        return "tls12";
    default:
        return "other";
    }
}

/* The last local address this thread wrote: a worker's sessions share a few listening
 * addresses, so most lines take its text with a compare instead of formatting it again. */
static _Thread_local struct {
    struct gh_sockaddr addr;
    char text[GH_ADDR_TEXT];
} last_local;

static const char *local_text(const struct gh_sockaddr *a)
{
    bool inet = a->u.sa.sa_family == AF_INET || a->u.sa.sa_family == AF_INET6;
    if (!inet || !gh_sockaddr_equal(a, &last_local.addr)) {
        gh_sockaddr_format(a, last_local.text);
        last_local.addr = *a;
    }
    return last_local.text;
}

/* Numbers without printf: this runs once per session. */
static char *u64_text(uint64_t v, char out[24])
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, tmp + i, sizeof tmp - i);
    out[sizeof tmp - i] = 0;
    return out;
}

/* Seconds with three decimals. */
static void duration_text(uint64_t us, char out[32])
{
    uint64_t ms = (us + 500) / 1000;
    size_t n = strlen(u64_text(ms / 1000, out));
    out[n] = '.';
    out[n + 1] = (char)('0' + ms % 1000 / 100);
    out[n + 2] = (char)('0' + ms % 100 / 10);
    out[n + 3] = (char)('0' + ms % 10);
    out[n + 4] = 0;
}

void gh_session_log(struct gh_conn *c, uint64_t us)
{
    char peer[GH_ADDR_TEXT], tcp[GH_ADDR_TEXT], in[24], out[24], dur[32];
    gh_sockaddr_format_ip(&c->peer, c->peer_text, peer); /* its address made at accept */
    bool differs = gh_session_peer_differs(c);
    if (differs)
        gh_sockaddr_format(&c->tcp_peer, tcp);
    gh_conn_fill_local(c);
    const char *local = c->local.len ? local_text(&c->local) : "";
    u64_text(c->bytes_in, in);
    u64_text(c->bytes_out, out);
    duration_text(us, dur);
    SSL *ssl = c->ssl && SSL_is_init_finished(c->ssl) ? c->ssl : NULL;
    const char *tls = ssl ? tls_version(ssl) : c->tls_active ? "proxy" : "none";
    const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    struct gh_log_field f[] = {
        GH_LOG_FIELD("listener", c->conf ? c->conf->name : "-", GH_LOG_FOREIGN),
        GH_LOG_FIELD("client", peer, GH_LOG_OWN),
        GH_LOG_FIELD("peer", differs ? tcp : NULL, GH_LOG_OWN),
        GH_LOG_FIELD("local", local, GH_LOG_OWN),
        GH_LOG_FIELD("protocol", c->conf ? gh_protocol_names[c->conf->protocol] : "-", GH_LOG_OWN),
        GH_LOG_FIELD("tls", tls, GH_LOG_OWN),
        GH_LOG_FIELD("cipher", ssl ? SSL_get_cipher_name(ssl) : NULL, GH_LOG_OWN),
        GH_LOG_FIELD("sni", ssl ? (sni ? sni : "") : NULL, GH_LOG_FOREIGN),
        GH_LOG_FIELD("resumed", ssl ? (SSL_session_reused(ssl) ? "true" : "false") : NULL,
                     GH_LOG_NUM),
        GH_LOG_FIELD("destination", gh_relay_destination(c), GH_LOG_FOREIGN),
        GH_LOG_FIELD("user", c->login_user, GH_LOG_FOREIGN),
        GH_LOG_FIELD("proxyId", c->proxy_unique_id, GH_LOG_FOREIGN),
        GH_LOG_FIELD("bytesIn", in, GH_LOG_NUM),
        GH_LOG_FIELD("bytesOut", out, GH_LOG_NUM),
        GH_LOG_FIELD("duration", dur, GH_LOG_NUM),
        GH_LOG_FIELD("end", gh_session_end_names[c->end], GH_LOG_OWN),
    };
    gh_log_fields("session", f, sizeof f / sizeof f[0]);
}
