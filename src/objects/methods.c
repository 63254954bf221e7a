/*
 * methods: the standard JMAP methods (RFC 8620 §5) for every object type, read from the
 * type's table: /get, /set (one store transaction, side effects before the commit and
 * undone when it fails), /query with filters and sorts, /changes from the store's change
 * log, and /queryChanges. Permissions are checked per method and per /set operation.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "objects/model.h"
#include "store/store.h"

#define MAX_FILTER_DEPTH 8
#define ID_RANDOM_CHARS  11

static const struct gh_principal internal_admin = {.username = "admin", .admin = true};

/* ---- argument helpers ---- */

static struct gh_objtype *call_type(const struct gh_jmap_call *call)
{
    char name[96];
    const char *slash = strchr(call->method, '/');
    size_t n = slash ? (size_t)(slash - call->method) : strlen(call->method);
    if (n >= sizeof name)
        return NULL;
    memcpy(name, call->method, n);
    name[n] = 0;
    return gh_type_by_name(name);
}

static bool can(const struct gh_principal *who, const struct gh_objtype *t, const char *op)
{
    char perm[96];
    snprintf(perm, sizeof perm, "%s%s", t->perm_prefix, op);
    return !who || who->admin || gh_principal_can(who, perm);
}

static json_t *forbidden(const struct gh_objtype *t, const char *op)
{
    return gh_jmap_error("forbidden", "this credential lacks the %s%s permission", t->perm_prefix,
                         op);
}

/* Refuses arguments the method does not define (RFC 8620 §3.6.2). */
static bool known_args(const json_t *args, const char *const *allowed, json_t **error)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)args, key, v)
    {
        bool ok = !strcmp(key, "accountId");
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(key, *a);
        if (!ok) {
            *error = gh_jmap_error("invalidArguments", "unknown argument \"%s\"", key);
            return false;
        }
    }
    return true;
}

/* An optional argument of a JSON type; absent and null are the same. */
static json_t *opt_arg(const json_t *args, const char *name, json_type type, bool *bad)
{
    json_t *v = json_object_get(args, name);
    if (!v || json_is_null(v))
        return NULL;
    if (json_typeof(v) != type && !(type == JSON_TRUE && json_is_boolean(v)))
        *bad = true;
    return v;
}

static bool int_arg(const json_t *args, const char *name, bool is_unsigned, json_int_t dflt,
                    json_int_t *out, json_t **error)
{
    json_t *v = json_object_get(args, name);
    *out = dflt;
    if (!v || json_is_null(v))
        return true;
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
    if (!json_is_integer(v) || n > 9007199254740991LL || n < -9007199254740991LL ||
        (is_unsigned && n < 0)) {
        *error = gh_jmap_error("invalidArguments", "\"%s\" must be %s integer", name,
                               is_unsigned ? "an unsigned" : "an");
        return false;
    }
    *out = n;
    return true;
}

static json_t *response(const char *state_key, const struct gh_objtype *t)
{
    char state[64];
    gh_type_state(t, state);
    return json_pack("{ss ss}", "accountId", GH_JMAP_ACCOUNT_ID, state_key, state);
}

/* ---- /get ---- */

static bool check_properties(const struct gh_objtype *t, const json_t *props, json_t **error)
{
    size_t i;
    json_t *v;
    json_array_foreach(props, i, v)
    {
        if (!json_is_string(v) || !gh_prop_find(t, json_string_value(v))) {
            *error = gh_jmap_error("invalidArguments", "properties: %s%s%s is not a property of %s",
                                   json_is_string(v) ? "\"" : "",
                                   json_is_string(v) ? json_string_value(v) : "a non-string",
                                   json_is_string(v) ? "\"" : "", t->type);
            return false;
        }
    }
    return true;
}

/* The start every method shares: the caller's permission for this kind of call, then
 * no argument the method does not know (RFC 8620 §3.6.2). */
static bool method_allowed(struct gh_jmap_call *call, struct gh_objtype *t, const char *kind,
                           const char *const *allowed, json_t **error)
{
    if (!can(call->who, t, kind)) {
        *error = forbidden(t, kind);
        return false;
    }
    return known_args(call->args, allowed, error);
}

static json_t *get_impl(struct gh_objtype *t, struct gh_jmap_call *call, json_t **error)
{
    static const char *const allowed[] = {"ids", "properties", NULL};
    if (!method_allowed(call, t, "Get", allowed, error))
        return NULL;
    bool bad = false;
    json_t *ids = opt_arg(call->args, "ids", JSON_ARRAY, &bad);
    json_t *props = opt_arg(call->args, "properties", JSON_ARRAY, &bad);
    if (bad) {
        *error = gh_jmap_error("invalidArguments", "ids and properties must be arrays or null");
        return NULL;
    }
    if (!check_properties(t, props, error))
        return NULL;
    size_t n = ids ? json_array_size(ids) : json_array_size(t->objs);
    if (n > GH_JMAP_MAX_OBJECTS_IN_GET) {
        *error = gh_jmap_error("requestTooLarge",
                               "%zu objects asked for; at most %d per call (maxObjectsInGet)", n,
                               GH_JMAP_MAX_OBJECTS_IN_GET);
        return NULL;
    }
    json_t *list = json_array(), *not_found = json_array(), *seen = json_object();
    size_t i;
    json_t *v;
    if (!ids) {
        json_array_foreach(t->objs, i, v)
            json_array_append_new(list, gh_schema_view(t, v, props, false));
    } else {
        json_array_foreach(ids, i, v)
        {
            if (!json_is_string(v)) {
                *error = gh_jmap_error("invalidArguments", "ids must be strings");
                goto bad;
            }
            const char *given = json_string_value(v);
            const char *id = call->req ? gh_jmap_resolve_id(call->req, given) : given;
            if (json_object_get(seen, given) || (id && json_object_get(seen, id)))
                continue;
            json_object_set_new(seen, given, json_true());
            json_t *o = id ? gh_obj_find(t, id, NULL) : NULL;
            if (o) {
                json_object_set_new(seen, id, json_true());
                json_array_append_new(list, gh_schema_view(t, o, props, false));
            } else {
                json_array_append_new(not_found, json_string(given));
            }
        }
    }
    json_decref(seen);
    json_t *res = response("state", t);
    json_object_set_new(res, "list", list);
    json_object_set_new(res, "notFound", not_found);
    return res;
bad:
    json_decref(list);
    json_decref(not_found);
    json_decref(seen);
    return NULL;
}

