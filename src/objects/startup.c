/*
 * startup: what the store gave at start, checked before the daemon runs on it. A daemon
 * that came up without its management listener because that row was unreadable could only
 * be repaired by hand with no hint why; one on a read-only store would fail every change.
 */
#include "objects/startup.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "objects/model.h"
#include "store/store.h"

static json_t *unreadable; /* listener ids whose stored JSON could not be read; owned */

void gh_startup_reset(void)
{
    json_decref(unreadable);
    unreadable = NULL;
}

void gh_startup_note_unreadable(const struct gh_objtype *t, const char *id)
{
    if (t != &gh_type_listener)
        return;
    if (!unreadable)
        unreadable = json_array();
    json_array_append_new(unreadable, json_string(id));
}

/* Appends "ID (why)" to the list of broken rows in out. */
static void add_broken(char *out, size_t cap, const char *id, const char *why)
{
    size_t n = strlen(out);
    snprintf(out + n, cap - n, "%s\"%s\" (%s)", n ? ", " : "", id, why);
}

/* The engine reads a row leniently (an unknown protocol would serve SMTP): what a row that
 * was written through the API always has is checked here. */
static bool row_sane(const json_t *o, gh_err *why)
{
    const char *proto = json_string_value(json_object_get(o, "protocol"));
    bool known = false;
    for (unsigned p = 0; proto && p < GH_PROTO_COUNT; p++)
        known = known || !strcmp(proto, gh_protocol_names[p]);
    if (!known)
        return gh_fail(why, "no known protocol");
    if (!json_is_array(json_object_get(o, "bind")))
        return gh_fail(why, "no bind list");
    return true;
}

bool gh_startup_check_management(gh_err *err)
{
    char broken[512] = "";
    bool have_http = false;
    size_t i;
    json_t *o;
    json_array_foreach(unreadable, i, o)
        add_broken(broken, sizeof broken, json_string_value(o), "stored JSON unreadable");
    json_array_foreach(gh_type_listener.objs, i, o)
    {
        gh_err why = {0};
        struct gh_listener_conf *c = row_sane(o, &why) ? gh_listener_conf_from(o, &why) : NULL;
        if (!c) {
            add_broken(broken, sizeof broken, json_string_value(json_object_get(o, "id")), why.msg);
            continue;
        }
        /* One that cannot bind yet is retried every second: it still counts. */
        const char *proto = json_string_value(json_object_get(o, "protocol"));
        if (proto && !strcmp(proto, "http"))
            have_http = true;
        gh_listener_conf_unref(c);
    }
    if (have_http || !broken[0])
        return true;
    /* The way out is longer than an error message holds: it goes to the log first. */
    gh_log(NULL, NULL, "store-error",
           "to start again: restore the store from a backup, or repair that row, or delete it "
           "and let the next start create the management listener on --http again (SQLite: "
           "DELETE FROM objects WHERE type = 'x:NetworkListener' AND id = 'ID'; DELETE FROM kv "
           "WHERE key = 'initialized'); see docs/objects.md, Start-up");
    return gh_fail(err, "no management listener would run: stored x:NetworkListener %s", broken);
}

void gh_startup_check_writable(void)
{
    char now[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    gh_err err = {0};
    if (gh_store_begin(gh_model.store, &err) &&
        gh_store_kv_put(gh_model.store, "last_start", now, &err) &&
        gh_store_commit(gh_model.store, &err))
        return;
    gh_store_rollback(gh_model.store);
    gh_log(NULL, NULL, "store-readonly",
           "the store cannot be written (%s): the daemon serves what it holds, but every change "
           "through the API or the CLI fails until the store is writable again",
           err.msg);
}
