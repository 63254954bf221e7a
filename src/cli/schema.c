/*
 * schema: type and property look-up in the served schema, and `--field` typing. Range and
 * format rules (ports, masks, minimums) stay with the server, which names the property in
 * its SetError; the client only turns text into the JSON type the property needs.
 */
#include "cli/schema.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/util.h"

#define MAX_TEXT_FILE (1u << 20) /* a PEM chain given as @FILE */

json_t *gh_cli_schema_type(json_t *schema, const char *name, const char **key)
{
    const char *k;
    json_t *t;
    json_object_foreach(json_object_get(schema, "types"), k, t)
    {
        const char *cli = json_string_value(json_object_get(t, "cliName"));
        const char *bare = json_string_value(json_object_get(t, "name"));
        if (gh_cli_same_name(name, k) || (cli && gh_cli_same_name(name, cli)) ||
            (bare && gh_cli_same_name(name, bare))) {
            *key = k;
            return t;
        }
    }
    return NULL;
}

/* Appends s to a growing ", "-separated list held in a memstream. */
static void list_add(FILE *f, bool *first, const char *s)
{
    fprintf(f, "%s%s", *first ? "" : ", ", s);
    *first = false;
}

/* Closes a memstream and returns its text (the pointer is only valid after fclose). */
static char *close_stream(FILE *f, char **buf)
{
    if (fclose(f) != 0) {
        free(*buf);
        return strdup("");
    }
    return *buf;
}

char *gh_cli_schema_type_names(json_t *schema)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return strdup("");
    bool first = true;
    const char *k;
    json_t *t;
    json_object_foreach(json_object_get(schema, "types"), k, t)
    {
        const char *cli = json_string_value(json_object_get(t, "cliName"));
        list_add(f, &first, cli ? cli : k);
    }
    return close_stream(f, &buf);
}

const char *gh_cli_schema_type_label(json_t *type, const char *key)
{
    const char *bare = json_string_value(json_object_get(type, "name"));
    if (bare)
        return bare;
    return strncmp(key, "x:", 2) == 0 ? key + 2 : key;
}

json_t *gh_cli_schema_prop(json_t *type, const char *name)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(type, "properties"), i, p)
    {
        const char *n = json_string_value(json_object_get(p, "name"));
        if (n && strcasecmp(n, name) == 0)
            return p;
    }
    return NULL;
}

char *gh_cli_schema_prop_names(json_t *type, const char *needs)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return strdup("");
    bool first = true;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(type, "properties"), i, p)
    {
        const char *n = json_string_value(json_object_get(p, "name"));
        if (n && (!needs || json_object_get(p, needs)))
            list_add(f, &first, n);
    }
    return close_stream(f, &buf);
}

static const char *prop_name(json_t *prop)
{
    const char *n = json_string_value(json_object_get(prop, "name"));
    return n ? n : "?";
}

static const char *prop_type(json_t *prop)
{
    const char *t = json_string_value(json_object_get(prop, "type"));
    return t ? t : "String";
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/* A whole number; NULL when s is not one or does not fit. */
static json_t *whole_number(const char *s)
{
    if (!all_digits(s) || strlen(s) > 18)
        return NULL;
    return json_integer((json_int_t)strtoll(s, NULL, 10));
}

/* The schema's spelling of an enum value given in any case, or NULL. */
static const char *enum_value(json_t *prop, const char *text)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(prop, "enum"), i, e)
    {
        const char *v = json_string_value(json_object_get(e, "value"));
        if (!v)
            v = json_string_value(e);
        if (v && strcasecmp(v, text) == 0)
            return v;
    }
    return NULL;
}

static int bad_enum(json_t *prop, const char *text, gh_cli_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f) {
        bool first = true;
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(prop, "enum"), i, e)
        {
            const char *v = json_string_value(json_object_get(e, "value"));
            list_add(f, &first, v ? v : "?");
        }
        buf = close_stream(f, &buf);
    }
    int status =
        gh_cli_fail(err, GH_CLI_REFUSED,
                    "invalidProperties (%s): \"%s\" is not a valid value; valid values: %s",
                    prop_name(prop), text, buf ? buf : "");
    free(buf);
    return status;
}