/* ---- /set ---- */

const struct gh_principal *gh_set_caller;

/* One applied change, kept to undo it if the commit fails. References owned. */
struct undo {
    json_t *obj; /* new object; NULL for a destroy */
    json_t *old; /* previous object; NULL for a create */
};

struct set_ctx {
    struct gh_objtype *t;
    const struct gh_principal *who;
    struct gh_jmap_request *req;
    struct undo *undo;
    size_t nundo, capundo;
    gh_err err; /* the store failure, when there was one */
    bool failed;
    uint64_t last_seq; /* of the latest change-log entry written */
};

static bool push_undo(struct set_ctx *c, json_t *obj, json_t *old)
{
    if (c->nundo == c->capundo) {
        size_t cap = c->capundo ? c->capundo * 2 : 8;
        struct undo *u = realloc(c->undo, cap * sizeof *u);
        if (!u)
            return false;
        c->undo = u;
        c->capundo = cap;
    }
    c->undo[c->nundo++] = (struct undo){json_incref(obj), json_incref(old)};
    return true;
}

/* Writes one change and its change-log entry inside the open transaction. */
static bool store_write(struct set_ctx *c, const char *id, const json_t *stored, char op)
{
    uint64_t seq;
    char *text = stored ? json_dumps(stored, JSON_COMPACT) : NULL;
    bool ok = stored ? text && gh_store_put(gh_model.store, c->t->type, id, text, &c->err)
                     : gh_store_delete(gh_model.store, c->t->type, id, &c->err);
    ok = ok && gh_store_log_change(gh_model.store, c->t->type, id, op, &seq, &c->err);
    if (ok)
        c->last_seq = seq;
    free(text);
    if (!ok)
        c->failed = true;
    return ok;
}

/* What is stored: the object without the values shown only once. */
static json_t *stored_form(const struct gh_objtype *t, const json_t *obj)
{
    json_t *s = json_deep_copy(obj);
    for (unsigned i = 0; i < t->nprops; i++)
        if (t->props[i].once)
            json_object_del(s, t->props[i].name);
    return s;
}

static bool new_id(const struct gh_objtype *t, char out[16])
{
    for (int tries = 0; tries < 16; tries++) {
        out[0] = t->id_prefix;
        if (!gh_random_text(out + 1, ID_RANDOM_CHARS))
            return false;
        if (!gh_obj_find(t, out, NULL))
            return true;
    }
    return false;
}

