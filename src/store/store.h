/*
 * store: where the management objects live. One interface; SQLite (embedded default,
 * WAL) and PostgreSQL behind it. Every write is durable when the call returns.
 */
#ifndef GH_STORE_H
#define GH_STORE_H
#include <stdbool.h>

#include "core/err.h"

struct gh_store;

/* url: "sqlite:PATH" or "postgres://..."; data_dir is created when missing. */
struct gh_store *gh_store_open(const char *url, gh_err *err);
void gh_store_close(struct gh_store *s);

#endif
