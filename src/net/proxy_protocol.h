/*
 * proxy_protocol: the PROXY protocol v1 and v2 header parser (HAProxy's spec). It is a
 * pure function over bytes, so it can be tested and fuzzed apart from the engine. The
 * writers build the header Gatehouse sends to a destination that asked for one.
 */
#ifndef GH_PROXY_PROTOCOL_H
#define GH_PROXY_PROTOCOL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "net/addr.h"

#define GH_PROXY_V1_MAX        107
#define GH_PROXY_UNIQUE_ID_MAX 128
#define GH_PROXY_AUTHORITY_MAX 255
/* The longest v2 header accepted (16-byte preamble, addresses and TLVs). Load balancers
 * send well under this; a longer one is refused rather than buffered. */
#define GH_PROXY_V2_MAX 4096
/* A peek buffer of this size holds any header gh_proxy_parse accepts. */
#define GH_PROXY_MAX GH_PROXY_V2_MAX

struct gh_proxy_header {
    int version;                 /* 1 or 2 */
    bool local;                  /* v2 LOCAL, or v1 UNKNOWN: keep the TCP peer address */
    struct gh_sockaddr src, dst; /* valid when !local; v4-mapped IPv6 is given as IPv4 */
    bool ssl;                    /* v2 PP2_TYPE_SSL TLV with PP2_CLIENT_SSL set */
    char authority[GH_PROXY_AUTHORITY_MAX + 1];     /* PP2_TYPE_AUTHORITY, "" when absent */
    char unique_id[GH_PROXY_UNIQUE_ID_MAX * 2 + 1]; /* PP2_TYPE_UNIQUE_ID as hex, "" when absent */
};

enum gh_proxy_result {
    GH_PROXY_NEED_MORE, /* a valid prefix: read more (up to *need bytes in all) */
    GH_PROXY_DONE,      /* a whole header of *need bytes was parsed into out */
    GH_PROXY_INVALID    /* not a valid header; err says why */
};

/*
 * Parses the header at the start of buf. Never reads past len, never consumes bytes
 * after the header: *need is the header's full length once it is known (for NEED_MORE,
 * the number of bytes that must be available to go on; the caller peeks that many).
 *
 * For NEED_MORE, *need is the fewest bytes the header can have given what was seen:
 * 16 + its length for v2 once the preamble is in, and len + 1 (at least 15, at most 107)
 * for v1, whose end is only known at the CRLF. Peeking more is harmless, since nothing is
 * consumed until DONE says how many bytes the header took. A prefix that can no longer
 * become a header is INVALID at once, so a peer sending no header is refused on its first
 * bytes rather than at the time-out.
 */
enum gh_proxy_result gh_proxy_parse(const uint8_t *buf, size_t len, size_t *need,
                                    struct gh_proxy_header *out, gh_err *err);

/*
 * As gh_proxy_parse, for bytes after which the peer has closed its side: nothing more will
 * come, so a valid prefix (a truncated header, a bare v2 signature) is INVALID at once,
 * with a message saying how much of the header arrived, instead of NEED_MORE.
 */
enum gh_proxy_result gh_proxy_parse_final(const uint8_t *buf, size_t len, size_t *need,
                                          struct gh_proxy_header *out, gh_err *err);

/* CRC32c (Castagnoli), chained: start with crc = 0 and pass each result on. */
uint32_t gh_proxy_crc32c(uint32_t crc, const void *data, size_t len);

/* Room gh_proxy_write_v2 needs at most: preamble, IPv6 addresses, SSL and CRC32c TLVs. */
#define GH_PROXY_V2_WRITE_MAX (16 + 36 + 8 + 7)

/*
 * Write the header telling a backend that the client src talks to dst, and return its
 * length (0 when cap is too small). Addresses that are not both IP become v1 "UNKNOWN" /
 * v2 LOCAL; an IPv4 and an IPv6 address are both sent as IPv6. v2 carries a CRC32c TLV,
 * and the SSL TLV with PP2_CLIENT_SSL when ssl is set.
 */
size_t gh_proxy_write_v1(const struct gh_sockaddr *src, const struct gh_sockaddr *dst, char *buf,
                         size_t cap);
size_t gh_proxy_write_v2(const struct gh_sockaddr *src, const struct gh_sockaddr *dst, bool ssl,
                         uint8_t *buf, size_t cap);

#endif
