/*
 * schema: the generic half of every object type. Given a type's property table it checks
 * and normalises values, builds objects from create arguments and patches, renders /get
 * views and the schema JSON. Type-specific rules live in the types' validate hooks.
 */
#include "objects/schema.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"

#define MAX_SAFE_INT       9007199254740991LL /* 2^53 - 1, the JSON UnsignedInt bound */
#define DEFAULT_MAX_STRING 255
#define DEFAULT_MAX_TEXT   65536
#define DEFAULT_MAX_ITEMS  1000

/* ---- validation errors ---- */

void gh_verr_init(struct gh_verr *ve)
{
    memset(ve, 0, sizeof *ve);
    ve->type = "invalidProperties";
    ve->props = json_array();
}

void gh_verr_clear(struct gh_verr *ve)
{
    json_decref(ve->props);
    ve->props = NULL;
}

bool gh_verr_ok(const struct gh_verr *ve)
{
    return !ve->desc[0] && json_array_size(ve->props) == 0;
}

static bool has_prop(const json_t *list, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (!strcmp(json_string_value(v), name))
            return true;
    }
    return false;
}

void gh_verr_add(struct gh_verr *ve, const char *prop, const char *fmt, ...)
{
    size_t n = strlen(ve->desc);
    if (n && n + 2 < sizeof ve->desc) {
        memcpy(ve->desc + n, "; ", 3);
        n += 2;
    }
    if (prop && n < sizeof ve->desc)
        n += (size_t)snprintf(ve->desc + n, sizeof ve->desc - n, "%s: ", prop);
    if (n < sizeof ve->desc) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ve->desc + n, sizeof ve->desc - n, fmt, ap);
        va_end(ap);
    }
    if (prop && !has_prop(ve->props, prop))
        json_array_append_new(ve->props, json_string(prop));
}

json_t *gh_verr_json(const struct gh_verr *ve)
{
    json_t *e = json_pack("{ss ss}", "type", ve->type, "description", ve->desc);
    if (json_array_size(ve->props))
        json_object_set(e, "properties", ve->props);
    else
        json_object_set_new(e, "properties", json_array());
    if (ve->existing[0])
        json_object_set_new(e, "existingId", json_string(ve->existing));
    return e;
}

/* ---- durations ---- */

static const struct {
    const char *suffix;
    uint64_t ms;
} units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

bool gh_duration_parse(const json_t *v, uint64_t *ms, gh_err *err)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0)
            return gh_fail(err, "a duration cannot be negative");
        *ms = (uint64_t)n;
        return true;
    }
    if (!json_is_string(v))
        return gh_fail(err, "expected a duration such as \"500ms\", \"30s\", \"1m\", \"2h\", "
                            "\"1d\" or a whole number of milliseconds");
    const char *s = json_string_value(v);
    uint64_t n = 0;
    const char *p = s;
    while (isdigit((unsigned char)*p)) {
        if (n > UINT64_MAX / 100)
            return gh_fail(err, "\"%.40s\" is too long a duration", s);
        n = n * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p == s || strlen(s) != json_string_length(v))
        return gh_fail(err,
                       "\"%.40s\" is not a duration: use a whole number with ms, s, m, h or d "
                       "(\"500ms\", \"30s\", \"1m\", \"2h\", \"1d\")",
                       s);
    if (!*p) {
        *ms = n;
        return true;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (!strcmp(p, units[i].suffix)) {
            if (n > UINT64_MAX / units[i].ms / 2)
                return gh_fail(err, "\"%.40s\" is too long a duration", s);
            *ms = n * units[i].ms;
            return true;
        }
    }
    return gh_fail(err,
                   "\"%.40s\" is not a duration: the unit must be ms, s, m, h or d "
                   "(\"500ms\", \"30s\", \"1m\", \"2h\", \"1d\")",
                   s);
}

