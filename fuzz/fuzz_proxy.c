/*
 * fuzz_proxy: libFuzzer target for the PROXY protocol parser and writers. Beyond memory
 * safety it checks what the engine relies on when it peeks: a header is judged by its own
 * bytes only, a shorter read never gives a different answer, and *need is honest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy_protocol.h"

/* A broken promise is a crash, so libFuzzer keeps the input. */
static void check(int ok)
{
    if (!ok)
        abort();
}

static enum gh_proxy_result parse(const uint8_t *buf, size_t len, size_t *need,
                                  struct gh_proxy_header *h)
{
    gh_err err = {0};
    enum gh_proxy_result r = gh_proxy_parse(buf, len, need, h, &err);
    check(r != GH_PROXY_INVALID || err.msg[0] != 0); /* every refusal says why */
    return r;
}

static void parser_promises(const uint8_t *data, size_t size)
{
    struct gh_proxy_header h, h2;
    size_t need, need2;
    enum gh_proxy_result r = parse(data, size, &need, &h);
    /* Copied to an exact-size heap block so ASan sees any read past len. */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    if (r == GH_PROXY_DONE) {
        check(need > 0 && need <= size && need <= GH_PROXY_MAX);
        check(h.version == 1 || h.version == 2);
        /* The header alone parses the same: bytes after it play no part. */
        check(parse(copy, need, &need2, &h2) == GH_PROXY_DONE && need2 == need);
        check(memcmp(&h, &h2, sizeof h) == 0);
        /* One byte less is not enough. */
        check(parse(copy, need - 1, &need2, &h2) == GH_PROXY_NEED_MORE);
        check(need2 <= need);
        if (!h.local) {
            char a[GH_ADDR_TEXT];
            gh_sockaddr_format(&h.src, a);
            gh_sockaddr_format(&h.dst, a);
        }
        check(strlen(h.unique_id) % 2 == 0);
    } else if (r == GH_PROXY_NEED_MORE) {
        /* More is needed, never more than a peek buffer holds; a shorter read agrees. */
        check(need > size && need <= GH_PROXY_MAX);
        check(parse(copy, size / 2, &need2, &h2) == GH_PROXY_NEED_MORE && need2 <= need);
    } else {
        /* A prefix of something invalid may still look incomplete, but never whole:
         * were it whole, the longer input would be that same header. */
        check(parse(copy, size / 2, &need2, &h2) != GH_PROXY_DONE);
    }
    /* At the end of the stream the answer is final: the same, but never NEED_MORE. */
    gh_err err = {0};
    enum gh_proxy_result f = gh_proxy_parse_final(copy, size, &need2, &h2, &err);
    check(f == (r == GH_PROXY_NEED_MORE ? GH_PROXY_INVALID : r));
    check(f != GH_PROXY_INVALID || err.msg[0] != 0);
    free(copy);
}

/* Builds addresses from the input, writes both header versions, reads them back. */
static void writer_round_trip(const uint8_t *data, size_t size)
{
    if (size < 1 + 2 * 18)
        return;
    struct gh_sockaddr ends[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *p = data + 1 + 18 * i;
        memset(&ends[i], 0, sizeof ends[i]);
        if (data[0] & (1 << i)) {
            ends[i].u.v6.sin6_family = AF_INET6;
            memcpy(&ends[i].u.v6.sin6_addr, p, 16);
            memcpy(&ends[i].u.v6.sin6_port, p + 16, 2);
            ends[i].len = sizeof ends[i].u.v6;
        } else {
            ends[i].u.v4.sin_family = AF_INET;
            memcpy(&ends[i].u.v4.sin_addr, p, 4);
            memcpy(&ends[i].u.v4.sin_port, p + 16, 2);
            ends[i].len = sizeof ends[i].u.v4;
        }
    }
    bool ssl = data[0] & 4;
    char v1[GH_PROXY_V1_MAX + 1];
    uint8_t v2[GH_PROXY_V2_WRITE_MAX];
    size_t n1 = gh_proxy_write_v1(&ends[0], &ends[1], v1, sizeof v1);
    size_t n2 = gh_proxy_write_v2(&ends[0], &ends[1], ssl, v2, sizeof v2);
    check(n1 > 0 && n2 > 0);

    struct gh_proxy_header h;
    size_t need;
    const uint8_t *bufs[2] = {(const uint8_t *)v1, v2};
    size_t lens[2] = {n1, n2};
    for (int v = 0; v < 2; v++) {
        check(parse(bufs[v], lens[v], &need, &h) == GH_PROXY_DONE && need == lens[v]);
        check(!h.local && h.ssl == (v == 1 && ssl));
        /* What was sent is what is read; v4-mapped addresses (and IPv4 sent beside IPv6)
         * read as IPv4. */
        for (int i = 0; i < 2; i++) {
            struct gh_sockaddr want = ends[i];
            const struct gh_sockaddr *got = i ? &h.dst : &h.src;
            gh_sockaddr_unmap_v4(&want);
            char a[GH_ADDR_TEXT], b[GH_ADDR_TEXT];
            gh_sockaddr_format(&want, a);
            gh_sockaddr_format(got, b);
            check(strcmp(a, b) == 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parser_promises(data, size);
    writer_round_trip(data, size);
    return 0;
}
