/*
 * objects: the management layer's start-up and shared plumbing. It loads every type from
 * the store into memory, registers the JMAP methods, applies settings, certificates and
 * listeners to the engine, and on a first start creates what a new installation needs
 * (the "http" listener, the administrator secret, a self-signed certificate).
 */
#include "objects/objects.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/log.h"
#include "health/health.h"
#include "net/engine.h"
#include "net/tls.h"
#include "objects/acme_renew.h"
#include "objects/model.h"
#include "objects/startup.h"
#include "security/security.h"
#include "store/store.h"

struct gh_model gh_model;

struct gh_objtype *const gh_types[GH_NTYPES] = {
    &gh_type_listener,     &gh_type_settings,   &gh_type_certificate, &gh_type_apikey,
    &gh_type_destination,  &gh_type_blocked_ip, &gh_type_allowed_ip,  &gh_type_security,
    &gh_type_acmeprovider, &gh_type_metrics,    &gh_type_authservice,
};

/* Taken by every entry point that reads or writes the objects from outside a JMAP call
 * (which already runs under the JMAP core's mutex): reload from SIGHUP. */
static pthread_mutex_t mgmt_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- lookups and naming ---- */

struct gh_objtype *gh_type_by_name(const char *type)
{
    for (unsigned i = 0; i < GH_NTYPES; i++)
        if (!strcmp(gh_types[i]->type, type))
            return gh_types[i];
    return NULL;
}

void gh_type_state(const struct gh_objtype *t, char out[64])
{
    uint64_t seq = 0;
    gh_err err = {0};
    if (!gh_store_last_seq(gh_model.store, t->type, &seq, &err))
        gh_log(NULL, NULL, "store-error", "%s", err.msg);
    snprintf(out, 64, "%s-%llu", gh_model.epoch, (unsigned long long)seq);
}

bool gh_state_parse(const char *state, uint64_t *seq)
{
    size_t elen = strlen(gh_model.epoch);
    if (!state || strncmp(state, gh_model.epoch, elen) || state[elen] != '-')
        return false;
    const char *p = state + elen + 1;
    if (!*p || strlen(p) > 18)
        return false;
    uint64_t n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    *seq = n;
    return true;
}

json_t *gh_obj_find(const struct gh_objtype *t, const char *id, size_t *index)
{
    size_t i;
    json_t *o;
    json_array_foreach(t->objs, i, o)
    {
        if (id && !strcmp(json_string_value(json_object_get(o, "id")), id)) {
            if (index)
                *index = i;
            return o;
        }
    }
    return NULL;
}

json_t *gh_obj_find_name(const struct gh_objtype *t, const char *name, const char *except_id)
{
    size_t i;
    json_t *o;
    json_array_foreach(t->objs, i, o)
    {
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *n = json_string_value(json_object_get(o, "name"));
        if (n && name && !strcasecmp(n, name) && (!except_id || strcmp(id, except_id)))
            return o;
    }
    return NULL;
}

bool gh_check_name(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    size_t len = strlen(s);
    if (len < 1 || len > 64)
        return gh_fail(err, "a name has 1 to 64 characters");
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return gh_fail(err, "\"%s\": only letters, digits, '.', '_' and '-' are allowed", s);
    }
    return true;
}

void gh_name_unique(struct gh_objtype *t, json_t *obj, const json_t *old, const char *base,
                    struct gh_verr *ve)
{
    const char *id = json_string_value(json_object_get(obj, "id"));
    json_t *name = json_object_get(obj, "name");
    if (json_is_string(name)) {
        json_t *other = gh_obj_find_name(t, json_string_value(name), id);
        if (other && gh_verr_ok(ve)) {
            ve->type = "alreadyExists";
            snprintf(ve->existing, sizeof ve->existing, "%s",
                     json_string_value(json_object_get(other, "id")));
            gh_verr_add(ve, "name",
                        "a %s named \"%s\" already exists (id %s); names are unique, ignoring "
                        "case",
                        t->label, json_string_value(json_object_get(other, "name")), ve->existing);
        }
        return;
    }
    char cand[80];
    snprintf(cand, sizeof cand, "%.60s", base && *base ? base : "object");
    for (unsigned n = 2; gh_obj_find_name(t, cand, id) && n < 100000; n++)
        snprintf(cand, sizeof cand, "%.60s-%u", base && *base ? base : "object", n);
    json_object_set_new(obj, "name", json_string(cand));
}

