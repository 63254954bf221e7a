/*
 * lookup: nanoseconds per address-table look-up, empty against 100,000 entries placed
 * where the walk goes deepest (the same entries as bench/security.sh), for addresses near
 * them. Built and run by bench/security.sh; bounded (10 million look-ups per table).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "security/security.h"

#define LOOKUPS 10000000u

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double ns_per_lookup(const struct gh_sec_table *t)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    unsigned hits = 0;
    double start = now_s();
    for (unsigned i = 0; i < LOOKUPS; i++) {
        a.sin_addr.s_addr = htonl(0x7f000001u + (i & 15)); /* 127.0.0.1-16, as loadgen */
        hits += gh_sec_table_lookup(t, (const struct sockaddr *)&a, 1) != GH_SEC_UNLISTED;
    }
    double ns = (now_s() - start) * 1e9 / LOOKUPS;
    if (hits)
        fprintf(stderr, "unexpected hits: %u\n", hits);
    return ns;
}

int main(void)
{
    struct gh_sec_table *empty = gh_sec_table_new(), *full = gh_sec_table_new();
    if (!empty || !full)
        return 1;
    struct gh_ipmask m = {.family = AF_INET};
    for (unsigned i = 0; i < 100000; i++) {
        uint32_t addr;
        m.prefix = 32;
        if (i < 239) {
            addr = 0x7f000000u + 17 + i;
        } else if (i < 50000) {
            addr = 0x7f010000u + i;
        } else {
            addr = 0x0a000000u + ((i - 50000) << 8);
            m.prefix = 24;
        }
        addr = htonl(addr);
        memcpy(m.addr, &addr, 4);
        if (!gh_sec_table_add(full, &m, false, 0))
            return 1;
    }
    double e = ns_per_lookup(empty), f = ns_per_lookup(full);
    printf("LOOKUP entries=0 ns=%.1f\nLOOKUP entries=%u ns=%.1f\n", e, gh_sec_table_size(full), f);
    gh_sec_table_free(empty);
    gh_sec_table_free(full);
    return 0;
}
