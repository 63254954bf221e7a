/*
 * store-t: what a store backend provides. store.c picks the backend from the URL and
 * adds what every backend shares (fault injection); sqlite.c and postgres.c implement it.
 */
#ifndef GH_STORE_T_H
#define GH_STORE_T_H
#include "store/store.h"

struct gh_store_ops {
    bool (*begin)(struct gh_store *s, gh_err *err);
    bool (*commit)(struct gh_store *s, gh_err *err);
    void (*rollback)(struct gh_store *s);
    bool (*put)(struct gh_store *s, const char *type, const char *id, const char *json,
                gh_err *err);
    bool (*del)(struct gh_store *s, const char *type, const char *id, gh_err *err);
    bool (*list)(struct gh_store *s, const char *type,
                 bool (*fn)(const char *id, const char *json, void *arg), void *arg, gh_err *err);
    bool (*log_change)(struct gh_store *s, const char *type, const char *id, char op, uint64_t *seq,
                       gh_err *err);
    bool (*last_seq)(struct gh_store *s, const char *type, uint64_t *seq, gh_err *err);
    bool (*changes)(struct gh_store *s, const char *type, uint64_t since,
                    bool (*fn)(uint64_t seq, const char *id, char op, void *arg), void *arg,
                    gh_err *err);
    bool (*kv_get)(struct gh_store *s, const char *key, char **value, gh_err *err);
    bool (*kv_put)(struct gh_store *s, const char *key, const char *value, gh_err *err);
    /* shared stores only: waits up to timeout_ms for another node's change, or until
     * wake_fd is readable */
    void (*wait_change)(struct gh_store *s, int wake_fd, int timeout_ms);
    void (*close)(struct gh_store *s);
};

/* The part every backend's struct starts with. Owner: whoever opened the store. */
struct gh_store {
    const struct gh_store_ops *ops;
    bool shared;     /* several nodes write to it (PostgreSQL) */
    int fail_writes; /* fault injection for tests */
};

struct gh_store *gh_sqlite_open(const char *path, gh_err *err);
struct gh_store *gh_postgres_open(const char *url, gh_err *err);

#endif
