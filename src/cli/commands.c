/*
 * commands: the six commands over the api and schema modules. Output goes to stdout;
 * failures come back as an exit code with a message (main prints it on stderr).
 */
#include "cli/commands.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli/api.h"
#include "cli/output.h"
#include "cli/schema.h"
#include "cli/util.h"

#define MAX_INPUT (10u << 20) /* an object given with --file/--stdin */
#define MAX_PAGES 100000      /* query paging stops here whatever the server says */

/* What a command works on: the connection and the resolved object type. */
struct ctx {
    struct gh_cli_api *api;
    const struct gh_cli_args *a;
    json_t *type;      /* the type's schema entry; borrowed from api->schema */
    const char *key;   /* "x:NetworkListener" */
    const char *label; /* "NetworkListener" */
};

static int call(struct ctx *c, const char *verb, json_t *args, json_t **result, gh_cli_err *err)
{
    char method[160];
    snprintf(method, sizeof method, "%s/%s", c->key, verb);
    return gh_cli_api_call(c->api, method, args, result, err);
}

static const char *singleton_id(struct ctx *c, const char *id)
{
    if (!id && json_is_true(json_object_get(c->type, "singleton")))
        return "singleton";
    return id;
}

static int cmd_get(struct ctx *c, gh_cli_err *err)
{
    const char *id = singleton_id(c, c->a->id);
    if (!id)
        return gh_cli_fail(err, GH_CLI_USAGE, "get: missing the ID, e.g. get %s ID", c->a->type);
    json_t *res = NULL;
    int status = call(c, "get", json_pack("{s:[s]}", "ids", id), &res, err);
    if (status != GH_CLI_OK)
        return status;
    json_t *found = NULL;
    size_t i;
    json_t *obj;
    json_array_foreach(json_object_get(res, "list"), i, obj)
    {
        const char *oid = json_string_value(json_object_get(obj, "id"));
        if (oid && strcmp(oid, id) == 0)
            found = obj;
    }
    if (!found)
        status = gh_cli_fail(err, GH_CLI_REFUSED, "%s %s not found", c->label, id);
    else if (c->a->json_out)
        gh_cli_print_json(stdout, found);
    else
        gh_cli_print_object(stdout, c->type, found);
    json_decref(res);
    return status;
}

/* The object (create) or patch (update) from --json/--file/--stdin, then every --field. */
static int build_object(struct ctx *c, bool is_update, json_t **out, gh_cli_err *err)
{
    const struct gh_cli_args *a = c->a;
    json_t *obj = NULL;
    *out = NULL;
    if (a->json_text || a->file || a->from_stdin) {
        char *text = NULL;
        const char *src = a->json_text ? "--json" : a->file ? a->file : "stdin";
        if (!a->json_text) {
            int status = gh_cli_read_file(a->file ? a->file : "-", MAX_INPUT, &text, err);
            if (status != GH_CLI_OK)
                return status;
        }
        json_error_t jerr;
        obj = json_loads(a->json_text ? a->json_text : text, 0, &jerr);
        free(text);
        if (!json_is_object(obj)) {
            json_decref(obj);
            if (!obj)
                return gh_cli_fail(err, GH_CLI_USAGE, "%s: invalid JSON at line %d: %s", src,
                                   jerr.line, jerr.text);
            return gh_cli_fail(err, GH_CLI_USAGE, "%s: expected a JSON object", src);
        }
    } else {
        obj = json_object();
    }
    for (size_t i = 0; i < a->nfields; i++) {
        char *key = NULL;
        json_t *value = NULL;
        int status = gh_cli_field(c->type, a->fields[i], is_update, &key, &value, err);
        if (status != GH_CLI_OK) {
            json_decref(obj);
            return status;
        }
        json_object_set_new(obj, key, value);
        free(key);
    }
    *out = obj;
    return GH_CLI_OK;
}

/* Values the server shows only in the create response (an API key's secret): printed now,
 * since no later get can show them. */