bool gh_random(void *out, size_t n)
{
    unsigned char *p = out;
    while (n) {
        ssize_t got = getrandom(p, n, 0);
        if (got <= 0)
            return false;
        p += got;
        n -= (size_t)got;
    }
    return true;
}

bool gh_random_text(char *out, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char raw[128];
    if (len >= sizeof raw || !gh_random(raw, len))
        return false;
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[raw[i] & 31];
    out[len] = 0;
    return true;
}

/* ---- loading ---- */

static bool load_one(const char *id, const char *json, void *arg)
{
    struct gh_objtype *t = arg;
    json_t *o = json_loads(json, 0, NULL);
    if (!json_is_object(o)) {
        gh_log(NULL, NULL, "store-error", "%s %s: stored JSON unreadable; skipped", t->type, id);
        gh_startup_note_unreadable(t, id);
        json_decref(o);
        return true;
    }
    json_object_set_new(o, "id", json_string(id));
    json_array_append_new(t->objs, o);
    return true;
}

bool gh_type_load(struct gh_objtype *t, gh_err *err)
{
    json_decref(t->objs);
    t->objs = json_array();
    return gh_store_list(gh_model.store, t->type, load_one, t, err);
}

/* ---- listener status for the web page ---- */

static struct {
    pthread_mutex_t mu;
    json_t *ids;    /* listener ids; owned */
    json_t *errors; /* id → why this node could not apply it; owned */
} status = {.mu = PTHREAD_MUTEX_INITIALIZER};

void gh_status_rebuild(void)
{
    json_t *ids = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(gh_type_listener.objs, i, o)
        json_array_append(ids, json_object_get(o, "id"));
    pthread_mutex_lock(&status.mu);
    json_t *old = status.ids;
    status.ids = ids;
    pthread_mutex_unlock(&status.mu);
    json_decref(old);
}

/* Remembers whether this node could apply a listener (err NULL: it could). */
static void note_listener(const char *id, const gh_err *err)
{
    pthread_mutex_lock(&status.mu);
    if (!status.errors)
        status.errors = json_object();
    if (err)
        json_object_set_new(status.errors, id, json_string(err->msg));
    else
        json_object_del(status.errors, id);
    pthread_mutex_unlock(&status.mu);
}

/* Applies one stored listener to this node's engine; a failure is noted (and logged
 * unless quiet: retries stay silent until they succeed). */
static void apply_listener(const json_t *o, bool quiet)
{
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *name = json_string_value(json_object_get(o, "name"));
    gh_err err = {0};
    struct gh_listener_conf *c = gh_listener_conf_from(o, &err);
    if (c && !gh_model.engine) {
        gh_listener_conf_unref(c);
        return;
    }
    if (!c || !gh_engine_apply(gh_model.engine, c, &err)) {
        if (!quiet)
            gh_log(name, NULL, "listener-error", "not started: %s", err.msg);
        note_listener(id, &err);
    } else {
        if (quiet)
            gh_log(name, NULL, "listener-started", "bound after an earlier failure");
        note_listener(id, NULL);
    }
}

/* Shared store: a listener another node holds on this host binds here once it is free. */
static void retry_failed_listeners(void)
{
    pthread_mutex_lock(&status.mu);
    json_t *failed = json_deep_copy(status.errors);
    pthread_mutex_unlock(&status.mu);
    const char *id;
    json_t *v;
    json_object_foreach(failed, id, v)
    {
        json_t *o = gh_obj_find(&gh_type_listener, id, NULL);
        if (o)
            apply_listener(o, true);
        else
            note_listener(id, NULL);
    }
    json_decref(failed);
}

void gh_listener_applied(const char *id)
{
    note_listener(id, NULL);
}

json_t *gh_objects_listener_status(void)
{
    json_t *list = json_object();
    pthread_mutex_lock(&status.mu);
    size_t i;
    json_t *id;
    json_array_foreach(status.ids, i, id)
    {
        const char *lid = json_string_value(id);
        uint32_t live = gh_model.engine ? gh_engine_live(gh_model.engine, lid) : 0;
        json_t *entry = json_pack("{sI}", "live", (json_int_t)live);
        json_t *why = json_object_get(status.errors, lid);
        if (why)
            json_object_set(entry, "error", why);
        json_object_set_new(list, lid, entry);
    }
    pthread_mutex_unlock(&status.mu);
    return json_pack("{so}", "listeners", list);
}