static json_t *set_error(const char *type, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *set_error(const char *type, const char *fmt, ...)
{
    char desc[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    return json_pack("{ss ss s[]}", "type", type, "description", desc, "properties");
}

/* The type's own rule on what this caller may write (an API key's permissions). */
static json_t *refused_to(const struct gh_principal *who, const struct gh_objtype *t,
                          const json_t *obj, const json_t *old)
{
    if (!who || who->admin || !t->hooks.authorize)
        return NULL;
    return t->hooks.authorize(who, obj, old);
}

static json_t *do_create(struct set_ctx *c, const char *cid, json_t *in, json_t *created)
{
    struct gh_objtype *t = c->t;
    if (!can(c->who, t, "Create"))
        return set_error("forbidden", "this credential lacks the %sCreate permission",
                         t->perm_prefix);
    if (t->singleton)
        return set_error("singleton", "%s is a singleton (id \"singleton\"): update it instead",
                         t->type);
    if (!json_is_object(in))
        return set_error("invalidProperties", "a create must be an object of properties");
    struct gh_verr ve;
    gh_verr_init(&ve);
    char id[16];
    json_t *obj = gh_schema_create(t, in, &ve);
    if (obj && !new_id(t, id))
        gh_verr_add(&ve, NULL, "no random bytes for an id; try again");
    if (obj && gh_verr_ok(&ve)) {
        json_object_set_new(obj, "id", json_string(id));
        if (t->hooks.validate)
            t->hooks.validate(t, obj, NULL, &ve);
    }
    json_t *fail = obj && gh_verr_ok(&ve) ? refused_to(c->who, t, obj, NULL) : NULL;
    if (fail)
        goto out;
    if (obj && gh_verr_ok(&ve) && t->hooks.apply)
        t->hooks.apply(obj, NULL, &ve); /* a refusal is recorded in ve */
    if (!obj || !gh_verr_ok(&ve)) {
        fail = gh_verr_json(&ve);
        goto out;
    }
    json_t *stored = stored_form(t, obj);
    if (!store_write(c, id, stored, 'c')) {
        if (t->hooks.undo)
            t->hooks.undo(stored, NULL);
        json_decref(stored);
        goto out;
    }
    push_undo(c, stored, NULL);
    json_array_append_new(t->objs, stored);
    json_object_set_new(created, cid, gh_schema_view(t, obj, NULL, true));
    if (c->req)
        gh_jmap_set_created_id(c->req, cid, id);
out:
    json_decref(obj);
    gh_verr_clear(&ve);
    return fail;
}

/* The properties whose final value differs from what the patch said, plus server-set
 * ones that changed: what the client cannot know without asking (RFC 8620 §5.3). */
static json_t *update_diff(const struct gh_objtype *t, const json_t *patch, const json_t *old,
                           const json_t *obj)
{
    json_t *diff = json_object();
    for (unsigned i = 0; i < t->nprops; i++) {
        const struct gh_prop *p = &t->props[i];
        json_t *now = json_object_get(obj, p->name);
        json_t *sent = json_object_get(patch, p->name);
        if (p->mut == GH_WRITE_ONLY || p->once || !now)
            continue;
        if ((sent && !json_equal(sent, now)) ||
            (p->mut == GH_SERVER_SET && !json_equal(json_object_get(old, p->name), now)))
            json_object_set(diff, p->name, now);
    }
    if (json_object_size(diff))
        return diff;
    json_decref(diff);
    return json_null();
}

static json_t *do_update(struct set_ctx *c, const char *id, json_t *patch, json_t *updated)
{
    struct gh_objtype *t = c->t;
    size_t index;
    json_t *cur = gh_obj_find(t, id, &index);
    if (!cur)
        return set_error("notFound", "no %s with id \"%s\"", t->type, id);
    if (!can(c->who, t, "Update"))
        return set_error("forbidden", "this credential lacks the %sUpdate permission",
                         t->perm_prefix);
    if (!json_is_object(patch))
        return set_error("invalidPatch", "an update must be a patch object");
    struct gh_verr ve;
    gh_verr_init(&ve);
    json_t *fail = NULL;
    json_t *obj = gh_schema_patch(t, cur, patch, &ve);
    if (obj && t->hooks.validate)
        t->hooks.validate(t, obj, cur, &ve);
    if (!obj || !gh_verr_ok(&ve)) {
        fail = gh_verr_json(&ve);
        goto out;
    }
    if ((fail = refused_to(c->who, t, obj, cur)))
        goto out;
    if (json_equal(obj, cur)) {
        json_object_set_new(updated, id, update_diff(t, patch, cur, obj));
        goto out;
    }
    if (t->hooks.apply && !t->hooks.apply(obj, cur, &ve)) {
        /* The engine promises to change nothing on failure; re-applying the old settings
         * costs little and makes sure of it. */
        if (t->hooks.undo)
            t->hooks.undo(obj, cur);
        fail = gh_verr_json(&ve);
        goto out;
    }
    json_incref(cur);
    if (!store_write(c, id, obj, 'u')) {
        if (t->hooks.undo)
            t->hooks.undo(obj, cur);
        json_decref(cur);
        goto out;
    }
    push_undo(c, obj, cur);
    json_array_set(t->objs, index, obj);
    json_object_set_new(updated, id, update_diff(t, patch, cur, obj));
    json_decref(cur);
out:
    json_decref(obj);
    gh_verr_clear(&ve);
    return fail;
}

static json_t *do_destroy(struct set_ctx *c, const char *id, json_t *destroyed)
{
    struct gh_objtype *t = c->t;
    size_t index;
    json_t *cur = gh_obj_find(t, id, &index);
    if (!cur)
        return set_error("notFound", "no %s with id \"%s\"", t->type, id);
    if (!can(c->who, t, "Destroy"))
        return set_error("forbidden", "this credential lacks the %sDestroy permission",
                         t->perm_prefix);
    if (t->singleton)
        return set_error("singleton", "%s is a singleton and cannot be destroyed", t->type);
    struct gh_verr ve;
    gh_verr_init(&ve);
    json_t *fail = NULL;
    if (t->hooks.apply && !t->hooks.apply(NULL, cur, &ve)) {
        fail = gh_verr_json(&ve);
        gh_verr_clear(&ve);
        return fail;
    }
    gh_verr_clear(&ve);
    if (!store_write(c, id, NULL, 'd')) {
        if (t->hooks.undo)
            t->hooks.undo(NULL, cur);
        return NULL;
    }
    push_undo(c, NULL, cur);
    json_array_remove(t->objs, index);
    json_array_append_new(destroyed, json_string(id));
    return NULL;
}

/* A store failure: roll back, undo every side effect newest first, reload from the store. */
static void set_abort(struct set_ctx *c)
{
    gh_store_rollback(gh_model.store);
    for (size_t i = c->nundo; i-- > 0;)
        if (c->t->hooks.undo)
            c->t->hooks.undo(c->undo[i].obj, c->undo[i].old);
    gh_err err = {0};
    if (!gh_type_load(c->t, &err))
        gh_log(NULL, NULL, "store-error", "%s", err.msg);
    gh_log(NULL, NULL, "store-error", "%s/set not applied: %s", c->t->type, c->err.msg);
}

static void set_ctx_free(struct set_ctx *c)
{
    for (size_t i = 0; i < c->nundo; i++) {
        json_decref(c->undo[i].obj);
        json_decref(c->undo[i].old);
    }
    free(c->undo);
}

static json_t *or_null(json_t *v)
{
    if (json_is_object(v) && json_object_size(v))
        return v;
    if (json_is_array(v) && json_array_size(v))
        return v;
    json_decref(v);
    return json_null();
}

/* The response maps of one /set. Owner: the call; set_out_free releases what is left. */
struct set_out {
    json_t *created, *not_created, *updated, *not_updated, *destroyed, *not_destroyed;
};

static void set_out_free(struct set_out *o)
{
    json_decref(o->created);
    json_decref(o->not_created);
    json_decref(o->updated);
    json_decref(o->not_updated);
    json_decref(o->destroyed);
    json_decref(o->not_destroyed);
}

/* Creates, then updates, then destroys (RFC 8620 §5.3). False on a store failure. */
/* Tells the type which updates this /set will make, by resolved id. */
static void set_begin(struct set_ctx *c, json_t *update, json_t *doomed)
{
    json_t *updates = json_object(), *v;
    const char *key;
    json_object_foreach(update, key, v)
    {
        const char *id = c->req ? gh_jmap_resolve_id(c->req, key) : key;
        if (id && !json_object_get(doomed, id))
            json_object_set(updates, id, v);
    }
    c->t->hooks.set_begin(updates);
    json_decref(updates);
}

static bool run_ops(struct set_ctx *c, json_t *create, json_t *update, json_t *destroy,
                    struct set_out *o)
{
    json_t *doomed = json_object(); /* ids about to be destroyed: their updates are moot */
    size_t i;
    json_t *v;
    const char *key;
    json_array_foreach(destroy, i, v)
    {
        const char *id =
            c->req ? gh_jmap_resolve_id(c->req, json_string_value(v)) : json_string_value(v);
        if (id)
            json_object_set_new(doomed, id, json_true());
    }
    json_object_foreach(create, key, v)
    {
        json_t *e = do_create(c, key, v, o->created);
        if (e)
            json_object_set_new(o->not_created, key, e);
        if (c->failed)
            goto out;
    }
    if (c->t->hooks.set_begin)
        set_begin(c, update, doomed);
    json_object_foreach(update, key, v)
    {
        const char *id = c->req ? gh_jmap_resolve_id(c->req, key) : key;
        json_t *e = !id ? set_error("notFound", "\"%s\" is not a creation id of this request", key)
                    : json_object_get(doomed, id)
                        ? set_error("willDestroy", "%s is destroyed by the same call", id)
                        : do_update(c, id, v, o->updated);
        if (e)
            json_object_set_new(o->not_updated, id ? id : key, e);
        if (c->failed)
            goto out;
    }
    json_array_foreach(destroy, i, v)
    {
        const char *given = json_string_value(v);
        const char *id = c->req ? gh_jmap_resolve_id(c->req, given) : given;
        json_t *e =
            !id ? set_error("notFound", "\"%s\" is not a creation id of this request", given)
                : do_destroy(c, id, o->destroyed);
        if (e)
            json_object_set_new(o->not_destroyed, id ? id : given, e);
        if (c->failed)
            goto out;
    }
out:
    json_decref(doomed);
    return !c->failed;
}

/* Checks the /set arguments; *n gets the number of operations. */
static bool set_args(json_t *args, json_t **if_state, json_t **create, json_t **update,
                     json_t **destroy, size_t *n, json_t **error)
{
    static const char *const allowed[] = {"ifInState", "create", "update", "destroy", NULL};
    bool bad = false;
    *if_state = opt_arg(args, "ifInState", JSON_STRING, &bad);
    *create = opt_arg(args, "create", JSON_OBJECT, &bad);
    *update = opt_arg(args, "update", JSON_OBJECT, &bad);
    *destroy = opt_arg(args, "destroy", JSON_ARRAY, &bad);
    if (!known_args(args, allowed, error))
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(*destroy, i, v) bad |= !json_is_string(v);
    if (bad) {
        *error = gh_jmap_error("invalidArguments",
                               "ifInState must be a string, create and update objects, destroy "
                               "an array of ids");
        return false;
    }
    *n = json_object_size(*create) + json_object_size(*update) + json_array_size(*destroy);
    if (*n > GH_JMAP_MAX_OBJECTS_IN_SET) {
        *error = gh_jmap_error("requestTooLarge",
                               "%zu operations; at most %d per call (maxObjectsInSet)", *n,
                               GH_JMAP_MAX_OBJECTS_IN_SET);
        return false;
    }
    return true;
}

static json_t *set_run(struct gh_objtype *t, json_t *args, const struct gh_principal *who,
                       struct gh_jmap_request *req, json_t **error)
{
    json_t *if_state, *create, *update, *destroy;
    size_t n;
    if (!set_args(args, &if_state, &create, &update, &destroy, &n, error))
        return NULL;
    /* The transaction comes first: on a shared store it holds other nodes' writers off,
     * so catching up with their changes and then checking the state is exact. */
    struct set_ctx c = {.t = t, .who = who, .req = req};
    if (n && !gh_store_begin(gh_model.store, &c.err)) {
        *error = gh_jmap_error("serverFail", "%s", c.err.msg);
        return NULL;
    }
    gh_objects_sync();
    char old_state[64], new_state[64];
    gh_type_state(t, old_state);
    if (if_state && strcmp(json_string_value(if_state), old_state)) {
        if (n)
            gh_store_rollback(gh_model.store);
        *error = gh_jmap_error("stateMismatch", "ifInState is \"%s\"; the state is \"%s\"",
                               json_string_value(if_state), old_state);
        return NULL;
    }
    struct set_out o = {json_object(), json_object(), json_object(),
                        json_object(), json_array(),  json_object()};
    gh_set_caller = who;
    bool ran = run_ops(&c, create, update, destroy, &o);
    gh_set_caller = NULL;
    if (!ran || (n && !gh_store_commit(gh_model.store, &c.err))) {
        set_abort(&c);
        if (t->hooks.set_end)
            t->hooks.set_end();
        *error = gh_jmap_error("serverFail", "the change could not be stored: %s", c.err.msg);
        set_out_free(&o);
        set_ctx_free(&c);
        return NULL;
    }
    if (t->hooks.set_end)
        t->hooks.set_end();
    gh_sync_note(c.last_seq);
    gh_type_state(t, new_state);
    if (strcmp(new_state, old_state)) {
        if (t->hooks.committed)
            t->hooks.committed(t);
        gh_jmap_state_changed(t->type, new_state);
    }
    json_t *res = json_pack("{ss ss ss}", "accountId", GH_JMAP_ACCOUNT_ID, "oldState", old_state,
                            "newState", new_state);
    json_object_set_new(res, "created", or_null(o.created));
    json_object_set_new(res, "updated", or_null(o.updated));
    json_object_set_new(res, "destroyed", or_null(o.destroyed));
    json_object_set_new(res, "notCreated", or_null(o.not_created));
    json_object_set_new(res, "notUpdated", or_null(o.not_updated));
    json_object_set_new(res, "notDestroyed", or_null(o.not_destroyed));
    set_ctx_free(&c);
    return res;
}

json_t *gh_objects_set_internal(struct gh_objtype *t, json_t *args, json_t **error)
{
    return set_run(t, args, &internal_admin, NULL, error);
}

/* ---- /query ---- */

static bool filter_check(const struct gh_objtype *t, const json_t *f, int depth, json_t **error)
{
    if (!json_is_object(f)) {
        *error = gh_jmap_error("invalidArguments", "a filter must be an object");
        return false;
    }
    if (depth > MAX_FILTER_DEPTH) {
        *error = gh_jmap_error("unsupportedFilter", "filters nest at most %d levels deep",
                               MAX_FILTER_DEPTH);
        return false;
    }
    json_t *op = json_object_get(f, "operator");
    if (op) {
        const char *o = json_string_value(op);
        json_t *conds = json_object_get(f, "conditions");
        if (!o || (strcmp(o, "AND") && strcmp(o, "OR") && strcmp(o, "NOT"))) {
            *error =
                gh_jmap_error("invalidArguments", "operator must be \"AND\", \"OR\" or \"NOT\"");
            return false;
        }
        if (!json_is_array(conds) || json_object_size(f) != 2) {
            *error = gh_jmap_error("invalidArguments", "a FilterOperator has exactly operator "
                                                       "and conditions (an array)");
            return false;
        }
        size_t i;
        json_t *c;
        json_array_foreach(conds, i, c) if (!filter_check(t, c, depth + 1, error)) return false;
        return true;
    }
    if (json_object_get(f, "conditions")) {
        *error = gh_jmap_error("invalidArguments", "conditions without an operator");
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)f, key, v)
    {
        const struct gh_prop *p = gh_prop_find(t, key);
        if (!p || p->filter == GH_FILTER_NONE) {
            *error =
                gh_jmap_error("unsupportedFilter", "%s cannot be filtered by \"%s\"", t->type, key);
            return false;
        }
        if (!json_is_string(v)) {
            *error = gh_jmap_error("invalidArguments", "filter condition %s must be a string", key);
            return false;
        }
    }
    return true;
}

static bool filter_match(const struct gh_objtype *t, const json_t *obj, const json_t *f)
{
    json_t *op = json_object_get(f, "operator");
    if (op) {
        const char *o = json_string_value(op);
        json_t *conds = json_object_get(f, "conditions");
        size_t i;
        json_t *c;
        bool any = false, all = true;
        json_array_foreach(conds, i, c)
        {
            bool m = filter_match(t, obj, c);
            any |= m;
            all &= m;
        }
        return !strcmp(o, "AND") ? all : !strcmp(o, "OR") ? any : !any;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)f, key, v)
    {
        const struct gh_prop *p = gh_prop_find(t, key);
        const char *have = json_string_value(json_object_get(obj, key));
        const char *want = json_string_value(v);
        if (!have)
            return false;
        if (p->filter == GH_FILTER_TEXT ? !strcasestr(have, want) : strcmp(have, want) != 0)
            return false;
    }
    return true;
}

