/*
 * postgres: the shared store backend. Several gatehouse nodes use one database: each
 * write transaction takes an exclusive lock on the change log, so changes are numbered in
 * commit order across nodes, and sends NOTIFY gatehouse on commit; a second connection
 * LISTENs, so other nodes pick a change up at once (and at the latest on their next poll).
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store-t.h"

#define CHANNEL "gatehouse"

/* Owner: whoever opened it. conn is used under the management mutex only; listen by the
 * one thread that waits for other nodes' changes. */
struct pg_store {
    struct gh_store base;
    PGconn *conn;
    PGconn *listen;
};

#define PG(s) (((struct pg_store *)(s))->conn)

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS objects ("
    " seq BIGSERIAL PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
    " UNIQUE (type, id));"
    "CREATE TABLE IF NOT EXISTS changes ("
    " seq BIGSERIAL PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, op TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS changes_type ON changes (type, seq);"
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/* The server's message without its trailing newline. */
static bool pg_fail(PGconn *c, gh_err *err, const char *what)
{
    char msg[GH_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = 0;
    return gh_fail(err, "store (PostgreSQL): %s: %s", what, msg);
}

/* Runs sql with text parameters; returns the result when its status is want. */
static PGresult *query(PGconn *c, const char *sql, const char *const *args, int nargs,
                       ExecStatusType want, gh_err *err)
{
    if (PQstatus(c) != CONNECTION_OK)
        PQreset(c); /* the server restarted: one attempt to reconnect */
    PGresult *r = PQexecParams(c, sql, nargs, NULL, args, NULL, NULL, 0);
    if (PQresultStatus(r) != want) {
        pg_fail(c, err, sql);
        PQclear(r);
        return NULL;
    }
    return r;
}

static bool command(PGconn *c, const char *sql, const char *const *args, int nargs, gh_err *err)
{
    PGresult *r = query(c, sql, args, nargs, PGRES_COMMAND_OK, err);
    PQclear(r);
    return r != NULL;
}

static const struct gh_store_ops pg_ops;

static PGconn *connect_to(const char *url, gh_err *err)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        pg_fail(c, err, "connect");
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

struct gh_store *gh_postgres_open(const char *url, gh_err *err)
{
    struct pg_store *ps = calloc(1, sizeof *ps);
    if (!ps) {
        gh_fail(err, "out of memory");
        return NULL;
    }
    ps->base.ops = &pg_ops;
    ps->base.shared = true;
    if (!(ps->conn = connect_to(url, err)) || !(ps->listen = connect_to(url, err))) {
        gh_store_close(&ps->base);
        return NULL;
    }
    /* Nodes starting together must not race on creating the tables. */
    PGresult *lock =
        query(ps->conn, "SELECT pg_advisory_lock(7415)", NULL, 0, PGRES_TUPLES_OK, err);
    bool ok = lock != NULL;
    PQclear(lock);
    if (ok) {
        PGresult *r = PQexec(ps->conn, schema_sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || pg_fail(ps->conn, err, "create tables");
        PQclear(r);
        PQclear(PQexec(ps->conn, "SELECT pg_advisory_unlock(7415)"));
    }
    ok = ok && command(ps->listen, "LISTEN " CHANNEL, NULL, 0, err);
    if (!ok) {
        gh_store_close(&ps->base);
        return NULL;
    }
    return &ps->base;
}

static void pg_close(struct gh_store *s)
{
    struct pg_store *ps = (struct pg_store *)s;
    PQfinish(ps->conn);
    PQfinish(ps->listen);
    free(ps);
}

/* Writers are serialised by the lock, so sequence numbers follow commit order and a node
 * that has seen seq N has seen every change up to N. */
static bool pg_begin(struct gh_store *s, gh_err *err)
{
    if (!command(PG(s), "BEGIN", NULL, 0, err))
        return false;
    if (command(PG(s), "LOCK TABLE changes IN EXCLUSIVE MODE", NULL, 0, err))
        return true;
    PQclear(PQexec(PG(s), "ROLLBACK"));
    return false;
}

static void pg_rollback(struct gh_store *s)
{
    if (PQtransactionStatus(PG(s)) != PQTRANS_IDLE)
        PQclear(PQexec(PG(s), "ROLLBACK"));
}

static bool pg_commit(struct gh_store *s, gh_err *err)
{
    if (command(PG(s), "NOTIFY " CHANNEL, NULL, 0, err) && command(PG(s), "COMMIT", NULL, 0, err))
        return true;
    pg_rollback(s);
    return false;
}

static bool pg_put(struct gh_store *s, const char *type, const char *id, const char *json,
                   gh_err *err)
{
    const char *args[] = {type, id, json};
    return command(PG(s),
                   "INSERT INTO objects (type, id, json) VALUES ($1, $2, $3) "
                   "ON CONFLICT (type, id) DO UPDATE SET json = excluded.json",
                   args, 3, err);
}

static bool pg_del(struct gh_store *s, const char *type, const char *id, gh_err *err)
{
    const char *args[] = {type, id};
    return command(PG(s), "DELETE FROM objects WHERE type = $1 AND id = $2", args, 2, err);
}

static bool pg_list(struct gh_store *s, const char *type,
                    bool (*fn)(const char *id, const char *json, void *arg), void *arg, gh_err *err)
{
    const char *args[] = {type};
    PGresult *r = query(PG(s), "SELECT id, json FROM objects WHERE type = $1 ORDER BY seq", args, 1,
                        PGRES_TUPLES_OK, err);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++)
        if (!fn(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), arg))
            break;
    PQclear(r);
    return true;
}

static bool pg_log_change(struct gh_store *s, const char *type, const char *id, char op,
                          uint64_t *seq, gh_err *err)
{
    char ops[2] = {op, 0};
    const char *args[] = {type, id, ops};
    PGresult *r = query(PG(s),
                        "INSERT INTO changes (type, id, op) VALUES ($1, $2, $3) "
                        "RETURNING seq",
                        args, 3, PGRES_TUPLES_OK, err);
    if (!r)
        return false;
    *seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return true;
}

static bool pg_last_seq(struct gh_store *s, const char *type, uint64_t *seq, gh_err *err)
{
    const char *args[] = {type};
    PGresult *r = type ? query(PG(s), "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE type = $1",
                               args, 1, PGRES_TUPLES_OK, err)
                       : query(PG(s), "SELECT COALESCE(MAX(seq), 0) FROM changes", NULL, 0,
                               PGRES_TUPLES_OK, err);
    if (!r)
        return false;
    *seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return true;
}

static bool pg_changes(struct gh_store *s, const char *type, uint64_t since,
                       bool (*fn)(uint64_t seq, const char *id, char op, void *arg), void *arg,
                       gh_err *err)
{
    char since_text[32];
    snprintf(since_text, sizeof since_text, "%llu", (unsigned long long)since);
    const char *args[] = {type, since_text};
    PGresult *r = query(PG(s),
                        "SELECT seq, id, op FROM changes WHERE type = $1 AND seq > $2::bigint "
                        "ORDER BY seq",
                        args, 2, PGRES_TUPLES_OK, err);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++)
        if (!fn(strtoull(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1),
                PQgetvalue(r, i, 2)[0], arg))
            break;
    PQclear(r);
    return true;
}