/* ---- other nodes' changes (shared store) ---- */

static uint64_t synced_seq; /* every change up to here is applied; under mgmt_mu */
static pthread_t sync_thread;
static bool sync_running;
static atomic_bool sync_stop;
static int sync_wake[2] = {-1, -1}; /* a pipe: written to stop the thread, or to have it
                                     * store the bans the engine asked for, at once */

/* Any thread (a worker queued a ban): wakes the background thread. */
static void wake_sync(void)
{
    if (sync_wake[1] >= 0 && write(sync_wake[1], "b", 1) < 0) {
        /* the pipe is full: the thread is awake already */
    }
}

void gh_sync_note(uint64_t seq)
{
    if (seq > synced_seq)
        synced_seq = seq;
}

static bool collect_id(uint64_t seq, const char *id, char op, void *arg)
{
    json_object_set_new(arg, id, json_true());
    return true;
}

/* Reloads one type whose objects another node changed, and applies the changes here. */
static void sync_type(struct gh_objtype *t)
{
    gh_err err = {0};
    json_t *changed = json_object();
    if (!gh_store_changes(gh_model.store, t->type, synced_seq, collect_id, changed, &err) ||
        !json_object_size(changed)) {
        json_decref(changed);
        return;
    }
    json_t *before = json_incref(t->objs);
    t->objs = NULL;
    if (!gh_type_load(t, &err)) {
        gh_log(NULL, NULL, "store-error", "%s: %s", t->type, err.msg);
        json_decref(t->objs);
        t->objs = before;
        json_decref(changed);
        return;
    }
    if (t == &gh_type_listener) {
        const char *id;
        json_t *v;
        json_object_foreach(changed, id, v)
        {
            json_t *now = gh_obj_find(t, id, NULL);
            struct gh_objtype old_view = {.objs = before};
            if (now)
                apply_listener(now, false);
            else if (gh_obj_find(&old_view, id, NULL) && gh_model.engine)
                gh_engine_remove(gh_model.engine, id);
        }
    }
    if (t->hooks.committed)
        t->hooks.committed(t);
    char state[64];
    gh_type_state(t, state);
    gh_jmap_state_changed(t->type, state);
    gh_log(NULL, NULL, "sync", "%s: %zu changed by another node", t->type,
           json_object_size(changed));
    json_decref(before);
    json_decref(changed);
}

void gh_objects_sync(void)
{
    uint64_t latest = 0;
    gh_err err = {0};
    if (!gh_store_last_seq(gh_model.store, NULL, &latest, &err)) {
        gh_log(NULL, NULL, "store-error", "%s", err.msg);
        return;
    }
    if (latest <= synced_seq)
        return;
    for (unsigned i = 0; i < GH_NTYPES; i++)
        sync_type(gh_types[i]);
    synced_seq = latest;
}

static void *sync_main(void *arg)
{
    while (!atomic_load(&sync_stop)) {
        gh_store_wait_change(gh_model.store, sync_wake[0], 1000);
        char drain[64];
        while (read(sync_wake[0], drain, sizeof drain) > 0)
            ;
        pthread_mutex_lock(&mgmt_mu);
        if (!atomic_load(&sync_stop)) {
            if (gh_store_shared(gh_model.store))
                gh_objects_sync();
            retry_failed_listeners();
            gh_security_tick();
        }
        pthread_mutex_unlock(&mgmt_mu);
    }
    return NULL;
}

/* ---- start-up ---- */

static void register_methods(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    char name[96];
    for (unsigned i = 0; i < GH_NTYPES; i++) {
        const struct gh_objtype *t = gh_types[i];
        snprintf(name, sizeof name, "%s/get", t->type);
        gh_jmap_register(name, GH_JMAP_CAP_STALWART, gh_method_get);
        snprintf(name, sizeof name, "%s/set", t->type);
        gh_jmap_register(name, GH_JMAP_CAP_STALWART, gh_method_set);
        if (t->singleton)
            continue;
        snprintf(name, sizeof name, "%s/query", t->type);
        gh_jmap_register(name, GH_JMAP_CAP_STALWART, gh_method_query);
        snprintf(name, sizeof name, "%s/changes", t->type);
        gh_jmap_register(name, GH_JMAP_CAP_STALWART, gh_method_changes);
        snprintf(name, sizeof name, "%s/queryChanges", t->type);
        gh_jmap_register(name, GH_JMAP_CAP_STALWART, gh_method_query_changes);
    }
}