void gh_duration_format(uint64_t ms, char out[32])
{
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms && ms % units[i].ms == 0) {
            snprintf(out, 32, "%" PRIu64 "%s", ms / units[i].ms, units[i].suffix);
            return;
        }
    }
    snprintf(out, 32, "%" PRIu64 "ms", ms);
}

static void duration_text(int64_t ms, char out[32])
{
    gh_duration_format((uint64_t)ms, out);
}

/* ---- single values ---- */

bool gh_rate_parse(const json_t *v, uint32_t *count, uint64_t *period_ms, gh_err *err)
{
    if (!json_is_object(v))
        return gh_fail(err, "expected a rate such as {\"count\": 100, \"period\": \"1d\"}");
    const char *key;
    json_t *m;
    json_object_foreach((json_t *)v, key, m)
    {
        if (strcmp(key, "count") && strcmp(key, "period"))
            return gh_fail(err, "unknown member \"%.64s\": a rate has only count and period", key);
    }
    json_t *c = json_object_get(v, "count");
    if (!json_is_integer(c) || json_integer_value(c) < 1 || json_integer_value(c) > UINT32_MAX)
        return gh_fail(err,
                       "count must be a whole number from 1 to %u (a null rate turns the "
                       "rule off)",
                       UINT32_MAX);
    json_t *p = json_object_get(v, "period");
    if (!p)
        return gh_fail(err, "period is missing: a duration such as \"1h\" or \"1d\"");
    gh_err e = {0};
    if (!gh_duration_parse(p, period_ms, &e)) {
        gh_fail(err, "period: %s", e.msg);
        return false;
    }
    if (*period_ms == 0)
        return gh_fail(err, "period must be more than 0");
    *count = (uint32_t)json_integer_value(c);
    return true;
}

const struct gh_prop *gh_prop_find(const struct gh_objtype *t, const char *name)
{
    for (unsigned i = 0; i < t->nprops; i++)
        if (!strcmp(t->props[i].name, name))
            return &t->props[i];
    return NULL;
}

static const char *type_name(enum gh_ptype type)
{
    switch (type) {
    case GH_PT_ID:
        return "Id";
    case GH_PT_STRING:
        return "String";
    case GH_PT_BOOLEAN:
        return "Boolean";
    case GH_PT_UINT:
        return "UnsignedInt";
    case GH_PT_DURATION:
        return "Duration";
    case GH_PT_ENUM:
        return "Enum";
    case GH_PT_SOCKADDR:
        return "SocketAddr";
    case GH_PT_IPMASK:
        return "IpMask";
    case GH_PT_TEXT:
        return "Text";
    case GH_PT_DATE:
        return "UTCDate";
    case GH_PT_RATE:
        return "Rate";
    }
    return "String";
}

static bool check_string(const struct gh_prop *p, const json_t *v, gh_err *err)
{
    if (!json_is_string(v))
        return gh_fail(err, "expected a string");
    size_t len = json_string_length(v);
    unsigned max = p->max_len              ? p->max_len
                   : p->type == GH_PT_TEXT ? DEFAULT_MAX_TEXT
                                           : DEFAULT_MAX_STRING;
    if (len != strlen(json_string_value(v)))
        return gh_fail(err, "a NUL character is not allowed");
    if (len == 0 && p->type != GH_PT_TEXT)
        return gh_fail(err, "cannot be empty");
    if (len > max)
        return gh_fail(err, "longer than %u characters", max);
    return true;
}