/* One value of the property's element type, from text. */
static int coerce_scalar(json_t *prop, const char *text, json_t **out, gh_cli_err *err)
{
    const char *type = prop_type(prop);
    const char *name = prop_name(prop);
    *out = NULL;
    if (strcmp(type, "Boolean") == 0) {
        if (strcasecmp(text, "true") == 0 || strcasecmp(text, "false") == 0)
            *out = json_boolean(strcasecmp(text, "true") == 0);
        else
            return gh_cli_fail(err, GH_CLI_REFUSED,
                               "invalidProperties (%s): expected true or false, got \"%s\"", name,
                               text);
    } else if (strcmp(type, "UnsignedInt") == 0) {
        if (!(*out = whole_number(text)))
            return gh_cli_fail(err, GH_CLI_REFUSED,
                               "invalidProperties (%s): expected a whole number, got \"%s\"", name,
                               text);
    } else if (strcmp(type, "Duration") == 0) {
        /* A number is milliseconds; unit forms ("1m", "500ms") go to the server as text. */
        if (!(*out = whole_number(text))) {
            if (!isdigit((unsigned char)text[0]))
                return gh_cli_fail(err, GH_CLI_REFUSED,
                                   "invalidProperties (%s): expected a duration such as 500ms, "
                                   "30s, 1m, 2h, 1d, got \"%s\"",
                                   name, text);
            *out = json_string(text);
        }
    } else if (strcmp(type, "Enum") == 0) {
        const char *v = enum_value(prop, text);
        if (!v)
            return bad_enum(prop, text, err);
        *out = json_string(v);
    } else if (strcmp(type, "Text") == 0 && text[0] == '@') {
        char *content = NULL;
        int status = gh_cli_read_file(text + 1, MAX_TEXT_FILE, &content, err);
        if (status != GH_CLI_OK) {
            gh_cli_err_context(err, "--field %s", name);
            return status;
        }
        *out = json_string(content);
        free(content);
    } else {
        *out = json_string(text);
    }
    if (!*out)
        return gh_cli_fail(err, GH_CLI_USAGE, "--field %s: the value is not valid UTF-8", name);
    return GH_CLI_OK;
}

/* Enum members given as JSON are put in the schema's spelling and checked. */
static int check_json_enums(json_t *prop, json_t *v, gh_cli_err *err)
{
    if (strcmp(prop_type(prop), "Enum") != 0)
        return GH_CLI_OK;
    json_t *items = json_is_array(v) ? v : NULL;
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        if (!json_is_string(item))
            continue;
        const char *canon = enum_value(prop, json_string_value(item));
        if (!canon)
            return bad_enum(prop, json_string_value(item), err);
        json_array_set_new(items, i, json_string(canon));
    }
    return GH_CLI_OK;
}

static int parse_json(const char *name, const char *text, json_t **out, gh_cli_err *err)
{
    json_error_t jerr;
    *out = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!*out)
        return gh_cli_fail(err, GH_CLI_USAGE, "--field %s: invalid JSON at column %d: %s", name,
                           jerr.column, jerr.text);
    return GH_CLI_OK;
}

/* "a, b,c" → each member typed; an empty text is the empty list. */
static int coerce_list(json_t *prop, const char *text, json_t **out, gh_cli_err *err)
{
    json_t *arr = json_array();
    char *copy = strdup(text);
    int status = arr && copy ? GH_CLI_OK : gh_cli_fail(err, GH_CLI_USAGE, "out of memory");
    char *save = NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && status == GH_CLI_OK;
         tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (!*tok)
            continue;
        json_t *item = NULL;
        status = coerce_scalar(prop, tok, &item, err);
        if (status == GH_CLI_OK)
            json_array_append_new(arr, item);
    }
    free(copy);
    if (status != GH_CLI_OK) {
        json_decref(arr);
        return status;
    }
    *out = arr;
    return GH_CLI_OK;
}

int gh_cli_coerce(json_t *prop, const char *text, json_t **out, gh_cli_err *err)
{
    *out = NULL;
    if (strcmp(text, "null") == 0) {
        *out = json_null();
        return GH_CLI_OK;
    }
    if (text[0] == '[' || text[0] == '{' || text[0] == '"') {
        int status = parse_json(prop_name(prop), text, out, err);
        if (status == GH_CLI_OK && (status = check_json_enums(prop, *out, err)) != GH_CLI_OK) {
            json_decref(*out);
            *out = NULL;
        }
        return status;
    }
    if (json_is_true(json_object_get(prop, "list")))
        return coerce_list(prop, text, out, err);
    return coerce_scalar(prop, text, out, err);
}