static bool ensure_epoch(gh_err *err)
{
    char *epoch = NULL;
    if (!gh_store_kv_get(gh_model.store, "epoch", &epoch, err))
        return false;
    if (epoch) {
        snprintf(gh_model.epoch, sizeof gh_model.epoch, "%s", epoch);
        free(epoch);
        return true;
    }
    if (!gh_random_text(gh_model.epoch, 8))
        return gh_fail(err, "no random bytes for the store epoch");
    if (gh_store_begin(gh_model.store, err) &&
        gh_store_kv_put(gh_model.store, "epoch", gh_model.epoch, err) &&
        gh_store_commit(gh_model.store, err))
        return true;
    gh_store_rollback(gh_model.store);
    return false;
}

/* Runs a create through the same path a client's would take; returns the new id's
 * object from "created", or NULL with err filled from the SetError. */
static bool create_internal(struct gh_objtype *t, json_t *props, gh_err *err)
{
    json_t *args = json_pack("{s{so}}", "create", "new", props);
    json_t *error = NULL;
    json_t *res = gh_objects_set_internal(t, args, &error);
    json_decref(args);
    bool ok = res && json_object_get(json_object_get(res, "created"), "new");
    if (!ok) {
        json_t *why = res ? json_object_get(json_object_get(res, "notCreated"), "new") : error;
        gh_fail(err, "%s",
                json_string_value(json_object_get(why, "description"))
                    ? json_string_value(json_object_get(why, "description"))
                    : "refused");
    }
    json_decref(res);
    json_decref(error);
    return ok;
}

static void make_selfsigned(void)
{
    json_t *s = gh_obj_find(&gh_type_settings, "singleton", NULL);
    const char *host = json_string_value(json_object_get(s, "defaultHostname"));
    char *chain = NULL, *key = NULL;
    gh_err err = {0};
    if (!gh_tls_selfsigned(host ? host : "localhost", &chain, &key, &err) ||
        !create_internal(&gh_type_certificate,
                         json_pack("{ss ss ss sb}", "name", "self-signed", "certificate", chain,
                                   "privateKey", key, "isDefault", 1),
                         &err))
        gh_log(NULL, NULL, "certificate-error", "self-signed certificate: %s", err.msg);
    free(chain);
    free(key);
}

/* Management (HTTP) listeners last: once the API answers, every mail listener accepts, so
 * whatever waits for the API at start (a readiness check, a script) never meets a mail port
 * that is not open yet. */
static void apply_stored_listeners(void)
{
    for (int management = 0; management < 2; management++) {
        size_t i;
        json_t *o;
        json_array_foreach(gh_type_listener.objs, i, o)
        {
            const char *protocol = json_string_value(json_object_get(o, "protocol"));
            if ((protocol && !strcmp(protocol, "http")) == management)
                apply_listener(o, false);
        }
    }
}

static bool bootstrap_listener(const char *http_bind, gh_err *err)
{
    const char *addr = http_bind ? http_bind : "127.0.0.1:8080";
    if (!create_internal(
            &gh_type_listener,
            json_pack("{ss ss s[s]}", "name", "http", "protocol", "http", "bind", addr), err)) {
        gh_err_context(err, "management listener on %s", addr);
        return false;
    }
    printf("management: http://%s/\n", addr);
    fflush(stdout);
    return true;
}

