/*
 * table-t: the data of the address table, shared by the files of this folder only.
 */
#ifndef GH_SECURITY_TABLE_T_H
#define GH_SECURITY_TABLE_T_H
#include <stddef.h>
#include <stdint.h>

#include "security/security.h"

struct gh_sec_node {
    uint32_t child[2]; /* node indexes; 0 = none */
    uint32_t leaf;     /* leaf index + 1; 0 = no entry ends here */
};

struct gh_sec_leaf {
    int64_t expires_ms; /* wall clock; 0 = never */
    bool allowed;
};

/* Owner: the builder, then the published pointer (freed once no reader holds it). */
struct gh_sec_table {
    struct gh_sec_node *nodes; /* [0] IPv4 root, [1] IPv6 root */
    size_t nnodes, cap;
    struct gh_sec_leaf *leaves;
    size_t nleaves, leafcap, nentries;
    struct gh_sec_settings settings;
    char **paths; /* scanBanPaths globs; owned */
    unsigned npaths;
};

#endif