enum collation { COLL_CASEMAP, COLL_OCTET };

struct sort_key {
    const char *prop;
    bool ascending;
    enum collation coll;
};

struct sort_spec {
    struct sort_key keys[8];
    unsigned n;
    const json_t *objs;
};

static bool sort_check(const struct gh_objtype *t, const json_t *sort, struct sort_spec *spec,
                       json_t **error)
{
    spec->n = 0;
    if (!sort)
        return true;
    if (json_array_size(sort) > 8) {
        *error = gh_jmap_error("unsupportedSort", "at most 8 sort comparators");
        return false;
    }
    size_t i;
    json_t *c;
    json_array_foreach(sort, i, c)
    {
        json_t *prop = json_object_get(c, "property"), *asc = json_object_get(c, "isAscending");
        json_t *coll = json_object_get(c, "collation");
        if (!json_is_object(c) || !json_is_string(prop) || (asc && !json_is_boolean(asc)) ||
            (coll && !json_is_string(coll))) {
            *error = gh_jmap_error("invalidArguments",
                                   "a comparator is {\"property\": name, \"isAscending\": "
                                   "bool, \"collation\": string}");
            return false;
        }
        const struct gh_prop *p = gh_prop_find(t, json_string_value(prop));
        if (!p || !p->sortable) {
            *error = gh_jmap_error("unsupportedSort", "%s cannot be sorted by \"%s\"", t->type,
                                   json_string_value(prop));
            return false;
        }
        struct sort_key *k = &spec->keys[spec->n++];
        k->prop = p->name;
        k->ascending = !asc || json_is_true(asc);
        k->coll = COLL_CASEMAP;
        const char *cn = json_string_value(coll);
        if (cn && !strcmp(cn, "i;octet"))
            k->coll = COLL_OCTET;
        else if (cn && strcmp(cn, "i;ascii-casemap") && strcmp(cn, "i;unicode-casemap")) {
            *error = gh_jmap_error("unsupportedSort",
                                   "collation \"%s\" is not supported (i;ascii-casemap, "
                                   "i;unicode-casemap, i;octet)",
                                   cn);
            return false;
        }
    }
    return true;
}

