/*
 * sqlite: the embedded store backend. One database file in WAL mode with synchronous=FULL, so a
 * committed transaction survives a crash or power loss. Three tables: objects (JSON per
 * type and id), changes (the change log behind JMAP states) and kv (small values).
 */
#include "store/store-t.h"

#include <errno.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Owner: whoever opened it; gh_store_close frees it. Used by one thread at a time (the
 * management mutex is held around every call). */
struct sqlite_store {
    struct gh_store base;
    sqlite3 *db;
};

#define DB(s) (((struct sqlite_store *)(s))->db)

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS objects ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " type TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
    " UNIQUE (type, id));"
    "CREATE TABLE IF NOT EXISTS changes ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " type TEXT NOT NULL, id TEXT NOT NULL, op TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS changes_type ON changes (type, seq);"
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

static bool db_fail(struct gh_store *s, gh_err *err, const char *what)
{
    return gh_fail(err, "store: %s: %s", what, sqlite3_errmsg(DB(s)));
}

static bool exec(struct gh_store *s, const char *sql, gh_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(DB(s), sql, NULL, NULL, &msg) != SQLITE_OK) {
        gh_fail(err, "store: %s", msg ? msg : sqlite3_errmsg(DB(s)));
        sqlite3_free(msg);
        return false;
    }
    return true;
}

/* Creates the directory that will hold path, one level (the data directory). */
static bool make_parent(const char *path, gh_err *err)
{
    char *copy = strdup(path);
    if (!copy)
        return gh_fail(err, "out of memory");
    const char *dir = dirname(copy);
    bool ok = mkdir(dir, 0700) == 0 || errno == EEXIST;
    if (!ok)
        gh_fail_sys(err, errno, "store: directory %s", dir);
    free(copy);
    return ok;
}

static const struct gh_store_ops sqlite_ops;

/* Opens and prepares the database with the given flags; *code is SQLite's answer when it
 * fails, so the caller can tell a read-only store from a broken one. */
static struct gh_store *open_with(const char *path, int flags, int *code, gh_err *err)
{
    struct sqlite_store *ss = calloc(1, sizeof *ss);
    if (!ss) {
        gh_fail(err, "out of memory");
        return NULL;
    }
    ss->base.ops = &sqlite_ops;
    struct gh_store *s = &ss->base;
    if (sqlite3_open_v2(path, &ss->db, flags, NULL) != SQLITE_OK) {
        *code = ss->db ? sqlite3_errcode(ss->db) : SQLITE_NOMEM;
        gh_fail(err, "store %s: %s", path, ss->db ? sqlite3_errmsg(ss->db) : "cannot open");
        gh_store_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(ss->db, 5000);
    if (!exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err) ||
        !exec(s, schema_sql, err)) {
        *code = sqlite3_errcode(ss->db);
        gh_err_context(err, "store %s", path);
        gh_store_close(s);
        return NULL;
    }
    return s;
}

/* "file:PATH" with the characters a URI gives a meaning escaped, then the query. */
static bool file_uri(const char *path, const char *query, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "file:");
    for (const char *p = path; *p && n + 4 < cap; p++)
        n += (size_t)(strchr("%?#", *p) ? snprintf(out + n, cap - n, "%%%02X", (unsigned char)*p)
                                        : snprintf(out + n, cap - n, "%c", *p));
    return n + strlen(query) + 1 < cap && snprintf(out + n, cap - n, "%s", query) > 0;
}

struct gh_store *gh_sqlite_open(const char *path, gh_err *err)
{
    if (!make_parent(path, err))
        return NULL;
    int code = SQLITE_OK;
    struct gh_store *s = open_with(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &code, err);
    /* A database in a directory that cannot be written is still read: WAL needs its -shm
     * and -wal files there, so it is opened as immutable (nothing else may write it while
     * the daemon cannot either). The daemon serves what it holds and the start-up check
     * says that changes will fail, rather than not starting at all. */
    char uri[4200];
    if (!s && (code & 0xff) == SQLITE_READONLY && access(path, R_OK) == 0 &&
        file_uri(path, "?immutable=1", uri, sizeof uri)) {
        gh_err rw = *err;
        s = open_with(uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, &code, err);
        if (!s)
            *err = rw;
    }
    return s;
}

static void sq_close(struct gh_store *s)
{
    sqlite3_close(DB(s));
    free(s);
}

static bool sq_begin(struct gh_store *s, gh_err *err)
{
    return exec(s, "BEGIN IMMEDIATE", err);
}

static void sq_rollback(struct gh_store *s)
{
    if (!sqlite3_get_autocommit(DB(s)))
        sqlite3_exec(DB(s), "ROLLBACK", NULL, NULL, NULL);
}

static bool sq_commit(struct gh_store *s, gh_err *err)
{
    if (exec(s, "COMMIT", err))
        return true;
    sq_rollback(s);
    return false;
}