static void print_returned_once(struct ctx *c, json_t *created)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(c->type, "properties"), i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        json_t *v = name ? json_object_get(created, name) : NULL;
        if (!v || !json_is_true(json_object_get(p, "returnedOnce")))
            continue;
        char *text = gh_cli_show_value(v, false);
        const char *label = json_string_value(json_object_get(p, "label"));
        printf("  %s: %s\n", label ? label : name, text);
        free(text);
    }
}

static int cmd_create(struct ctx *c, gh_cli_err *err)
{
    json_t *obj = NULL;
    int status = build_object(c, false, &obj, err);
    if (status == GH_CLI_REFUSED)
        gh_cli_err_context(err, "cannot create %s", c->label);
    if (status != GH_CLI_OK)
        return status;
    json_t *res = NULL;
    status = call(c, "set", json_pack("{s:{s:o}}", "create", "c1", obj), &res, err);
    if (status != GH_CLI_OK)
        return status;
    const char *id = json_string_value(
        json_object_get(json_object_get(json_object_get(res, "created"), "c1"), "id"));
    json_t *refused = json_object_get(json_object_get(res, "notCreated"), "c1");
    if (id) {
        printf("Created %s %s\n", c->label, id);
        print_returned_once(c, json_object_get(json_object_get(res, "created"), "c1"));
    } else if (refused) {
        status = gh_cli_set_error(err, refused);
        gh_cli_err_context(err, "cannot create %s", c->label);
    } else {
        status = gh_cli_fail(err, GH_CLI_REFUSED, "the server did not say whether %s was created",
                             c->label);
    }
    json_decref(res);
    return status;
}

static int cmd_update(struct ctx *c, gh_cli_err *err)
{
    const char *id = singleton_id(c, c->a->id);
    if (!id)
        return gh_cli_fail(err, GH_CLI_USAGE,
                           "update: missing the ID, e.g. update %s ID --field ...", c->a->type);
    json_t *patch = NULL;
    int status = build_object(c, true, &patch, err);
    if (status == GH_CLI_REFUSED)
        gh_cli_err_context(err, "cannot update %s %s", c->label, id);
    if (status != GH_CLI_OK)
        return status;
    json_t *res = NULL;
    status = call(c, "set", json_pack("{s:{s:o}}", "update", id, patch), &res, err);
    if (status != GH_CLI_OK)
        return status;
    json_t *refused = json_object_get(json_object_get(res, "notUpdated"), id);
    if (json_object_get(json_object_get(res, "updated"), id)) {
        printf("Updated %s %s\n", c->label, id);
    } else if (refused) {
        status = gh_cli_set_error(err, refused);
        gh_cli_err_context(err, "cannot update %s %s", c->label, id);
    } else {
        status = gh_cli_fail(err, GH_CLI_REFUSED,
                             "the server did not say whether %s %s was updated", c->label, id);
    }
    json_decref(res);
    return status;
}

/* Adds the ids in text (separated by commas or white space) to list. */
static void split_ids(json_t *list, const char *text)
{
    const char *p = text;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        size_t n = strcspn(p, ", \t\r\n");
        if (n)
            json_array_append_new(list, json_stringn(p, n));
        p += n;
    }
}