static int sort_cmp(const void *a, const void *b, void *arg)
{
    const struct sort_spec *spec = arg;
    size_t ia = *(const size_t *)a, ib = *(const size_t *)b;
    const json_t *oa = json_array_get(spec->objs, ia), *ob = json_array_get(spec->objs, ib);
    for (unsigned i = 0; i < spec->n; i++) {
        const char *va = json_string_value(json_object_get(oa, spec->keys[i].prop));
        const char *vb = json_string_value(json_object_get(ob, spec->keys[i].prop));
        int r = spec->keys[i].coll == COLL_OCTET ? strcmp(va ? va : "", vb ? vb : "")
                                                 : strcasecmp(va ? va : "", vb ? vb : "");
        if (r)
            return spec->keys[i].ascending ? r : -r;
    }
    return ia < ib ? -1 : ia > ib; /* creation order breaks ties: stable */
}

/* The ids of the objects matching filter, sorted. New reference. */
static json_t *query_ids(const struct gh_objtype *t, const json_t *filter, struct sort_spec *spec)
{
    size_t n = json_array_size(t->objs), k = 0;
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    json_t *ids = json_array();
    if (!idx)
        return ids;
    for (size_t i = 0; i < n; i++)
        if (!filter || filter_match(t, json_array_get(t->objs, i), filter))
            idx[k++] = i;
    spec->objs = t->objs;
    qsort_r(idx, k, sizeof *idx, sort_cmp, spec);
    for (size_t i = 0; i < k; i++)
        json_array_append(ids, json_object_get(json_array_get(t->objs, idx[i]), "id"));
    free(idx);
    return ids;
}