static bool pg_kv_get(struct gh_store *s, const char *key, char **value, gh_err *err)
{
    const char *args[] = {key};
    *value = NULL;
    PGresult *r =
        query(PG(s), "SELECT value FROM kv WHERE key = $1", args, 1, PGRES_TUPLES_OK, err);
    if (!r)
        return false;
    bool ok = true;
    if (PQntuples(r) == 1 && !(*value = strdup(PQgetvalue(r, 0, 0))))
        ok = gh_fail(err, "out of memory");
    PQclear(r);
    return ok;
}

static bool pg_kv_put(struct gh_store *s, const char *key, const char *value, gh_err *err)
{
    const char *args[] = {key, value};
    return command(PG(s),
                   "INSERT INTO kv (key, value) VALUES ($1, $2) "
                   "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   args, 2, err);
}

static void pg_wait_change(struct gh_store *s, int wake_fd, int timeout_ms)
{
    PGconn *c = ((struct pg_store *)s)->listen;
    struct pollfd p[2] = {{.fd = wake_fd, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    if (PQstatus(c) != CONNECTION_OK) {
        /* the server went away: wait, then try to reconnect and listen again */
        if (poll(p, 1, timeout_ms) == 0) {
            PQreset(c);
            if (PQstatus(c) == CONNECTION_OK)
                PQclear(PQexec(c, "LISTEN " CHANNEL));
        }
        return;
    }
    p[1].fd = PQsocket(c);
    if (poll(p, 2, timeout_ms) <= 0 || !(p[1].revents & (POLLIN | POLLHUP | POLLERR)))
        return;
    if (!PQconsumeInput(c)) {
        poll(p, 1, timeout_ms); /* a broken connection: do not spin */
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c)))
        PQfreemem(n);
}

static const struct gh_store_ops pg_ops = {
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .put = pg_put,
    .del = pg_del,
    .list = pg_list,
    .log_change = pg_log_change,
    .last_seq = pg_last_seq,
    .changes = pg_changes,
    .kv_get = pg_kv_get,
    .kv_put = pg_kv_put,
    .wait_change = pg_wait_change,
    .close = pg_close,
};
