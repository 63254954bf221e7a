/*
 * table: the immutable address table — one binary prefix tree per family, built once and
 * then only read. Nodes sit in one array and name their children by index, so a look-up
 * is at most 32 or 128 steps down an array whatever the number of entries, and freeing the
 * table is a handful of free() calls.
 */
#include <stdlib.h>
#include <string.h>

#include "security/table-t.h"

#define NO_NODE 0 /* index 0 is the IPv4 root, never anyone's child */

struct gh_sec_table *gh_sec_table_new(void)
{
    struct gh_sec_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cap = 64;
    t->nodes = calloc(t->cap, sizeof *t->nodes);
    if (!t->nodes) {
        free(t);
        return NULL;
    }
    t->nnodes = 2; /* the IPv4 and IPv6 roots */
    return t;
}

static uint32_t new_node(struct gh_sec_table *t)
{
    if (t->nnodes == t->cap) {
        size_t cap = t->cap * 2;
        struct gh_sec_node *n = realloc(t->nodes, cap * sizeof *n);
        if (!n)
            return NO_NODE;
        memset(n + t->cap, 0, (cap - t->cap) * sizeof *n);
        t->nodes = n;
        t->cap = cap;
    }
    return (uint32_t)t->nnodes++;
}

static uint32_t new_leaf(struct gh_sec_table *t, bool allowed, int64_t expires_ms)
{
    if (t->nleaves == t->leafcap) {
        size_t cap = t->leafcap ? t->leafcap * 2 : 64;
        struct gh_sec_leaf *l = realloc(t->leaves, cap * sizeof *l);
        if (!l)
            return 0;
        t->leaves = l;
        t->leafcap = cap;
    }
    t->leaves[t->nleaves] = (struct gh_sec_leaf){.expires_ms = expires_ms, .allowed = allowed};
    return (uint32_t)++t->nleaves;
}

static inline unsigned bit_at(const uint8_t *ip, unsigned i)
{
    return (ip[i >> 3] >> (7 - (i & 7))) & 1;
}

bool gh_sec_table_add(struct gh_sec_table *t, const struct gh_ipmask *m, bool allowed,
                      int64_t expires_ms)
{
    uint32_t cur = m->family == AF_INET ? 0 : 1;
    for (unsigned i = 0; i < m->prefix; i++) {
        unsigned b = bit_at(m->addr, i);
        if (t->nodes[cur].child[b] == NO_NODE) {
            uint32_t n = new_node(t); /* may move t->nodes */
            if (n == NO_NODE)
                return false;
            t->nodes[cur].child[b] = n;
        }
        cur = t->nodes[cur].child[b];
    }
    uint32_t have = t->nodes[cur].leaf;
    if (have) {
        struct gh_sec_leaf *l = &t->leaves[have - 1];
        if (l->allowed && !allowed)
            return true; /* allowed wins a tie */
        if (l->allowed == allowed) {
            /* the same range twice: it applies for as long as the longer one */
            if (l->expires_ms && (!expires_ms || expires_ms > l->expires_ms))
                l->expires_ms = expires_ms;
            return true;
        }
        l->allowed = allowed;
        l->expires_ms = expires_ms;
        return true;
    }
    uint32_t leaf = new_leaf(t, allowed, expires_ms);
    if (!leaf)
        return false;
    t->nodes[cur].leaf = leaf;
    t->nentries++;
    return true;
}

bool gh_sec_table_set_settings(struct gh_sec_table *t, const struct gh_sec_settings *s,
                               const char *const *scan_paths, unsigned npaths)
{
    t->settings = *s;
    for (unsigned i = 0; i < t->npaths; i++)
        free(t->paths[i]);
    free(t->paths);
    t->paths = npaths ? calloc(npaths, sizeof *t->paths) : NULL;
    t->npaths = 0;
    if (npaths && !t->paths)
        return false;
    for (unsigned i = 0; i < npaths; i++) {
        if (!(t->paths[i] = strdup(scan_paths[i])))
            return false;
        t->npaths++;
    }
    return true;
}

enum gh_sec_verdict gh_sec_table_lookup(const struct gh_sec_table *t, const struct sockaddr *sa,
                                        int64_t now_ms)
{
    if (!t || !t->nentries)
        return GH_SEC_UNLISTED;
    const uint8_t *ip;
    unsigned bits;
    uint32_t cur;
    if (sa->sa_family == AF_INET) {
        ip = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        bits = 32;
        cur = 0;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            ip = &a6->s6_addr[12];
            bits = 32;
            cur = 0;
        } else {
            ip = a6->s6_addr;
            bits = 128;
            cur = 1;
        }
    } else {
        return GH_SEC_UNLISTED;
    }
    enum gh_sec_verdict best = GH_SEC_UNLISTED;
    for (unsigned i = 0;; i++) {
        const struct gh_sec_node *n = &t->nodes[cur];
        if (n->leaf) {
            const struct gh_sec_leaf *l = &t->leaves[n->leaf - 1];
            if (!l->expires_ms || l->expires_ms > now_ms)
                best = l->allowed ? GH_SEC_ALLOWED : GH_SEC_BLOCKED;
        }
        if (i == bits || !(cur = n->child[bit_at(ip, i)]))
            break;
    }
    return best;
}

unsigned gh_sec_table_size(const struct gh_sec_table *t)
{
    return t ? (unsigned)t->nentries : 0;
}

void gh_sec_table_free(struct gh_sec_table *t)
{
    if (!t)
        return;
    for (unsigned i = 0; i < t->npaths; i++)
        free(t->paths[i]);
    free(t->paths);
    free(t->nodes);
    free(t->leaves);
    free(t);
}

bool gh_glob_match(const char *p, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == '?' || *p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return !*p;
}