static json_t *query_impl(struct gh_objtype *t, struct gh_jmap_call *call, json_t **error)
{
    static const char *const allowed[] = {"filter",       "sort",  "position",       "anchor",
                                          "anchorOffset", "limit", "calculateTotal", NULL};
    if (!method_allowed(call, t, "Query", allowed, error))
        return NULL;
    bool bad = false;
    json_t *filter = json_object_get(call->args, "filter");
    json_t *sort = opt_arg(call->args, "sort", JSON_ARRAY, &bad);
    json_t *anchor = opt_arg(call->args, "anchor", JSON_STRING, &bad);
    json_t *total = opt_arg(call->args, "calculateTotal", JSON_TRUE, &bad);
    if (bad) {
        *error = gh_jmap_error("invalidArguments", "sort must be an array, anchor a string, "
                                                   "calculateTotal a boolean");
        return NULL;
    }
    json_int_t position, offset, limit;
    if (!int_arg(call->args, "position", false, 0, &position, error) ||
        !int_arg(call->args, "anchorOffset", false, 0, &offset, error) ||
        !int_arg(call->args, "limit", true, -1, &limit, error))
        return NULL;
    if (json_is_null(filter))
        filter = NULL;
    struct sort_spec spec;
    if ((filter && !filter_check(t, filter, 0, error)) || !sort_check(t, sort, &spec, error))
        return NULL;
    json_t *all = query_ids(t, filter, &spec);
    json_int_t n = (json_int_t)json_array_size(all), start;
    if (anchor) {
        start = -1;
        for (json_int_t i = 0; i < n; i++)
            if (!strcmp(json_string_value(json_array_get(all, (size_t)i)),
                        json_string_value(anchor)))
                start = i;
        if (start < 0) {
            json_decref(all);
            *error = gh_jmap_error("anchorNotFound", "\"%s\" is not in the results",
                                   json_string_value(anchor));
            return NULL;
        }
        start += offset;
    } else {
        start = position < 0 ? position + n : position;
    }
    if (start < 0)
        start = 0;
    if (start > n)
        start = n;
    json_t *ids = json_array();
    for (json_int_t i = start; i < n && (limit < 0 || i - start < limit); i++)
        json_array_append(ids, json_array_get(all, (size_t)i));
    json_t *res = response("queryState", t);
    json_object_set_new(res, "canCalculateChanges", json_true());
    json_object_set_new(res, "position", json_integer(start));
    json_object_set_new(res, "ids", ids);
    if (json_is_true(total))
        json_object_set_new(res, "total", json_integer(n));
    json_decref(all);
    return res;
}

/* ---- /changes ---- */

struct change_walk {
    json_t *first, *last; /* id → op of its first and last entry in the window */
    json_t *order;        /* ids in order of first appearance */
    json_int_t max;       /* 0 = unbounded */
    uint64_t stop_seq;    /* seq of the last entry taken */
    bool more;
};

