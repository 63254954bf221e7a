/*
 * proxy_protocol: the PROXY protocol v1 and v2 header parser (HAProxy's spec). It is a
 * pure function over bytes, so it can be tested and fuzzed apart from the engine.
 */
#ifndef GH_PROXY_PROTOCOL_H
#define GH_PROXY_PROTOCOL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "net/addr.h"

#define GH_PROXY_V1_MAX 107
#define GH_PROXY_UNIQUE_ID_MAX 128
#define GH_PROXY_AUTHORITY_MAX 255

struct gh_proxy_header {
    int version;       /* 1 or 2 */
    bool local;        /* v2 LOCAL, or v1 UNKNOWN: keep the TCP peer address */
    struct gh_sockaddr src, dst; /* valid when !local */
    bool ssl;          /* v2 PP2_TYPE_SSL TLV with PP2_CLIENT_SSL set */
    char authority[GH_PROXY_AUTHORITY_MAX + 1]; /* PP2_TYPE_AUTHORITY, "" when absent */
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
 */
enum gh_proxy_result gh_proxy_parse(const uint8_t *buf, size_t len, size_t *need,
                                    struct gh_proxy_header *out, gh_err *err);

#endif
