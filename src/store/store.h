/*
 * store: where the management objects live. One interface; SQLite (embedded default,
 * WAL) and PostgreSQL (shared by several nodes) behind it. Objects are JSON documents keyed by
 * (type, id); each write also appends to a per-store change log whose sequence numbers make the
 * JMAP state strings. Writes happen inside gh_store_begin/commit and are durable once
 * gh_store_commit returns.
 */
#ifndef GH_STORE_H
#define GH_STORE_H
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"

struct gh_store;

/* url: "sqlite:PATH" or "postgres://..."; data_dir is created when missing. */
struct gh_store *gh_store_open(const char *url, gh_err *err);
void gh_store_close(struct gh_store *s);

/* One transaction at a time; a failed commit leaves the store as it was before begin. */
bool gh_store_begin(struct gh_store *s, gh_err *err);
bool gh_store_commit(struct gh_store *s, gh_err *err);
void gh_store_rollback(struct gh_store *s);

/* Inserts or replaces an object's JSON text. An object keeps its creation position. */
bool gh_store_put(struct gh_store *s, const char *type, const char *id, const char *json,
                  gh_err *err);
bool gh_store_delete(struct gh_store *s, const char *type, const char *id, gh_err *err);
/* Calls fn for each object of type in creation order; fn returning false stops early. */
bool gh_store_list(struct gh_store *s, const char *type,
                   bool (*fn)(const char *id, const char *json, void *arg), void *arg, gh_err *err);

/* Change log. op is 'c' (created), 'u' (updated) or 'd' (destroyed). *seq gets the new
 * entry's sequence number, increasing across the whole store. */
bool gh_store_log_change(struct gh_store *s, const char *type, const char *id, char op,
                         uint64_t *seq, gh_err *err);
/* The sequence number of the type's latest change (0 when it has none); type NULL: the
 * latest of any type. */
bool gh_store_last_seq(struct gh_store *s, const char *type, uint64_t *seq, gh_err *err);
/* Calls fn for each change of type with since < seq, in order; fn returning false stops. */
bool gh_store_changes(struct gh_store *s, const char *type, uint64_t since,
                      bool (*fn)(uint64_t seq, const char *id, char op, void *arg), void *arg,
                      gh_err *err);

/* Small named values (the store epoch, the administrator secret's hash). *value is
 * malloc'd, or NULL when the key is not set. */
bool gh_store_kv_get(struct gh_store *s, const char *key, char **value, gh_err *err);
bool gh_store_kv_put(struct gh_store *s, const char *key, const char *value, gh_err *err);

/* Test hook: when set, the next n writes fail as a full disk would (fault injection). */
void gh_store_fail_writes(struct gh_store *s, int n);

/* True when other nodes write to the same store (PostgreSQL): changes must be picked up. */
bool gh_store_shared(const struct gh_store *s);
/* Waits up to timeout_ms for a change by another node, or until wake_fd is readable
 * (returns early on either). A store of one node only waits. */
void gh_store_wait_change(struct gh_store *s, int wake_fd, int timeout_ms);

#endif