static bool change_row(uint64_t seq, const char *id, char op, void *arg)
{
    struct change_walk *w = arg;
    char ops[2] = {op, 0};
    if (!json_object_get(w->first, id)) {
        if (w->max && (json_int_t)json_array_size(w->order) >= w->max) {
            w->more = true;
            return false;
        }
        json_object_set_new(w->first, id, json_string(ops));
        json_array_append_new(w->order, json_string(id));
    }
    json_object_set_new(w->last, id, json_string(ops));
    w->stop_seq = seq;
    return true;
}

static bool since_state(const json_t *args, const char *name, uint64_t *since, json_t **error)
{
    json_t *s = json_object_get(args, name);
    if (!json_is_string(s)) {
        *error = gh_jmap_error("invalidArguments", "%s (a state string) is required", name);
        return false;
    }
    if (!gh_state_parse(json_string_value(s), since)) {
        *error = gh_jmap_error("cannotCalculateChanges",
                               "\"%s\" is not a state of this server (it may come from before "
                               "the store was reset); fetch everything again",
                               json_string_value(s));
        return false;
    }
    return true;
}

static json_t *changes_impl(struct gh_objtype *t, struct gh_jmap_call *call, json_t **error)
{
    static const char *const allowed[] = {"sinceState", "maxChanges", NULL};
    json_int_t max;
    uint64_t since, current;
    if (!method_allowed(call, t, "Get", allowed, error) ||
        !int_arg(call->args, "maxChanges", true, 0, &max, error))
        return NULL;
    if (json_is_integer(json_object_get(call->args, "maxChanges")) && max == 0) {
        *error = gh_jmap_error("invalidArguments", "maxChanges must be greater than 0");
        return NULL;
    }
    if (!since_state(call->args, "sinceState", &since, error))
        return NULL;
    gh_err err = {0};
    if (!gh_store_last_seq(gh_model.store, t->type, &current, &err)) {
        *error = gh_jmap_error("serverFail", "%s", err.msg);
        return NULL;
    }
    if (since > current) {
        *error = gh_jmap_error("cannotCalculateChanges", "state %s is newer than the server's",
                               json_string_value(json_object_get(call->args, "sinceState")));
        return NULL;
    }
    struct change_walk w = {json_object(), json_object(), json_array(), max, since, false};
    json_t *res = NULL;
    if (!gh_store_changes(gh_model.store, t->type, since, change_row, &w, &err)) {
        *error = gh_jmap_error("serverFail", "%s", err.msg);
        goto out;
    }
    json_t *created = json_array(), *updated = json_array(), *destroyed = json_array();
    size_t i;
    json_t *idv;
    json_array_foreach(w.order, i, idv)
    {
        const char *id = json_string_value(idv);
        char first = json_string_value(json_object_get(w.first, id))[0];
        char last = json_string_value(json_object_get(w.last, id))[0];
        if (first == 'c' && last != 'd')
            json_array_append(created, idv);
        else if (first != 'c' && last == 'd')
            json_array_append(destroyed, idv);
        else if (first != 'c')
            json_array_append(updated, idv);
    }
    char new_state[64];
    if (w.more)
        snprintf(new_state, sizeof new_state, "%s-%llu", gh_model.epoch,
                 (unsigned long long)w.stop_seq);
    else
        gh_type_state(t, new_state);
    res = json_pack("{ss sO ss sb so so so}", "accountId", GH_JMAP_ACCOUNT_ID, "oldState",
                    json_object_get(call->args, "sinceState"), "newState", new_state,
                    "hasMoreChanges", w.more, "created", created, "updated", updated, "destroyed",
                    destroyed);
out:
    json_decref(w.first);
    json_decref(w.last);
    json_decref(w.order);
    return res;
}

/* ---- /queryChanges ---- */

static bool immutable_prop(const struct gh_objtype *t, const char *name)
{
    const struct gh_prop *p = gh_prop_find(t, name);
    return p && (p->mut == GH_CREATE_ONLY || !strcmp(name, "id"));
}

/* Whether every property the filter tests never changes once an object exists. */
static bool immutable_filter(const struct gh_objtype *t, const json_t *f)
{
    json_t *conds = json_object_get(f, "conditions"), *v;
    const char *key;
    size_t i;
    if (json_object_get(f, "operator")) {
        json_array_foreach(conds, i, v)
        {
            if (!immutable_filter(t, v))
                return false;
        }
        return true;
    }
    json_object_foreach((json_t *)f, key, v)
    {
        if (!immutable_prop(t, key))
            return false;
    }
    return true;
}

/*
 * upToId (RFC 8620 §5.6): when the filter and sort read only properties that never change,
 * a record keeps its place relative to the others, so changes after the client's last
 * cached id cannot concern it. The index of upToId in the current results, or SIZE_MAX
 * when nothing may be left out (other properties, no upToId, or upToId no longer there).
 */
static size_t up_to_index(const struct gh_objtype *t, const json_t *filter,
                          const struct sort_spec *spec, const json_t *up_to, const json_t *ids)
{
    if (!json_is_string(up_to) || (filter && !immutable_filter(t, filter)))
        return SIZE_MAX;
    for (unsigned k = 0; k < spec->n; k++)
        if (!immutable_prop(t, spec->keys[k].prop))
            return SIZE_MAX;
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v)
    {
        if (json_equal(v, up_to))
            return i;
    }
    return SIZE_MAX;
}

