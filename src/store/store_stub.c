/* placeholder store until the SQLite one lands. */
#include "store/store.h"

#include <stdlib.h>

struct gh_store {
    int unused;
};

struct gh_store *gh_store_open(const char *url, gh_err *err)
{
    return calloc(1, sizeof(struct gh_store));
}
void gh_store_close(struct gh_store *s)
{
    free(s);
}