/* The value of a path key ("bind/[::]:587=true"): a member flag, so JSON-ish text. */
static int coerce_path_value(const char *key, const char *text, json_t **out, gh_cli_err *err)
{
    if (strcasecmp(text, "true") == 0 || strcasecmp(text, "false") == 0)
        *out = json_boolean(strcasecmp(text, "true") == 0);
    else if (strcmp(text, "null") == 0)
        *out = json_null();
    else if (text[0] && strchr("[{\"", text[0]))
        return parse_json(key, text, out, err);
    else if (!(*out = whole_number(text)))
        *out = json_string(text);
    return *out ? GH_CLI_OK : gh_cli_fail(err, GH_CLI_USAGE, "--field %s: bad value", key);
}

/* Splits arg at the '=' after the key; a key in double quotes may itself hold '='. */
static int split_field(const char *arg, char **key, const char **value, gh_cli_err *err)
{
    const char *eq;
    if (arg[0] == '"') {
        const char *close = strchr(arg + 1, '"');
        if (!close || close[1] != '=')
            return gh_cli_fail(err, GH_CLI_USAGE, "--field %s: expected \"KEY\"=VALUE", arg);
        *key = strndup(arg + 1, (size_t)(close - arg - 1));
        eq = close + 1;
    } else {
        eq = strchr(arg, '=');
        if (!eq || eq == arg)
            return gh_cli_fail(err, GH_CLI_USAGE, "--field %s: expected KEY=VALUE", arg);
        *key = strndup(arg, (size_t)(eq - arg));
    }
    *value = eq + 1;
    return *key ? GH_CLI_OK : gh_cli_fail(err, GH_CLI_USAGE, "out of memory");
}

static int unknown_prop(json_t *type, const char *name, gh_cli_err *err)
{
    char *valid = gh_cli_schema_prop_names(type, NULL);
    int status = gh_cli_fail(err, GH_CLI_REFUSED,
                             "invalidProperties (%s): no such property; valid properties: %s", name,
                             valid ? valid : "");
    free(valid);
    return status;
}

/* "prop/member" with the member escaped for a JSON pointer when it holds '/' ("10.0.0.0/8"). */
static char *path_key(const char *prop, const char *member)
{
    bool escape = strchr(member, '/') && !strchr(member, '~');
    size_t n = strlen(prop) + 2 + strlen(member) * 2;
    char *out = malloc(n);
    if (!out)
        return NULL;
    char *w = out + sprintf(out, "%s/", prop);
    for (const char *r = member; *r; r++) {
        if (escape && *r == '/') {
            *w++ = '~';
            *w++ = '1';
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return out;
}

int gh_cli_field(json_t *type, const char *arg, bool allow_path, char **key, json_t **value,
                 gh_cli_err *err)
{
    char *raw = NULL;
    const char *text = "";
    *key = NULL;
    *value = NULL;
    int status = split_field(arg, &raw, &text, err);
    if (status != GH_CLI_OK)
        return status;

    char *slash = strchr(raw, '/');
    if (slash && !allow_path) {
        status =
            gh_cli_fail(err, GH_CLI_USAGE,
                        "--field %s: a path key is only for update; give the whole value", raw);
    } else if (slash) {
        *slash = '\0';
        json_t *prop = gh_cli_schema_prop(type, raw);
        if (!prop) {
            status = unknown_prop(type, raw, err);
        } else {
            *key = path_key(prop_name(prop), slash + 1);
            status = *key ? coerce_path_value(*key, text, value, err)
                          : gh_cli_fail(err, GH_CLI_USAGE, "out of memory");
        }
    } else {
        json_t *prop = gh_cli_schema_prop(type, raw);
        if (!prop) {
            status = unknown_prop(type, raw, err);
        } else {
            *key = strdup(prop_name(prop));
            status = gh_cli_coerce(prop, text, value, err);
        }
    }
    free(raw);
    if (status != GH_CLI_OK) {
        free(*key);
        *key = NULL;
    }
    return status;
}
