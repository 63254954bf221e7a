/*
 * store: picks the backend from the store URL and forwards each call to it, adding what
 * all backends share: the fault-injection hook tests use to make writes fail.
 */
#include <poll.h>
#include <string.h>

#include "store/store-t.h"

struct gh_store *gh_store_open(const char *url, gh_err *err)
{
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13))
        return gh_postgres_open(url, err);
    if (strncmp(url, "sqlite:", 7) || !url[7]) {
        gh_fail(err, "store URL \"%s\": expected sqlite:PATH or postgres://...", url);
        return NULL;
    }
    return gh_sqlite_open(url + 7, err);
}

void gh_store_close(struct gh_store *s)
{
    if (s)
        s->ops->close(s);
}

void gh_store_fail_writes(struct gh_store *s, int n)
{
    s->fail_writes = n;
}

static bool injected_failure(struct gh_store *s, gh_err *err)
{
    if (s->fail_writes <= 0)
        return false;
    s->fail_writes--;
    gh_fail(err, "store: database or disk is full (injected)");
    return true;
}

bool gh_store_begin(struct gh_store *s, gh_err *err)
{
    return s->ops->begin(s, err);
}

bool gh_store_commit(struct gh_store *s, gh_err *err)
{
    if (injected_failure(s, err)) {
        s->ops->rollback(s);
        return false;
    }
    return s->ops->commit(s, err);
}

void gh_store_rollback(struct gh_store *s)
{
    s->ops->rollback(s);
}

bool gh_store_put(struct gh_store *s, const char *type, const char *id, const char *json,
                  gh_err *err)
{
    return !injected_failure(s, err) && s->ops->put(s, type, id, json, err);
}

bool gh_store_delete(struct gh_store *s, const char *type, const char *id, gh_err *err)
{
    return !injected_failure(s, err) && s->ops->del(s, type, id, err);
}

bool gh_store_list(struct gh_store *s, const char *type,
                   bool (*fn)(const char *id, const char *json, void *arg), void *arg, gh_err *err)
{
    return s->ops->list(s, type, fn, arg, err);
}

bool gh_store_log_change(struct gh_store *s, const char *type, const char *id, char op,
                         uint64_t *seq, gh_err *err)
{
    return !injected_failure(s, err) && s->ops->log_change(s, type, id, op, seq, err);
}

bool gh_store_last_seq(struct gh_store *s, const char *type, uint64_t *seq, gh_err *err)
{
    return s->ops->last_seq(s, type, seq, err);
}

bool gh_store_changes(struct gh_store *s, const char *type, uint64_t since,
                      bool (*fn)(uint64_t seq, const char *id, char op, void *arg), void *arg,
                      gh_err *err)
{
    return s->ops->changes(s, type, since, fn, arg, err);
}

bool gh_store_kv_get(struct gh_store *s, const char *key, char **value, gh_err *err)
{
    return s->ops->kv_get(s, key, value, err);
}

bool gh_store_kv_put(struct gh_store *s, const char *key, const char *value, gh_err *err)
{
    return !injected_failure(s, err) && s->ops->kv_put(s, key, value, err);
}

bool gh_store_shared(const struct gh_store *s)
{
    return s->shared;
}

void gh_store_wait_change(struct gh_store *s, int wake_fd, int timeout_ms)
{
    if (s->ops->wait_change) {
        s->ops->wait_change(s, wake_fd, timeout_ms);
        return;
    }
    struct pollfd p = {.fd = wake_fd, .events = POLLIN};
    poll(&p, 1, timeout_ms);
}
