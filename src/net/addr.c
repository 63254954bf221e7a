/*
 * addr: strict parsing of socket addresses and IP masks. inet_pton does the address
 * itself; this file owns the brackets, ports, prefixes and the rules around them.
 */
#include "net/addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool parse_port(const char *s, uint16_t *port)
{
    if (!*s || strlen(s) > 5)
        return false;
    unsigned v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

bool gh_sockaddr_parse(const char *text, struct gh_sockaddr *out, gh_err *err)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_text;
    memset(out, 0, sizeof *out);
    size_t tlen = strlen(text);
    if (tlen == 0 || tlen >= GH_ADDR_TEXT)
        return gh_fail(err, "\"%.80s\" is not an address: expected IPv4:port or [IPv6]:port", text);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host)
            return gh_fail(err, "\"%s\" is not an address: expected [IPv6]:port", text);
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = 0;
        port_text = close + 2;
        if (inet_pton(AF_INET6, host, &out->u.v6.sin6_addr) != 1)
            return gh_fail(err, "\"%s\": \"%s\" is not an IPv6 address", text, host);
        out->u.v6.sin6_family = AF_INET6;
        out->len = sizeof out->u.v6;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon || (size_t)(colon - text) >= sizeof host)
            return gh_fail(err, "\"%s\" is not an address: expected IPv4:port or [IPv6]:port",
                           text);
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = 0;
        port_text = colon + 1;
        if (inet_pton(AF_INET, host, &out->u.v4.sin_addr) != 1)
            return gh_fail(err, "\"%s\": \"%s\" is not an IPv4 address", text, host);
        out->u.v4.sin_family = AF_INET;
        out->len = sizeof out->u.v4;
    }
    uint16_t port;
    if (!parse_port(port_text, &port))
        return gh_fail(err, "\"%s\": the port must be a number from 1 to 65535", text);
    if (out->u.sa.sa_family == AF_INET)
        out->u.v4.sin_port = htons(port);
    else
        out->u.v6.sin6_port = htons(port);
    return true;
}

/* Dotted quad by hand: every accepted connection formats its peer, and inet_ntop costs
 * as much as the rest of a short SMTP session's own work together. */
static void format_v4(const uint8_t *b, char *out)
{
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *out++ = (char)('0' + v / 100);
        if (v >= 10)
            *out++ = (char)('0' + v / 10 % 10);
        *out++ = (char)('0' + v % 10);
        *out++ = i < 3 ? '.' : '\0';
    }
}

void gh_ip_format(const struct sockaddr *sa, char out[GH_ADDR_TEXT])
{
    out[0] = 0;
    if (sa->sa_family == AF_INET) {
        format_v4((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, out);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            format_v4(&a->s6_addr[12], out);
        else
            inet_ntop(AF_INET6, a, out, GH_ADDR_TEXT);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, GH_ADDR_TEXT, "unix");
    }
}

uint16_t gh_sockaddr_port(const struct gh_sockaddr *a)
{
    if (a->u.sa.sa_family == AF_INET)
        return ntohs(a->u.v4.sin_port);
    if (a->u.sa.sa_family == AF_INET6)
        return ntohs(a->u.v6.sin6_port);
    return 0;
}

/* By hand as well: a session line formats two addresses. An address's text is at most 45
 * characters (INET6_ADDRSTRLEN), so brackets, colon and port fit. */
void gh_sockaddr_format_ip(const struct gh_sockaddr *a, const char *ip, char out[GH_ADDR_TEXT])
{
    bool v6 = a->u.sa.sa_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&a->u.v6.sin6_addr);
    size_t n = 0, len = strnlen(ip, GH_ADDR_TEXT - 9);
    if (v6)
        out[n++] = '[';
    memcpy(out + n, ip, len);
    n += len;
    if (v6)
        out[n++] = ']';
    out[n++] = ':';
    char digits[5];
    size_t d = 0;
    unsigned port = gh_sockaddr_port(a);
    do {
        digits[d++] = (char)('0' + port % 10);
        port /= 10;
    } while (port);
    while (d)
        out[n++] = digits[--d];
    out[n] = 0;
}

void gh_sockaddr_format(const struct gh_sockaddr *a, char out[GH_ADDR_TEXT])
{
    char ip[GH_ADDR_TEXT];
    gh_ip_format(&a->u.sa, ip);
    gh_sockaddr_format_ip(a, ip, out);
}

void gh_sockaddr_unmap_v4(struct gh_sockaddr *a)
{
    if (a->u.sa.sa_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&a->u.v6.sin6_addr))
        return;
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = a->u.v6.sin6_port};
    memcpy(&v4.sin_addr, &a->u.v6.sin6_addr.s6_addr[12], 4);
    memset(&a->u, 0, sizeof a->u);
    a->u.v4 = v4;
    a->len = sizeof v4;
}