/* Prepares sql and binds the text arguments in order (NULL ends the list). */
static sqlite3_stmt *prepare(struct gh_store *s, const char *sql, gh_err *err,
                             const char *const *args, unsigned nargs)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(DB(s), sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "prepare");
        return NULL;
    }
    for (unsigned i = 0; i < nargs; i++)
        sqlite3_bind_text(st, (int)i + 1, args[i], -1, SQLITE_TRANSIENT);
    return st;
}

/* Runs a statement that returns no rows. */
static bool run(struct gh_store *s, const char *sql, const char *const *args, unsigned nargs,
                gh_err *err)
{
    sqlite3_stmt *st = prepare(s, sql, err, args, nargs);
    if (!st)
        return false;
    bool ok = sqlite3_step(st) == SQLITE_DONE;
    if (!ok)
        db_fail(s, err, "write");
    sqlite3_finalize(st);
    return ok;
}

static bool sq_put(struct gh_store *s, const char *type, const char *id, const char *json,
                   gh_err *err)
{
    const char *args[] = {type, id, json};
    return run(s,
               "INSERT INTO objects (type, id, json) VALUES (?1, ?2, ?3) "
               "ON CONFLICT (type, id) DO UPDATE SET json = excluded.json",
               args, 3, err);
}

static bool sq_del(struct gh_store *s, const char *type, const char *id, gh_err *err)
{
    const char *args[] = {type, id};
    return run(s, "DELETE FROM objects WHERE type = ?1 AND id = ?2", args, 2, err);
}

static bool sq_list(struct gh_store *s, const char *type,
                    bool (*fn)(const char *id, const char *json, void *arg), void *arg, gh_err *err)
{
    const char *args[] = {type};
    sqlite3_stmt *st =
        prepare(s, "SELECT id, json FROM objects WHERE type = ?1 ORDER BY seq", err, args, 1);
    if (!st)
        return false;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
                arg)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    bool ok = rc == SQLITE_DONE;
    if (!ok)
        db_fail(s, err, "read");
    sqlite3_finalize(st);
    return ok;
}

static bool sq_log_change(struct gh_store *s, const char *type, const char *id, char op,
                          uint64_t *seq, gh_err *err)
{
    char ops[2] = {op, 0};
    const char *args[] = {type, id, ops};
    if (!run(s, "INSERT INTO changes (type, id, op) VALUES (?1, ?2, ?3)", args, 3, err))
        return false;
    *seq = (uint64_t)sqlite3_last_insert_rowid(DB(s));
    return true;
}

static bool sq_last_seq(struct gh_store *s, const char *type, uint64_t *seq, gh_err *err)
{
    const char *args[] = {type};
    sqlite3_stmt *st =
        type ? prepare(s, "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE type = ?1", err, args, 1)
             : prepare(s, "SELECT COALESCE(MAX(seq), 0) FROM changes", err, args, 0);
    if (!st)
        return false;
    bool ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok)
        *seq = (uint64_t)sqlite3_column_int64(st, 0);
    else
        db_fail(s, err, "read");
    sqlite3_finalize(st);
    return ok;
}

static bool sq_changes(struct gh_store *s, const char *type, uint64_t since,
                       bool (*fn)(uint64_t seq, const char *id, char op, void *arg), void *arg,
                       gh_err *err)
{
    const char *args[] = {type};
    sqlite3_stmt *st =
        prepare(s, "SELECT seq, id, op FROM changes WHERE type = ?1 AND seq > ?2 ORDER BY seq", err,
                args, 1);
    if (!st)
        return false;
    sqlite3_bind_int64(st, 2, (sqlite3_int64)since);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *op = (const char *)sqlite3_column_text(st, 2);
        if (!fn((uint64_t)sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
                op[0], arg)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    bool ok = rc == SQLITE_DONE;
    if (!ok)
        db_fail(s, err, "read");
    sqlite3_finalize(st);
    return ok;
}

static bool sq_kv_get(struct gh_store *s, const char *key, char **value, gh_err *err)
{
    const char *args[] = {key};
    *value = NULL;
    sqlite3_stmt *st = prepare(s, "SELECT value FROM kv WHERE key = ?1", err, args, 1);
    if (!st)
        return false;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *value = strdup((const char *)sqlite3_column_text(st, 0));
        rc = *value ? SQLITE_DONE : SQLITE_NOMEM;
    }
    bool ok = rc == SQLITE_DONE;
    if (!ok)
        db_fail(s, err, "read");
    sqlite3_finalize(st);
    return ok;
}

static bool sq_kv_put(struct gh_store *s, const char *key, const char *value, gh_err *err)
{
    const char *args[] = {key, value};
    return run(s,
               "INSERT INTO kv (key, value) VALUES (?1, ?2) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               args, 2, err);
}

static const struct gh_store_ops sqlite_ops = {
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .put = sq_put,
    .del = sq_del,
    .list = sq_list,
    .log_change = sq_log_change,
    .last_seq = sq_last_seq,
    .changes = sq_changes,
    .kv_get = sq_kv_get,
    .kv_put = sq_kv_put,
    .close = sq_close,
};