/* One member's value (or the whole value of a scalar property). New reference. */
static json_t *member_value(const struct gh_prop *p, json_t *in, gh_err *err)
{
    json_t *out = NULL;
    char text[GH_ADDR_TEXT];
    switch (p->type) {
    case GH_PT_ID:
    case GH_PT_STRING:
    case GH_PT_TEXT:
    case GH_PT_DATE:
        if (!check_string(p, in, err))
            return NULL;
        out = json_incref(in);
        break;
    case GH_PT_BOOLEAN:
        if (!json_is_boolean(in)) {
            gh_fail(err, "expected true or false");
            return NULL;
        }
        out = json_incref(in);
        break;
    case GH_PT_UINT: {
        if (!json_is_integer(in)) {
            gh_fail(err, "expected a whole number");
            return NULL;
        }
        json_int_t n = json_integer_value(in);
        if (n < 0 || n > MAX_SAFE_INT) {
            gh_fail(err, "%" JSON_INTEGER_FORMAT " is not an unsigned integer", n);
            return NULL;
        }
        if (p->min && n < p->min) {
            gh_fail(err, "%" JSON_INTEGER_FORMAT " is below the minimum of %" PRId64, n, p->min);
            return NULL;
        }
        if (p->max && n > p->max) {
            gh_fail(err, "%" JSON_INTEGER_FORMAT " is above the maximum of %" PRId64, n, p->max);
            return NULL;
        }
        out = json_incref(in);
        break;
    }
    case GH_PT_DURATION: {
        uint64_t ms;
        char a[32], b[32];
        if (!gh_duration_parse(in, &ms, err))
            return NULL;
        if (ms == 0 || (p->min && ms < (uint64_t)p->min)) {
            duration_text(p->min ? p->min : 1, a);
            gh_fail(err, "must be at least %s", a);
            return NULL;
        }
        if (p->max && ms > (uint64_t)p->max) {
            duration_text(p->max, b);
            gh_fail(err, "must be at most %s", b);
            return NULL;
        }
        gh_duration_format(ms, a);
        out = json_string(a);
        break;
    }
    case GH_PT_ENUM: {
        if (!json_is_string(in)) {
            gh_fail(err, "expected one of the enum values (a string)");
            return NULL;
        }
        for (const struct gh_enum_value *e = p->values; e->value; e++)
            if (!strcmp(e->value, json_string_value(in)))
                return json_incref(in);
        char list[512] = "";
        size_t n = 0;
        for (const struct gh_enum_value *e = p->values; e->value && n < sizeof list; e++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", e->value);
        gh_fail(err, "\"%.64s\" is not one of: %s", json_string_value(in), list);
        return NULL;
    }
    case GH_PT_SOCKADDR: {
        struct gh_sockaddr a;
        if (!check_string(p, in, err) || !gh_sockaddr_parse(json_string_value(in), &a, err))
            return NULL;
        gh_sockaddr_format(&a, text);
        out = json_string(text);
        break;
    }
    case GH_PT_RATE: {
        uint32_t count;
        uint64_t ms;
        char period[32];
        if (!gh_rate_parse(in, &count, &ms, err))
            return NULL;
        gh_duration_format(ms, period);
        out = json_pack("{sI ss}", "count", (json_int_t)count, "period", period);
        break;
    }
    case GH_PT_IPMASK: {
        struct gh_ipmask m;
        if (!check_string(p, in, err) || !gh_ipmask_parse(json_string_value(in), &m, err))
            return NULL;
        gh_ipmask_format(&m, text);
        out = json_string(text);
        break;
    }
    }
    if (out && p->check && !p->check(&out, err)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *default_value(const struct gh_prop *p)
{
    if (p->def)
        return json_loads(p->def, JSON_DECODE_ANY, NULL);
    if (p->list)
        return json_array();
    return json_null();
}

static bool has_default(const struct gh_prop *p)
{
    return p->def || (p->list && !p->min_items) || p->nullable;
}

/* Appends m to the list unless an equal member is there; false when it was. */
static bool list_add_unique(json_t *list, json_t *m)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (json_equal(v, m)) {
            json_decref(m);
            return false;
        }
    }
    json_array_append_new(list, m);
    return true;
}

static bool check_items(const struct gh_prop *p, const json_t *list, gh_err *err)
{
    size_t n = json_array_size(list);
    unsigned max = p->max_items ? p->max_items : DEFAULT_MAX_ITEMS;
    if (n < p->min_items)
        return gh_fail(err, "at least %u %s required", p->min_items,
                       p->min_items == 1 ? "entry is" : "entries are");
    if (n > max)
        return gh_fail(err, "at most %u entries are allowed", max);
    return true;
}

json_t *gh_prop_value(const struct gh_prop *p, json_t *in, gh_err *err)
{
    if (json_is_null(in) && p->null_is_value)
        return json_null();
    if (json_is_null(in)) {
        if (!has_default(p)) {
            if (p->list)
                gh_fail(err, "cannot be null: at least %u %s required", p->min_items,
                        p->min_items == 1 ? "entry is" : "entries are");
            else
                gh_fail(err, "cannot be null");
            return NULL;
        }
        return default_value(p);
    }
    if (!p->list)
        return member_value(p, in, err);
    if (!json_is_array(in) && !json_is_object(in)) {
        gh_fail(err, "expected a list: an array, or a set object such as {\"value\": true}");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    const char *key;
    json_t *v;
    gh_err e = {0};
    if (json_is_array(in)) {
        json_array_foreach(in, i, v)
        {
            json_t *m = member_value(p, v, &e);
            if (!m) {
                gh_fail(err, "entry %zu: %s", i + 1, e.msg);
                goto bad;
            }
            char shown[80];
            snprintf(shown, sizeof shown, "%s", json_is_string(m) ? json_string_value(m) : "");
            if (!list_add_unique(out, m)) {
                gh_fail(err, "\"%s\" is listed twice", shown);
                goto bad;
            }
        }
    } else {
        json_object_foreach(in, key, v)
        {
            if (!json_is_true(v)) {
                gh_fail(err, "in a set object every value must be true (\"%.64s\")", key);
                goto bad;
            }
            json_t *k = json_string(key);
            json_t *m = k ? member_value(p, k, &e) : NULL;
            json_decref(k);
            if (!m) {
                gh_fail(err, "%s", k ? e.msg : "not valid UTF-8");
                goto bad;
            }
            char shown[80];
            snprintf(shown, sizeof shown, "%s", json_is_string(m) ? json_string_value(m) : "");
            if (!list_add_unique(out, m)) {
                gh_fail(err, "\"%s\" is listed twice", shown);
                goto bad;
            }
        }
    }
    if (!check_items(p, out, err))
        goto bad;
    return out;
bad:
    json_decref(out);
    return NULL;
}

/* ---- create and patch ---- */

json_t *gh_schema_create(const struct gh_objtype *t, json_t *in, struct gh_verr *ve)
{
    json_t *obj = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(in, key, v)
    {
        const struct gh_prop *p = gh_prop_find(t, key);
        if (!p) {
            gh_verr_add(ve, key, "unknown property; %s has no property of that name", t->name);
            continue;
        }
        if (p->mut == GH_SERVER_SET) {
            gh_verr_add(ve, key, "set by the server; leave it out of a create");
            continue;
        }
        if (json_is_null(v) && !has_default(p) && !p->required)
            continue; /* null asks for the default: a value the type derives (a name) */
        gh_err err = {0};
        json_t *val = gh_prop_value(p, v, &err);
        if (!val) {
            gh_verr_add(ve, key, "%s", err.msg);
            continue;
        }
        json_object_set_new(obj, key, val);
    }
    for (unsigned i = 0; i < t->nprops; i++) {
        const struct gh_prop *p = &t->props[i];
        if (p->mut == GH_SERVER_SET || json_object_get(obj, p->name) ||
            json_object_get(in, p->name))
            continue;
        if (p->required)
            gh_verr_add(ve, p->name, "required%s%s", p->rule ? ": " : "", p->rule ? p->rule : "");
        else if (has_default(p))
            json_object_set_new(obj, p->name, default_value(p));
    }
    if (!gh_verr_ok(ve)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

struct set_op {
    const struct gh_prop *p;
    json_t *member; /* raw member text as a JSON string */
    bool add;
};

static bool patch_set_op(const struct gh_objtype *t, const char *key, json_t *v, struct set_op *op,
                         struct gh_verr *ve)
{
    const char *slash = strchr(key, '/');
    char prop[128], member[1024];
    size_t plen = (size_t)(slash - key);
    if (plen >= sizeof prop) {
        gh_verr_add(ve, NULL, "\"%.64s\": unknown property", key);
        return false;
    }
    memcpy(prop, key, plen);
    prop[plen] = 0;
    const struct gh_prop *p = gh_prop_find(t, prop);
    if (!p) {
        gh_verr_add(ve, prop, "unknown property; %s has no property of that name", t->name);
        return false;
    }
    if (!p->list) {
        ve->type = "invalidPatch";
        gh_verr_add(ve, prop, "\"%.64s\": %s is not a list, so a path inside it cannot be patched",
                    key, prop);
        return false;
    }
    if (strchr(slash + 1, '/') || !gh_pointer_unescape(slash + 1, member, sizeof member) ||
        !member[0]) {
        ve->type = "invalidPatch";
        gh_verr_add(ve, prop,
                    "\"%.64s\": a set patch key is %s/MEMBER (JSON-pointer escaped: ~1 for /, "
                    "~0 for ~)",
                    key, prop);
        return false;
    }
    if (!json_is_true(v) && !json_is_null(v)) {
        ve->type = "invalidPatch";
        gh_verr_add(ve, prop, "\"%.64s\": true adds the member and null removes it", key);
        return false;
    }
    if (p->mut != GH_MUTABLE) {
        gh_verr_add(ve, prop, "cannot be changed after create");
        return false;
    }
    op->p = p;
    op->member = json_string(member);
    op->add = json_is_true(v);
    if (!op->member) {
        gh_verr_add(ve, prop, "\"%.64s\" is not valid UTF-8", key);
        return false;
    }
    return true;
}

static void apply_set_op(json_t *obj, struct set_op *op, struct gh_verr *ve)
{
    json_t *list = json_object_get(obj, op->p->name);
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(obj, op->p->name, list);
    }
    gh_err err = {0};
    json_t *m = member_value(op->p, op->member, &err);
    if (op->add && !m) {
        gh_verr_add(ve, op->p->name, "%s", err.msg);
        return;
    }
    json_t *match = m ? m : op->member;
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (json_equal(v, match)) {
            if (!op->add)
                json_array_remove(list, i);
            json_decref(m);
            return;
        }
    }
    if (op->add)
        json_array_append(list, m);
    json_decref(m);
}

json_t *gh_schema_patch(const struct gh_objtype *t, const json_t *cur, json_t *patch,
                        struct gh_verr *ve)
{
    json_t *obj = json_deep_copy(cur);
    const char *key;
    json_t *v;
    size_t nops = 0, cap = json_object_size(patch);
    struct set_op *ops = calloc(cap ? cap : 1, sizeof *ops);
    json_object_foreach(patch, key, v)
    {
        if (strchr(key, '/')) {
            if (patch_set_op(t, key, v, &ops[nops], ve))
                nops++;
            continue;
        }
        const struct gh_prop *p = gh_prop_find(t, key);
        if (!p) {
            gh_verr_add(ve, key, "unknown property; %s has no property of that name", t->name);
            continue;
        }
        if (p->once) {
            gh_verr_add(ve, key, "set by the server and shown only once, at create");
            continue;
        }
        if (p->mut == GH_SERVER_SET) {
            if (!json_equal(v, json_object_get(cur, key)))
                gh_verr_add(ve, key, "set by the server; it cannot be changed");
            continue;
        }
        gh_err err = {0};
        json_t *val = gh_prop_value(p, v, &err);
        if (!val) {
            gh_verr_add(ve, key, "%s", err.msg);
            continue;
        }
        if (p->mut == GH_CREATE_ONLY && !json_equal(val, json_object_get(cur, key))) {
            gh_verr_add(ve, key, "cannot be changed after create (it is \"%s\")",
                        json_is_string(json_object_get(cur, key))
                            ? json_string_value(json_object_get(cur, key))
                            : "set");
            json_decref(val);
            continue;
        }
        json_object_set_new(obj, key, val);
    }
    /* A full value and a path into it in one patch: RFC 8620 §5.3 forbids it. */
    for (size_t i = 0; i < nops; i++) {
        if (json_object_get(patch, ops[i].p->name)) {
            ve->type = "invalidPatch";
            gh_verr_add(ve, ops[i].p->name,
                        "the patch sets %s and also a path inside it; send one or the other",
                        ops[i].p->name);
        }
    }
    if (gh_verr_ok(ve)) {
        for (size_t i = 0; i < nops; i++)
            apply_set_op(obj, &ops[i], ve);
        for (size_t i = 0; i < nops && gh_verr_ok(ve); i++) {
            gh_err err = {0};
            if (!check_items(ops[i].p, json_object_get(obj, ops[i].p->name), &err))
                gh_verr_add(ve, ops[i].p->name, "%s", err.msg);
        }
    }
    for (size_t i = 0; i < nops; i++)
        json_decref(ops[i].member);
    free(ops);
    if (!gh_verr_ok(ve)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

bool gh_pointer_unescape(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; *in; in++) {
        char c = *in;
        if (c == '~') {
            if (in[1] == '0')
                c = '~';
            else if (in[1] == '1')
                c = '/';
            else
                return false;
            in++;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = c;
    }
    out[n] = 0;
    return true;
}

/* ---- views ---- */

static bool returned(const struct gh_prop *p, bool with_once)
{
    return p->mut != GH_WRITE_ONLY && (!p->once || with_once);
}

json_t *gh_schema_view(const struct gh_objtype *t, const json_t *obj, const json_t *properties,
                       bool with_once)
{
    json_t *view = json_object();
    json_object_set(view, "id", json_object_get(obj, "id"));
    for (unsigned i = 0; i < t->nprops; i++) {
        const struct gh_prop *p = &t->props[i];
        if (!returned(p, with_once) || !strcmp(p->name, "id"))
            continue;
        if (properties) {
            bool asked = false;
            size_t j;
            json_t *v;
            json_array_foreach(properties, j, v) asked |= !strcmp(json_string_value(v), p->name);
            if (!asked)
                continue;
        }
        json_t *val = json_object_get(obj, p->name);
        json_object_set(view, p->name, val ? val : json_null());
    }
    return view;
}

/* ---- schema JSON ---- */

static const char *mutability_name(enum gh_mutability m)
{
    switch (m) {
    case GH_MUTABLE:
        return "mutable";
    case GH_CREATE_ONLY:
        return "createOnly";
    case GH_SERVER_SET:
        return "serverSet";
    case GH_WRITE_ONLY:
        return "writeOnly";
    }
    return "mutable";
}

static json_t *strings(const char *const *list)
{
    json_t *a = json_array();
    for (; list && *list; list++)
        json_array_append_new(a, json_string(*list));
    return a;
}

static json_t *prop_json(const struct gh_prop *p)
{
    json_t *j = json_pack("{ss ss sb sb sb ss}", "name", p->name, "type", type_name(p->type),
                          "list", p->list, "nullable", p->nullable, "required", p->required,
                          "mutability", mutability_name(p->mut));
    if (p->def)
        json_object_set_new(j, "default", json_loads(p->def, JSON_DECODE_ANY, NULL));
    else if (p->list && !p->min_items)
        json_object_set_new(j, "default", json_array());
    else if (p->nullable)
        json_object_set_new(j, "default", json_null());
    json_object_set_new(j, "label", json_string(p->label ? p->label : p->name));
    if (p->group)
        json_object_set_new(j, "group", json_string(p->group));
    if (p->description)
        json_object_set_new(j, "description", json_string(p->description));
    if (p->rule)
        json_object_set_new(j, "rule", json_string(p->rule));
    if (p->type == GH_PT_UINT) {
        if (p->min)
            json_object_set_new(j, "min", json_integer(p->min));
        if (p->max)
            json_object_set_new(j, "max", json_integer(p->max));
    }
    if (p->type == GH_PT_DURATION) {
        char b[32];
        duration_text(p->min ? p->min : 1, b);
        json_object_set_new(j, "min", json_string(b));
        if (p->max) {
            duration_text(p->max, b);
            json_object_set_new(j, "max", json_string(b));
        }
    }
    if (p->list && p->min_items)
        json_object_set_new(j, "minItems", json_integer(p->min_items));
    if (p->list)
        json_object_set_new(j, "maxItems",
                            json_integer(p->max_items ? p->max_items : DEFAULT_MAX_ITEMS));
    if (p->type == GH_PT_STRING || p->type == GH_PT_TEXT)
        json_object_set_new(j, "maxLength",
                            json_integer(p->max_len              ? p->max_len
                                         : p->type == GH_PT_TEXT ? DEFAULT_MAX_TEXT
                                                                 : DEFAULT_MAX_STRING));
    if (p->values) {
        json_t *e = json_array();
        for (const struct gh_enum_value *v = p->values; v->value; v++)
            json_array_append_new(e, json_pack("{ss ss}", "value", v->value, "label", v->label));
        json_object_set_new(j, "enum", e);
    }
    if (p->filter != GH_FILTER_NONE)
        json_object_set_new(j, "filter",
                            json_string(p->filter == GH_FILTER_TEXT ? "text" : "equals"));
    if (p->sortable)
        json_object_set_new(j, "sortable", json_true());
    if (p->once)
        json_object_set_new(j, "returnedOnce", json_true());
    if (p->null_is_value)
        json_object_set_new(j, "nullMeans", json_string("off"));
    return j;
}

/* "Settings › Network › Listeners" → ["Settings", "Network", "Listeners"]; segments are
 * separated by "›" (or ">") and trimmed. A type without a path goes under "Other". */
static json_t *nav_path(const struct gh_objtype *t)
{
    json_t *a = json_array();
    const char *p = t->nav;
    while (p && *p) {
        const char *sep = strstr(p, "\u203a"), *gt = strchr(p, '>');
        size_t seplen = strlen("\u203a");
        if (gt && (!sep || gt < sep)) {
            sep = gt;
            seplen = 1;
        }
        const char *end = sep ? sep : p + strlen(p);
        while (p < end && isspace((unsigned char)*p))
            p++;
        const char *last = end;
        while (last > p && isspace((unsigned char)last[-1]))
            last--;
        if (last > p)
            json_array_append_new(a, json_stringn(p, (size_t)(last - p)));
        p = sep ? sep + seplen : end;
    }
    if (!json_array_size(a)) {
        json_array_append_new(a, json_string("Other"));
        json_array_append_new(a, json_string(t->label));
    }
    return a;
}

json_t *gh_schema_json(struct gh_objtype *const *types, unsigned n)
{
    json_t *all = json_object();
    for (unsigned i = 0; i < n; i++) {
        const struct gh_objtype *t = types[i];
        json_t *props = json_array();
        for (unsigned k = 0; k < t->nprops; k++)
            json_array_append_new(props, prop_json(&t->props[k]));
        json_object_set_new(all, t->type,
                            json_pack("{ss ss ss sb ss so so so}", "name", t->name, "cliName",
                                      t->cli_name, "label", t->label, "singleton", t->singleton,
                                      "permissionPrefix", t->perm_prefix, "groups",
                                      strings(t->groups), "listColumns", strings(t->list_columns),
                                      "properties", props));
        json_object_set_new(json_object_get(all, t->type), "nav", nav_path(t));
    }
    return json_pack("{so}", "types", all);
}