static bool is_wildcard(const struct gh_sockaddr *a)
{
    if (a->u.sa.sa_family == AF_INET)
        return a->u.v4.sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&a->u.v6.sin6_addr);
}

bool gh_sockaddr_equal(const struct gh_sockaddr *a, const struct gh_sockaddr *b)
{
    if (a->u.sa.sa_family != b->u.sa.sa_family || gh_sockaddr_port(a) != gh_sockaddr_port(b))
        return false;
    if (a->u.sa.sa_family == AF_INET)
        return a->u.v4.sin_addr.s_addr == b->u.v4.sin_addr.s_addr;
    return memcmp(&a->u.v6.sin6_addr, &b->u.v6.sin6_addr, 16) == 0;
}

bool gh_sockaddr_conflict(const struct gh_sockaddr *x, const struct gh_sockaddr *y)
{
    /* The kernel binds ::ffff:a.b.c.d as the IPv4 address itself (EADDRINUSE both ways). */
    struct gh_sockaddr ux = *x, uy = *y;
    gh_sockaddr_unmap_v4(&ux);
    gh_sockaddr_unmap_v4(&uy);
    const struct gh_sockaddr *a = &ux, *b = &uy;
    if (gh_sockaddr_port(a) != gh_sockaddr_port(b))
        return false;
    if (gh_sockaddr_equal(a, b))
        return true;
    int fa = a->u.sa.sa_family, fb = b->u.sa.sa_family;
    /* [::] binds dual-stack on Linux, so it covers every IPv4 address of the port. */
    if ((fa == AF_INET6 && is_wildcard(a)) || (fb == AF_INET6 && is_wildcard(b)))
        return true;
    if (fa == fb && (is_wildcard(a) || is_wildcard(b)))
        return true;
    return false;
}

bool gh_ipmask_parse(const char *text, struct gh_ipmask *out, gh_err *err)
{
    char host[INET6_ADDRSTRLEN + 1];
    memset(out, 0, sizeof *out);
    const char *slash = strchr(text, '/');
    size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
    if (hlen == 0 || hlen >= sizeof host)
        return gh_fail(err, "\"%.80s\" is not an IP address or CIDR mask", text);
    memcpy(host, text, hlen);
    host[hlen] = 0;
    unsigned max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return gh_fail(err, "\"%.80s\": \"%s\" is not an IP address", text, host);
    }
    unsigned prefix = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return gh_fail(err, "\"%s\": the prefix length must be 0-%u", text, max);
        prefix = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return gh_fail(err, "\"%s\": the prefix length must be 0-%u", text, max);
            prefix = prefix * 10 + (unsigned)(*p - '0');
        }
        if (prefix > max)
            return gh_fail(err, "\"%s\": the prefix length must be 0-%u", text, max);
    }
    out->prefix = (uint8_t)prefix;
    for (unsigned bit = prefix; bit < max; bit++) {
        if (out->addr[bit / 8] & (0x80 >> (bit % 8))) {
            char net[GH_ADDR_TEXT];
            struct gh_ipmask fixed = *out;
            for (unsigned b = prefix; b < max; b++)
                fixed.addr[b / 8] &= (uint8_t) ~(0x80 >> (b % 8));
            gh_ipmask_format(&fixed, net);
            return gh_fail(err, "\"%s\" has host bits set; did you mean \"%s\"?", text, net);
        }
    }
    return true;
}

void gh_ipmask_format(const struct gh_ipmask *m, char out[GH_ADDR_TEXT])
{
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(m->family, m->addr, ip, sizeof ip);
    unsigned max = m->family == AF_INET ? 32 : 128;
    if (m->prefix == max)
        snprintf(out, GH_ADDR_TEXT, "%s", ip);
    else
        snprintf(out, GH_ADDR_TEXT, "%s/%u", ip, m->prefix);
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned bytes = prefix / 8, bits = prefix % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (!bits)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool gh_ipmask_match(const struct gh_ipmask *m, const struct sockaddr *sa)
{
    const uint8_t *ip;
    int family = sa->sa_family;
    if (family == AF_INET) {
        ip = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        ip = a6->s6_addr;
        /* An IPv6 mask sees the mapped address as IPv6; an IPv4 mask sees the IPv4 inside. */
        if (IN6_IS_ADDR_V4MAPPED(a6) && m->family == AF_INET) {
            family = AF_INET;
            ip = &a6->s6_addr[12];
        }
    } else {
        return false;
    }
    return family == m->family && prefix_equal(ip, m->addr, m->prefix);
}

bool gh_ipmask_match_any(const struct gh_ipmask *masks, unsigned n, const struct sockaddr *sa)
{
    for (unsigned i = 0; i < n; i++)
        if (gh_ipmask_match(&masks[i], sa))
            return true;
    return false;
}