/* The removed ids without those still in the results after index cut. New reference. */
static json_t *removed_up_to(const json_t *order, const json_t *ids, size_t cut)
{
    json_t *after = json_object(), *kept = json_array(), *v;
    size_t i;
    json_array_foreach(ids, i, v)
    {
        if (i > cut)
            json_object_set(after, json_string_value(v), v);
    }
    json_array_foreach(order, i, v)
    {
        if (!json_object_get(after, json_string_value(v)))
            json_array_append(kept, v);
    }
    json_decref(after);
    return kept;
}

static json_t *query_changes_impl(struct gh_objtype *t, struct gh_jmap_call *call, json_t **error)
{
    static const char *const allowed[] = {
        "filter", "sort", "sinceQueryState", "maxChanges", "upToId", "calculateTotal", NULL};
    if (!method_allowed(call, t, "Query", allowed, error))
        return NULL;
    bool bad = false;
    json_t *filter = json_object_get(call->args, "filter");
    json_t *sort = opt_arg(call->args, "sort", JSON_ARRAY, &bad);
    json_t *total = opt_arg(call->args, "calculateTotal", JSON_TRUE, &bad);
    json_t *up_to = opt_arg(call->args, "upToId", JSON_STRING, &bad);
    json_int_t max;
    if (bad) {
        *error = gh_jmap_error("invalidArguments", "sort must be an array, upToId a string, "
                                                   "calculateTotal a boolean");
        return NULL;
    }
    if (!int_arg(call->args, "maxChanges", true, 0, &max, error))
        return NULL;
    if (json_is_null(filter))
        filter = NULL;
    struct sort_spec spec;
    if ((filter && !filter_check(t, filter, 0, error)) || !sort_check(t, sort, &spec, error))
        return NULL;
    uint64_t since, current;
    if (!since_state(call->args, "sinceQueryState", &since, error))
        return NULL;
    gh_err err = {0};
    if (!gh_store_last_seq(gh_model.store, t->type, &current, &err) || since > current) {
        *error = gh_jmap_error("cannotCalculateChanges", "state %s is not known here",
                               json_string_value(json_object_get(call->args, "sinceQueryState")));
        return NULL;
    }
    struct change_walk w = {json_object(), json_object(), json_array(), 0, since, false};
    if (!gh_store_changes(gh_model.store, t->type, since, change_row, &w, &err)) {
        json_decref(w.first);
        json_decref(w.last);
        json_decref(w.order);
        *error = gh_jmap_error("serverFail", "%s", err.msg);
        return NULL;
    }
    /* Every changed record is removed and, when it still matches, added at its new index:
     * exact for filters and sorts on mutable properties (RFC 8620 §5.6). */
    json_t *ids = query_ids(t, filter, &spec), *added = json_array();
    size_t cut = up_to_index(t, filter, &spec, up_to, ids), i;
    json_t *v, *removed = removed_up_to(w.order, ids, cut);
    json_array_foreach(ids, i, v)
    {
        if (i <= cut && json_object_get(w.first, json_string_value(v)))
            json_array_append_new(added, json_pack("{sO sI}", "id", v, "index", (json_int_t)i));
    }
    json_t *res = NULL;
    size_t nchanges = json_array_size(removed) + json_array_size(added);
    if (max > 0 && nchanges > (size_t)max) {
        *error = gh_jmap_error("tooManyChanges", "%zu changes; maxChanges is %lld", nchanges,
                               (long long)max);
        json_decref(added);
    } else {
        res = response("newQueryState", t);
        json_object_set(res, "oldQueryState", json_object_get(call->args, "sinceQueryState"));
        json_object_set(res, "removed", removed);
        json_object_set_new(res, "added", added);
        if (json_is_true(total))
            json_object_set_new(res, "total", json_integer((json_int_t)json_array_size(ids)));
    }
    json_decref(ids);
    json_decref(removed);
    json_decref(w.first);
    json_decref(w.last);
    json_decref(w.order);
    return res;
}

/* ---- entry points: the type comes from the method name ---- */

typedef json_t *(*impl_fn)(struct gh_objtype *t, struct gh_jmap_call *call, json_t **error);

static json_t *dispatch(impl_fn fn, struct gh_jmap_call *call, json_t **error)
{
    struct gh_objtype *t = call_type(call);
    if (!t) {
        *error = gh_jmap_error("unknownMethod", "%s", call->method);
        return NULL;
    }
    if (!json_is_object(call->args)) {
        *error = gh_jmap_error("invalidArguments", "the arguments must be an object");
        return NULL;
    }
    gh_objects_lock();
    json_t *res = fn(t, call, error);
    gh_objects_unlock();
    return res;
}

static json_t *set_impl(struct gh_objtype *t, struct gh_jmap_call *call, json_t **error)
{
    return set_run(t, call->args, call->who, call->req, error);
}

json_t *gh_method_get(struct gh_jmap_call *call, json_t **error)
{
    return dispatch(get_impl, call, error);
}

json_t *gh_method_set(struct gh_jmap_call *call, json_t **error)
{
    return dispatch(set_impl, call, error);
}

json_t *gh_method_query(struct gh_jmap_call *call, json_t **error)
{
    return dispatch(query_impl, call, error);
}

json_t *gh_method_changes(struct gh_jmap_call *call, json_t **error)
{
    return dispatch(changes_impl, call, error);
}

json_t *gh_method_query_changes(struct gh_jmap_call *call, json_t **error)
{
    return dispatch(query_changes_impl, call, error);
}