bool gh_objects_init(const struct gh_objects_options *opt, gh_err *err)
{
    pthread_mutex_lock(&mgmt_mu);
    gh_model.store = opt->store;
    gh_model.engine = opt->engine;
    bool ok = false;
    char *initialized = NULL;
    if (!ensure_epoch(err) || !gh_store_kv_get(gh_model.store, "initialized", &initialized, err))
        goto out;
    bool first = !initialized;
    gh_startup_reset();
    for (unsigned i = 0; i < GH_NTYPES; i++)
        if (!gh_type_load(gh_types[i], err))
            goto out;
    synced_seq = 0;
    if (!gh_store_last_seq(gh_model.store, NULL, &synced_seq, err))
        goto out;
    register_methods();
    if (!gh_admin_secret_init(opt->admin_secret, err) || !gh_settings_ensure(err) ||
        !gh_security_ensure(err) || !gh_metrics_settings_ensure(err))
        goto out;
    gh_settings_apply();
    gh_security_apply();
    gh_metrics_settings_apply();
    if (first && json_array_size(gh_type_certificate.objs) == 0)
        make_selfsigned();
    gh_certs_apply();
    gh_destinations_init();
    gh_destinations_apply();
    gh_auth_services_apply();
    gh_status_rebuild(); /* before the management listener answers /api/status */
    apply_stored_listeners();
    if (first && json_array_size(gh_type_listener.objs) == 0 &&
        !bootstrap_listener(opt->http_bind, err))
        goto out;
    if (!gh_startup_check_management(err))
        goto out;
    if (first && !(gh_store_begin(gh_model.store, err) &&
                   gh_store_kv_put(gh_model.store, "initialized", "1", err) &&
                   gh_store_commit(gh_model.store, err))) {
        gh_store_rollback(gh_model.store);
        goto out;
    }
    gh_auth_rebuild();
    gh_status_rebuild();
    gh_startup_check_writable(); /* after the status: it waits for the disk */
    /* Catches up with other nodes' changes (shared store) and retries listeners that
     * could not bind; unit tests run without an engine and without it. */
    if ((gh_store_shared(gh_model.store) || gh_model.engine) && !sync_running &&
        (sync_wake[0] >= 0 || pipe2(sync_wake, O_CLOEXEC | O_NONBLOCK) == 0)) {
        gh_security_set_wake(wake_sync);
        atomic_store(&sync_stop, false);
        sync_running = pthread_create(&sync_thread, NULL, sync_main, NULL) == 0;
    }
    if (gh_model.engine)
        gh_acme_renew_start();
    ok = true;
out:
    free(initialized);
    pthread_mutex_unlock(&mgmt_mu);
    return ok;
}

void gh_objects_stop_background(void)
{
    gh_health_stop(); /* its reports take the management mutex: stopped before it is held */
    gh_acme_renew_stop();
    gh_security_set_wake(NULL);
    if (sync_running) {
        atomic_store(&sync_stop, true);
        if (write(sync_wake[1], "x", 1) < 0)
            gh_log(NULL, NULL, "shutdown", "could not wake the sync thread; it stops within 1s");
        pthread_join(sync_thread, NULL);
        sync_running = false;
    }
    /* The pipe stays open: a worker still running may be about to write to it. */
}

void gh_objects_shutdown(void)
{
    gh_objects_stop_background();
    gh_startup_reset();
    pthread_mutex_lock(&mgmt_mu);
    for (unsigned i = 0; i < GH_NTYPES; i++) {
        json_decref(gh_types[i]->objs);
        gh_types[i]->objs = NULL;
    }
    gh_auth_clear();
    gh_destinations_release();
    gh_security_shutdown(); /* the workers are gone: nothing reads the table any more */
    pthread_mutex_lock(&status.mu);
    json_decref(status.ids);
    status.ids = NULL;
    json_decref(status.errors);
    status.errors = NULL;
    pthread_mutex_unlock(&status.mu);
    pthread_mutex_unlock(&mgmt_mu);
}

bool gh_objects_reload(gh_err *err)
{
    pthread_mutex_lock(&mgmt_mu);
    bool ok = gh_type_load(&gh_type_settings, err) && gh_type_load(&gh_type_certificate, err);
    if (ok) {
        gh_settings_apply();
        gh_certs_apply();
        gh_destinations_apply(); /* trust anchors come from the certificates */
    }
    pthread_mutex_unlock(&mgmt_mu);
    return ok;
}

json_t *gh_objects_schema(void)
{
    return gh_schema_json(gh_types, GH_NTYPES);
}

void gh_objects_lock(void)
{
    pthread_mutex_lock(&mgmt_mu);
}

void gh_objects_unlock(void)
{
    pthread_mutex_unlock(&mgmt_mu);
}
