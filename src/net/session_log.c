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

/* The session line's fields, in the order written; values in gh_session_log's v[]. */
enum {
    F_LISTENER,
    F_CLIENT,
    F_PEER,
    F_LOCAL,
    F_PROTOCOL,
    F_TLS,
    F_CIPHER,
    F_SNI,
    F_RESUMED,
    F_DESTINATION,
    F_USER,
    F_PROXY_ID,
    F_BYTES_IN,
    F_BYTES_OUT,
    F_DURATION,
    F_END,
    F_COUNT
};
static const struct gh_log_key keys[F_COUNT] = {
    [F_LISTENER] = GH_LOG_KEY("listener", GH_LOG_FOREIGN),
    [F_CLIENT] = GH_LOG_KEY("client", GH_LOG_OWN),
    [F_PEER] = GH_LOG_KEY("peer", GH_LOG_OWN),
    [F_LOCAL] = GH_LOG_KEY("local", GH_LOG_OWN),
    [F_PROTOCOL] = GH_LOG_KEY("protocol", GH_LOG_OWN),
    [F_TLS] = GH_LOG_KEY("tls", GH_LOG_OWN),
    [F_CIPHER] = GH_LOG_KEY("cipher", GH_LOG_OWN),
    [F_SNI] = GH_LOG_KEY("sni", GH_LOG_FOREIGN),
    [F_RESUMED] = GH_LOG_KEY("resumed", GH_LOG_NUM),
    [F_DESTINATION] = GH_LOG_KEY("destination", GH_LOG_FOREIGN),
    [F_USER] = GH_LOG_KEY("user", GH_LOG_FOREIGN),
    [F_PROXY_ID] = GH_LOG_KEY("proxyId", GH_LOG_FOREIGN),
    [F_BYTES_IN] = GH_LOG_KEY("bytesIn", GH_LOG_NUM),
    [F_BYTES_OUT] = GH_LOG_KEY("bytesOut", GH_LOG_NUM),
    [F_DURATION] = GH_LOG_KEY("duration", GH_LOG_NUM),
    [F_END] = GH_LOG_KEY("end", GH_LOG_OWN),
};

/* What a TLS session adds to the line; nothing for a plain one. */
static void tls_fields(SSL *ssl, const char *v[F_COUNT])
{
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    v[F_TLS] = tls_version(ssl);
    v[F_CIPHER] = SSL_get_cipher_name(ssl);
    v[F_SNI] = sni ? sni : "";
    v[F_RESUMED] = SSL_session_reused(ssl) ? "true" : "false";
}

void gh_session_log(struct gh_conn *c, uint64_t us)
{
    char peer[GH_ADDR_TEXT], tcp[GH_ADDR_TEXT], in[24], out[24], dur[32];
    const char *v[F_COUNT] = {0};
    gh_sockaddr_format_ip(&c->peer, c->peer_text, peer); /* its address made at accept */
    v[F_CLIENT] = peer;
    if (gh_session_peer_differs(c)) {
        gh_sockaddr_format(&c->tcp_peer, tcp);
        v[F_PEER] = tcp;
    }
    gh_conn_fill_local(c);
    v[F_LOCAL] = c->local.len ? local_text(&c->local) : "";
    v[F_LISTENER] = c->conf ? c->conf->name : "-";
    v[F_PROTOCOL] = c->conf ? gh_protocol_names[c->conf->protocol] : "-";
    SSL *ssl = c->ssl && SSL_is_init_finished(c->ssl) ? c->ssl : NULL;
    if (ssl)
        tls_fields(ssl, v);
    else
        v[F_TLS] = c->tls_active ? "proxy" : "none";
    v[F_DESTINATION] = gh_relay_destination(c);
    v[F_USER] = c->login_user;
    v[F_PROXY_ID] = c->proxy_unique_id;
    v[F_BYTES_IN] = u64_text(c->bytes_in, in);
    v[F_BYTES_OUT] = u64_text(c->bytes_out, out);
    duration_text(us, dur);
    v[F_DURATION] = dur;
    v[F_END] = gh_session_end_names[c->end];
    gh_log_fields("session", keys, v, F_COUNT);
}