static bool has_string(json_t *array, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(array, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

/* Destroys one batch, printing a line per id; counts into *done and *failed. */
static int destroy_batch(struct ctx *c, json_t *batch, size_t *done, size_t *failed,
                         gh_cli_err *err)
{
    json_t *res = NULL;
    int status = call(c, "set", json_pack("{s:O}", "destroy", batch), &res, err);
    if (status != GH_CLI_OK)
        return status;
    json_t *destroyed = json_object_get(res, "destroyed");
    json_t *refused = json_object_get(res, "notDestroyed");
    size_t i;
    json_t *idv;
    json_array_foreach(batch, i, idv)
    {
        const char *id = json_string_value(idv);
        if (has_string(destroyed, id)) {
            printf("%s deleted\n", id);
            ++*done;
            continue;
        }
        gh_cli_err why = {{0}};
        json_t *e = json_object_get(refused, id);
        if (e)
            gh_cli_set_error(&why, e);
        else
            gh_cli_fail(&why, GH_CLI_REFUSED, "no answer from the server");
        printf("%s failed: %s\n", id, why.msg);
        ++*failed;
    }
    json_decref(res);
    return GH_CLI_OK;
}

static int cmd_delete(struct ctx *c, gh_cli_err *err)
{
    json_t *ids = json_array();
    for (size_t i = 0; i < c->a->nids; i++)
        split_ids(ids, c->a->ids[i]);
    int status = GH_CLI_OK;
    if (c->a->from_stdin) {
        char *text = NULL;
        status = gh_cli_read_file("-", MAX_INPUT, &text, err);
        if (status == GH_CLI_OK)
            split_ids(ids, text);
        free(text);
    }
    if (status == GH_CLI_OK && json_array_size(ids) == 0)
        status = gh_cli_fail(err, GH_CLI_USAGE, "delete: no ids given");
    size_t done = 0, failed = 0;
    size_t batch_size = c->api->max_set;
    for (size_t at = 0; status == GH_CLI_OK && at < json_array_size(ids); at += batch_size) {
        json_t *batch = json_array();
        for (size_t i = at; i < at + batch_size && i < json_array_size(ids); i++)
            json_array_append(batch, json_array_get(ids, i));
        status = destroy_batch(c, batch, &done, &failed, err);
        json_decref(batch);
    }
    json_decref(ids);
    if (status != GH_CLI_OK)
        return status;
    printf("%zu deleted, %zu failed\n", done, failed);
    return failed
               ? gh_cli_fail(err, GH_CLI_REFUSED, "%zu of %zu not deleted", failed, done + failed)
               : GH_CLI_OK;
}

/* The filter of the --where options: one condition, or all of them under AND. */
static int build_filter(struct ctx *c, json_t **out, gh_cli_err *err)
{
    json_t *conds = json_array();
    *out = NULL;
    for (size_t i = 0; i < c->a->nwheres; i++) {
        const char *w = c->a->wheres[i];
        const char *eq = strchr(w, '=');
        char *name = eq ? strndup(w, (size_t)(eq - w)) : NULL;
        json_t *prop = name ? gh_cli_schema_prop(c->type, name) : NULL;
        int status = GH_CLI_OK;
        json_t *value = NULL;
        if (!eq) {
            status = gh_cli_fail(err, GH_CLI_USAGE, "--where %s: expected KEY=VALUE", w);
        } else if (!prop || !json_object_get(prop, "filter")) {
            char *valid = gh_cli_schema_prop_names(c->type, "filter");
            status = gh_cli_fail(err, GH_CLI_USAGE,
                                 "--where %s: %s cannot filter on \"%s\"; filters: %s", w, c->label,
                                 name, valid);
            free(valid);
        } else if ((status = gh_cli_coerce(prop, eq + 1, &value, err)) != GH_CLI_OK) {
            gh_cli_err_context(err, "--where %s", w);
            status = GH_CLI_USAGE;
        } else {
            json_array_append_new(
                conds, json_pack("{s:o}", json_string_value(json_object_get(prop, "name")), value));
        }
        free(name);
        if (status != GH_CLI_OK) {
            json_decref(conds);
            return status;
        }
    }
    if (json_array_size(conds) == 1)
        *out = json_incref(json_array_get(conds, 0));
    else if (json_array_size(conds) > 1)
        *out = json_pack("{s:s,s:O}", "operator", "AND", "conditions", conds);
    json_decref(conds);
    return GH_CLI_OK;
}

/* The columns to show or fetch: --fields, else the type's listColumns. */
static int pick_columns(struct ctx *c, json_t **out, gh_cli_err *err)
{
    json_t *cols = json_array();
    *out = NULL;
    if (!c->a->select) {
        json_t *lc = json_object_get(c->type, "listColumns");
        if (json_is_array(lc))
            json_array_extend(cols, lc);
        *out = cols;
        return GH_CLI_OK;
    }
    char *copy = strdup(c->a->select);
    char *save = NULL;
    int status = GH_CLI_OK;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok;
         tok = strtok_r(NULL, ",", &save)) {
        json_t *prop = gh_cli_schema_prop(c->type, tok);
        if (!prop) {
            char *valid = gh_cli_schema_prop_names(c->type, NULL);
            status = gh_cli_fail(err, GH_CLI_USAGE,
                                 "--fields: %s has no property \"%s\"; valid properties: %s",
                                 c->label, tok, valid);
            free(valid);
            break;
        }
        json_array_append(cols, json_object_get(prop, "name"));
    }
    free(copy);
    if (status != GH_CLI_OK || json_array_size(cols) == 0) {
        json_decref(cols);
        return status != GH_CLI_OK
                   ? status
                   : gh_cli_fail(err, GH_CLI_USAGE, "--fields: no properties given");
    }
    *out = cols;
    return GH_CLI_OK;
}

/* Every id matching filter, paging with position/limit until the total is reached. */
static int query_ids(struct ctx *c, json_t *filter, json_t *ids, gh_cli_err *err)
{
    json_t *name = gh_cli_schema_prop(c->type, "name");
    bool by_name = name && json_is_true(json_object_get(name, "sortable"));
    size_t limit = c->api->max_get;
    for (size_t page = 0; page < MAX_PAGES; page++) {
        json_t *args = json_pack("{s:I,s:I,s:b}", "position", (json_int_t)json_array_size(ids),
                                 "limit", (json_int_t)limit, "calculateTotal", 1);
        if (filter)
            json_object_set(args, "filter", filter);
        if (by_name)
            json_object_set_new(args, "sort",
                                json_pack("[{s:s,s:b}]", "property", "name", "isAscending", 1));
        json_t *res = NULL;
        int status = call(c, "query", args, &res, err);
        if (status != GH_CLI_OK)
            return status;
        json_t *got = json_object_get(res, "ids");
        size_t n = json_array_size(got);
        json_array_extend(ids, got);
        json_t *total = json_object_get(res, "total");
        bool more = n > 0 && (json_is_integer(total)
                                  ? json_array_size(ids) < (size_t)json_integer_value(total)
                                  : n >= limit);
        json_decref(res);
        if (!more)
            return GH_CLI_OK;
    }
    return GH_CLI_OK;
}

/* The objects for ids, in the order of ids, fetched in batches of maxObjectsInGet. */
static int fetch(struct ctx *c, json_t *ids, json_t *props, json_t *objects, gh_cli_err *err)
{
    json_t *by_id = json_object();
    int status = GH_CLI_OK;
    for (size_t at = 0; status == GH_CLI_OK && at < json_array_size(ids); at += c->api->max_get) {
        json_t *batch = json_array();
        for (size_t i = at; i < at + c->api->max_get && i < json_array_size(ids); i++)
            json_array_append(batch, json_array_get(ids, i));
        json_t *args = json_pack("{s:o}", "ids", batch);
        if (props)
            json_object_set(args, "properties", props);
        json_t *res = NULL;
        status = call(c, "get", args, &res, err);
        size_t i;
        json_t *obj;
        json_array_foreach(json_object_get(res, "list"), i, obj)
        {
            const char *id = json_string_value(json_object_get(obj, "id"));
            if (id)
                json_object_set(by_id, id, obj);
        }
        json_decref(res);
    }
    size_t i;
    json_t *idv;
    json_array_foreach(ids, i, idv)
    {
        json_t *obj = json_object_get(by_id, json_string_value(idv));
        if (obj) /* gone between query and get: leave it out */
            json_array_append(objects, obj);
    }
    json_decref(by_id);
    return status;
}

static int cmd_query(struct ctx *c, gh_cli_err *err)
{
    json_t *filter = NULL, *cols = NULL, *props = NULL;
    json_t *ids = json_array(), *objects = json_array();
    int status = build_filter(c, &filter, err);
    if (status == GH_CLI_OK)
        status = pick_columns(c, &cols, err);
    if (status == GH_CLI_OK && json_is_true(json_object_get(c->type, "singleton")))
        json_array_append_new(ids, json_string("singleton")); /* a singleton has no /query */
    else if (status == GH_CLI_OK)
        status = query_ids(c, filter, ids, err);
    if (status == GH_CLI_OK && (c->a->select || !c->a->json_out)) {
        props = json_pack("[s]", "id");
        json_array_extend(props, cols);
    }
    if (status == GH_CLI_OK)
        status = fetch(c, ids, props, objects, err);
    if (status == GH_CLI_OK) {
        if (c->a->json_out)
            gh_cli_print_json(stdout, objects);
        else if (json_array_size(objects) == 0)
            printf("No %s found.\n", c->label);
        else
            gh_cli_print_table(stdout, c->type, objects, cols);
    }
    json_decref(filter);
    json_decref(cols);
    json_decref(props);
    json_decref(ids);
    json_decref(objects);
    return status;
}

static int cmd_describe(struct ctx *c, gh_cli_err *err)
{
    json_t *schema = c->api->schema;
    if (c->type) {
        if (c->a->json_out)
            gh_cli_print_json(stdout, c->type);
        else
            gh_cli_print_describe(stdout, c->type, c->key);
        return GH_CLI_OK;
    }
    if (c->a->json_out) {
        gh_cli_print_json(stdout, schema);
        return GH_CLI_OK;
    }
    const char *key;
    json_t *type;
    bool first = true;
    json_object_foreach(json_object_get(schema, "types"), key, type)
    {
        if (!first)
            fputs("\n\n", stdout);
        first = false;
        gh_cli_print_describe(stdout, type, key);
    }
    return GH_CLI_OK;
}

static int resolve_type(struct ctx *c, gh_cli_err *err)
{
    const char *name = c->a->type;
    if (!name)
        return GH_CLI_OK;
    c->type = gh_cli_schema_type(c->api->schema, name, &c->key);
    if (!c->type) {
        char *valid = gh_cli_schema_type_names(c->api->schema);
        int status =
            gh_cli_fail(err, GH_CLI_USAGE, "unknown object type \"%s\"; types: %s", name, valid);
        free(valid);
        return status;
    }
    c->label = gh_cli_schema_type_label(c->type, c->key);
    return GH_CLI_OK;
}

int gh_cli_run(const struct gh_cli_args *a, gh_cli_err *err)
{
    /* "http://host:8080/" and "http://host:8080" name the same daemon */
    char *base = strdup(a->url);
    if (!base)
        return gh_cli_fail(err, GH_CLI_USAGE, "out of memory");
    for (size_t n = strlen(base); n > 0 && base[n - 1] == '/'; n--)
        base[n - 1] = '\0';
    struct gh_cli_api api = {
        .http = {.base_url = base,
                 .token = a->token,
                 .user = a->user,
                 .password = a->password,
                 .insecure = a->insecure},
    };
    struct ctx c = {.api = &api, .a = a};
    int status = gh_cli_api_open(&api, err);
    if (status == GH_CLI_OK)
        status = resolve_type(&c, err);
    if (status == GH_CLI_OK) {
        const char *cmd = a->command;
        if (!strcmp(cmd, "get"))
            status = cmd_get(&c, err);
        else if (!strcmp(cmd, "create"))
            status = cmd_create(&c, err);
        else if (!strcmp(cmd, "update"))
            status = cmd_update(&c, err);
        else if (!strcmp(cmd, "delete"))
            status = cmd_delete(&c, err);
        else if (!strcmp(cmd, "query"))
            status = cmd_query(&c, err);
        else
            status = cmd_describe(&c, err);
    }
    gh_cli_api_close(&api);
    free(base);
    return status;
}
