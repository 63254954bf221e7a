/*
 * addr: socket addresses ("127.0.0.1:25", "[::1]:25") and IP masks ("10.0.0.0/8"),
 * parsed strictly, written in one canonical form, and compared the way the kernel binds.
 */
#ifndef GH_ADDR_H
#define GH_ADDR_H
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/err.h"

#define GH_ADDR_TEXT 64 /* "[ffff:...:ffff]:65535" and a NUL fit */

/* An IP socket address only (no storage for other families): it sits in every connection,
 * three times, so it is kept to the size of an IPv6 address. */
struct gh_sockaddr {
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } u;
    socklen_t len;
};

struct gh_ipmask {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network order; 4 bytes used for AF_INET */
    uint8_t prefix;   /* 0-32 or 0-128 */
};

/* "IPv4:port" or "[IPv6]:port", port 1-65535. No host names, no surrounding space. */
bool gh_sockaddr_parse(const char *text, struct gh_sockaddr *out, gh_err *err);
/* Canonical text: "127.0.0.1:25", "[::1]:25". */
void gh_sockaddr_format(const struct gh_sockaddr *a, char out[GH_ADDR_TEXT]);
/* The same, with the text of a's address already made by gh_ip_format. */
void gh_sockaddr_format_ip(const struct gh_sockaddr *a, const char *ip, char out[GH_ADDR_TEXT]);
/* The address alone, no port; a v4-mapped IPv6 address is written as IPv4. */
void gh_ip_format(const struct sockaddr *sa, char out[GH_ADDR_TEXT]);
uint16_t gh_sockaddr_port(const struct gh_sockaddr *a);
/* Turns ::ffff:a.b.c.d into a.b.c.d in place; other addresses are left alone. */
void gh_sockaddr_unmap_v4(struct gh_sockaddr *a);
/* True when binding both would collide: same port and the same address, or one of
 * them a wildcard that covers the other ([::] covers IPv4 too, as Linux binds dual-stack). */
bool gh_sockaddr_conflict(const struct gh_sockaddr *a, const struct gh_sockaddr *b);
bool gh_sockaddr_equal(const struct gh_sockaddr *a, const struct gh_sockaddr *b);

/* "IP" or "IP/prefix"; host bits must be zero. */
bool gh_ipmask_parse(const char *text, struct gh_ipmask *out, gh_err *err);
void gh_ipmask_format(const struct gh_ipmask *m, char out[GH_ADDR_TEXT]);
/* An IPv4 mask also matches a v4-mapped IPv6 address. */
bool gh_ipmask_match(const struct gh_ipmask *m, const struct sockaddr *sa);
bool gh_ipmask_match_any(const struct gh_ipmask *masks, unsigned n, const struct sockaddr *sa);

#endif
