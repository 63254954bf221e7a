/*
 * fuzz_security: the parts of the address rules that see network input — scanBanPaths globs
 * against request paths (the first byte says where the pattern ends), and address-table
 * look-ups of arbitrary addresses in a table built from the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "security/security.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = data[0] < size - 1 ? data[0] : size - 1;
    char *pattern = strndup((const char *)data + 1, cut);
    char *text = strndup((const char *)data + 1 + cut, size - 1 - cut);
    if (pattern && text)
        gh_glob_match(pattern, text);
    free(pattern);
    free(text);

    struct gh_sec_table *t = gh_sec_table_new();
    for (size_t i = 0; t && i + 18 <= size; i += 18) {
        struct gh_ipmask m = {.family = data[i] & 1 ? AF_INET6 : AF_INET};
        memcpy(m.addr, data + i + 1, 16);
        m.prefix = (uint8_t)(data[i + 17] % (m.family == AF_INET ? 33 : 129));
        gh_sec_table_add(t, &m, data[i] & 2, (data[i] & 4) ? 1000 : 0);
        struct gh_sockaddr a = {0};
        if (m.family == AF_INET) {
            a.u.v4.sin_family = AF_INET;
            memcpy(&a.u.v4.sin_addr, data + i + 1, 4);
        } else {
            a.u.v6.sin6_family = AF_INET6;
            memcpy(&a.u.v6.sin6_addr, data + i + 1, 16);
        }
        gh_sec_table_lookup(t, &a.u.sa, 500);
    }
    gh_sec_table_free(t);
    return 0;
}
