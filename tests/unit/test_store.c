/*
 * test_store: the SQLite store — URLs, objects in creation order, the change log,
 * key-value entries, transactions that roll back, WAL + synchronous=FULL, and data that
 * survives closing and reopening.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static char dir[64], url[200], path[128];

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/gh-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/data/g.db", dir);
    snprintf(url, sizeof url, "sqlite:%s", path);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

static void urls(void **state)
{
    gh_err err = {0};
    assert_null(gh_store_open("postgres://127.0.0.1:1/gh?connect_timeout=2", &err));
    assert_non_null(strstr(err.msg, "store (PostgreSQL): connect: "));
    assert_null(gh_store_open("mysql://x", &err));
    assert_non_null(strstr(err.msg, "sqlite:PATH"));
    assert_null(gh_store_open("sqlite:", &err));
    assert_null(gh_store_open("sqlite:/nonexistent-dir/deeper/g.db", &err));
    struct gh_store *s = gh_store_open(url, &err); /* creates the data directory */
    assert_non_null(s);
    gh_store_close(s);
}

static bool collect(const char *id, const char *json, void *arg)
{
    char *out = arg;
    strcat(out, id);
    strcat(out, "=");
    strcat(out, json);
    strcat(out, ";");
    return true;
}

static bool collect_changes(uint64_t seq, const char *id, char op, void *arg)
{
    char *out = arg;
    char one[64];
    snprintf(one, sizeof one, "%s:%c;", id, op);
    strcat(out, one);
    return true;
}

static void objects_and_changes(void **state)
{
    gh_err err = {0};
    struct gh_store *s = gh_store_open(url, &err);
    uint64_t seq1, seq2, seq3, last;
    assert_true(gh_store_begin(s, &err));
    assert_true(gh_store_put(s, "T", "b", "{\"v\":1}", &err));
    assert_true(gh_store_log_change(s, "T", "b", 'c', &seq1, &err));
    assert_true(gh_store_put(s, "T", "a", "{\"v\":2}", &err));
    assert_true(gh_store_log_change(s, "T", "a", 'c', &seq2, &err));
    assert_true(gh_store_put(s, "U", "z", "{}", &err));
    assert_true(gh_store_log_change(s, "U", "z", 'c', &seq3, &err));
    assert_true(gh_store_put(s, "T", "b", "{\"v\":3}", &err)); /* keeps its position */
    assert_true(gh_store_commit(s, &err));
    assert_true(seq1 < seq2 && seq2 < seq3);
    char out[512] = "";
    assert_true(gh_store_list(s, "T", collect, out, &err));
    assert_string_equal(out, "b={\"v\":3};a={\"v\":2};");
    assert_true(gh_store_last_seq(s, "T", &last, &err));
    assert_int_equal(last, seq2);
    assert_true(gh_store_last_seq(s, "none", &last, &err));
    assert_int_equal(last, 0);
    out[0] = 0;
    assert_true(gh_store_changes(s, "T", seq1, collect_changes, out, &err));
    assert_string_equal(out, "a:c;");
    /* a rolled-back transaction leaves nothing */
    assert_true(gh_store_begin(s, &err));
    assert_true(gh_store_delete(s, "T", "a", &err));
    assert_true(gh_store_log_change(s, "T", "a", 'd', &seq1, &err));
    gh_store_rollback(s);
    out[0] = 0;
    assert_true(gh_store_list(s, "T", collect, out, &err));
    assert_string_equal(out, "b={\"v\":3};a={\"v\":2};");
    assert_true(gh_store_last_seq(s, "T", &last, &err));
    assert_int_equal(last, seq2);
    /* an injected failure at commit rolls back too */
    assert_true(gh_store_begin(s, &err));
    assert_true(gh_store_delete(s, "T", "a", &err));
    gh_store_fail_writes(s, 1);
    assert_false(gh_store_commit(s, &err));
    assert_non_null(strstr(err.msg, "full"));
    out[0] = 0;
    assert_true(gh_store_list(s, "T", collect, out, &err));
    assert_string_equal(out, "b={\"v\":3};a={\"v\":2};");
    gh_store_close(s);
    /* reopened: everything is still there */
    s = gh_store_open(url, &err);
    out[0] = 0;
    assert_true(gh_store_list(s, "T", collect, out, &err));
    assert_string_equal(out, "b={\"v\":3};a={\"v\":2};");
    gh_store_close(s);
}

static void key_values(void **state)
{
    gh_err err = {0};
    struct gh_store *s = gh_store_open(url, &err);
    char *v = (char *)1;
    assert_true(gh_store_kv_get(s, "k", &v, &err));
    assert_null(v);
    assert_true(gh_store_kv_put(s, "k", "one", &err));
    assert_true(gh_store_kv_put(s, "k", "two", &err));
    assert_true(gh_store_kv_get(s, "k", &v, &err));
    assert_string_equal(v, "two");
    free(v);
    gh_store_close(s);
}

static void wal_and_full_sync(void **state)
{
    gh_err err = {0};
    struct gh_store *s = gh_store_open(url, &err);
    assert_true(gh_store_kv_put(s, "k", "v", &err));
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    gh_store_close(s);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {T(urls), T(objects_and_changes), T(key_values),
                                       T(wal_and_full_sync)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
