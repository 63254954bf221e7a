/*
 * output: rendering for gatehouse-cli. Labels, groups, list columns and rules all come from
 * the served schema, so a property added to the daemon shows up here without a client change.
 */
#include "cli/output.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/schema.h"
#include "cli/util.h"

#define CELL_MAX 60 /* table cells are cut here so a long bind list keeps the table readable */

static char *dump_compact(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    return s ? s : strdup("?");
}

static void show_into(FILE *f, json_t *v, bool one_line)
{
    if (json_is_null(v) || !v) {
        fputs("<none>", f);
    } else if (json_is_boolean(v)) {
        fputs(json_is_true(v) ? "yes" : "no", f);
    } else if (json_is_integer(v)) {
        fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        const char *nl = one_line ? strchr(s, '\n') : NULL;
        if (nl)
            fprintf(f, "%.*s ...", (int)(nl - s), s);
        else
            fputs(s, f);
    } else if (json_is_array(v)) {
        if (json_array_size(v) == 0)
            fputs("<none>", f);
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (i)
                fputs(", ", f);
            show_into(f, item, one_line);
        }
    } else {
        char *s = dump_compact(v);
        fputs(s, f);
        free(s);
    }
}

char *gh_cli_show_value(json_t *v, bool one_line)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return strdup("?");
    show_into(f, v, one_line);
    if (fclose(f) != 0) {
        free(buf);
        return strdup("?");
    }
    return buf;
}

static const char *str_of(json_t *o, const char *key, const char *fallback)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : fallback;
}

static const char *label_of(json_t *prop)
{
    return str_of(prop, "label", str_of(prop, "name", "?"));
}

/* Prints one "  Label: value" line; a multi-line text continues indented below it. */
static void print_line(FILE *out, const char *label, json_t *v)
{
    char *s = gh_cli_show_value(v, false);
    if (strchr(s, '\n')) {
        fprintf(out, "  %s:\n", label);
        for (char *line = s, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            fprintf(out, "    %s\n", line);
        }
    } else {
        fprintf(out, "  %s: %s\n", label, s);
    }
    free(s);
}

static bool group_known(json_t *type, const char *group)
{
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(type, "groups"), i, g)
    {
        if (group && json_is_string(g) && strcmp(json_string_value(g), group) == 0)
            return true;
    }
    return false;
}

/* Prints the properties of one group (NULL: those in no known group) that obj carries. */
static void print_group(FILE *out, json_t *type, json_t *obj, const char *group)
{
    bool header = false;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(type, "properties"), i, p)
    {
        const char *name = str_of(p, "name", NULL);
        const char *g = str_of(p, "group", NULL);
        if (!name || strcmp(name, "id") == 0 || !json_object_get(obj, name))
            continue;
        if (group ? !g || strcmp(g, group) != 0 : group_known(type, g))
            continue;
        if (!header)
            fprintf(out, "%s\n", group ? group : "Other");
        header = true;
        print_line(out, label_of(p), json_object_get(obj, name));
    }
}

void gh_cli_print_object(FILE *out, json_t *type, json_t *obj)
{
    fprintf(out, "Id: %s\n", str_of(obj, "id", "?"));
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(type, "groups"), i, g)
    {
        if (json_is_string(g))
            print_group(out, type, obj, json_string_value(g));
    }
    print_group(out, type, obj, NULL);
}

/* Display width of UTF-8 text: one column per character. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

/* Cuts s in place to CELL_MAX characters (never inside a UTF-8 sequence), marking the cut. */
static void clip(char *s)
{
    size_t chars = 0;
    for (char *p = s; *p; p++) {
        if (((unsigned char)*p & 0xC0) != 0x80 && ++chars > CELL_MAX - 3) {
            strcpy(p, "...");
            return;
        }
    }
}

static void print_row(FILE *out, char **cells, const size_t *widths, size_t ncols)
{
    for (size_t c = 0; c < ncols; c++) {
        fputs(cells[c], out);
        if (c + 1 < ncols)
            fprintf(out, "%*s", (int)(widths[c] - width(cells[c]) + 2), "");
    }
    fputc('\n', out);
}

void gh_cli_print_table(FILE *out, json_t *type, json_t *objects, json_t *columns)
{
    size_t ncols = json_array_size(columns) + 1;
    size_t nrows = json_array_size(objects) + 1;
    char **cells = calloc(ncols * nrows, sizeof *cells);
    size_t *widths = calloc(ncols, sizeof *widths);
    if (!cells || !widths) {
        free(cells);
        free(widths);
        return;
    }
    cells[0] = strdup("Id");
    for (size_t c = 1; c < ncols; c++) {
        const char *name = json_string_value(json_array_get(columns, c - 1));
        json_t *prop = name ? gh_cli_schema_prop(type, name) : NULL;
        cells[c] = strdup(prop ? label_of(prop) : name ? name : "?");
    }
    for (size_t r = 1; r < nrows; r++) {
        json_t *obj = json_array_get(objects, r - 1);
        cells[r * ncols] = strdup(str_of(obj, "id", "?"));
        for (size_t c = 1; c < ncols; c++) {
            const char *name = json_string_value(json_array_get(columns, c - 1));
            cells[r * ncols + c] = gh_cli_show_value(json_object_get(obj, name ? name : ""), true);
        }
    }
    for (size_t i = 0; i < ncols * nrows; i++) {
        if (!cells[i])
            cells[i] = strdup("?");
        if (cells[i])
            clip(cells[i]);
        size_t w = cells[i] ? width(cells[i]) : 0;
        if (w > widths[i % ncols])
            widths[i % ncols] = w;
    }
    for (size_t r = 0; r < nrows; r++)
        if (cells[r * ncols])
            print_row(out, cells + r * ncols, widths, ncols);
    for (size_t i = 0; i < ncols * nrows; i++)
        free(cells[i]);
    free(cells);
    free(widths);
}

static void describe_type_line(FILE *out, json_t *p)
{
    const char *mut = str_of(p, "mutability", "mutable");
    fprintf(out, "  %s  %s%s%s", str_of(p, "name", "?"), str_of(p, "type", "?"),
            json_is_true(json_object_get(p, "list")) ? "[]" : "",
            json_is_true(json_object_get(p, "nullable")) ? "?" : "");
    if (json_is_true(json_object_get(p, "required")))
        fputs(", required", out);
    if (strcmp(mut, "createOnly") == 0)
        fputs(", set at create only", out);
    else if (strcmp(mut, "serverSet") == 0)
        fputs(", set by the server", out);
    else if (strcmp(mut, "writeOnly") == 0)
        fputs(", write-only (never shown)", out);
    fputc('\n', out);
}

static void describe_enum(FILE *out, json_t *p)
{
    json_t *values = json_object_get(p, "enum");
    if (!json_array_size(values))
        return;
    fputs("      values:", out);
    size_t i;
    json_t *e;
    json_array_foreach(values, i, e)
    {
        const char *v = str_of(e, "value", json_string_value(e) ? json_string_value(e) : "?");
        const char *label = str_of(e, "label", NULL);
        fprintf(out, "%s %s", i ? "," : "", v);
        if (label && strcmp(label, v) != 0)
            fprintf(out, " (%s)", label);
    }
    fputc('\n', out);
}

static void describe_prop(FILE *out, json_t *p)
{
    describe_type_line(out, p);
    const char *desc = str_of(p, "description", NULL);
    fprintf(out, "      %s%s%s\n", label_of(p), desc ? ": " : "", desc ? desc : "");
    json_t *def = json_object_get(p, "default");
    if (def) {
        char *s = dump_compact(def);
        fprintf(out, "      default: %s\n", s);
        free(s);
    } else {
        fputs("      default: none\n", out);
    }
    if (str_of(p, "rule", NULL))
        fprintf(out, "      rule: %s\n", str_of(p, "rule", ""));
    static const char *const limits[][2] = {{"min", "minimum"},
                                            {"max", "maximum"},
                                            {"minItems", "min items"},
                                            {"maxItems", "max items"},
                                            {"maxLength", "max length"}};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        json_t *v = json_object_get(p, limits[i][0]);
        if (json_is_integer(v) || json_is_string(v)) {
            char *s = gh_cli_show_value(v, true);
            fprintf(out, "      %s: %s\n", limits[i][1], s);
            free(s);
        }
    }
    if (json_is_true(json_object_get(p, "returnedOnce")))
        fputs("      returned once, by the create that makes it\n", out);
    describe_enum(out, p);
    const char *filter = str_of(p, "filter", NULL);
    bool sortable = json_is_true(json_object_get(p, "sortable"));
    if (filter || sortable)
        fprintf(out, "      query:%s%s%s%s\n", filter ? " filter (" : "", filter ? filter : "",
                filter ? ")" : "", sortable ? " sortable" : "");
}

static void describe_group(FILE *out, json_t *type, const char *group)
{
    bool header = false;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(type, "properties"), i, p)
    {
        const char *g = str_of(p, "group", NULL);
        if (group ? !g || strcmp(g, group) != 0 : group_known(type, g))
            continue;
        if (!header)
            fprintf(out, "\n%s\n", group ? group : "Other");
        header = true;
        describe_prop(out, p);
    }
}

void gh_cli_print_describe(FILE *out, json_t *type, const char *key)
{
    const char *cli = str_of(type, "cliName", key);
    fprintf(out, "%s (%s, JMAP type %s)\n", gh_cli_schema_type_label(type, key), cli, key);
    const char *label = str_of(type, "label", NULL);
    if (label && strcasecmp(label, gh_cli_schema_type_label(type, key)) != 0)
        fprintf(out, "  %s\n", label);
    if (json_is_true(json_object_get(type, "singleton")))
        fputs("  singleton: its one object has the id \"singleton\"\n", out);
    if (str_of(type, "permissionPrefix", NULL))
        fprintf(out, "  permissions: %sGet, %s\n", str_of(type, "permissionPrefix", ""),
                json_is_true(json_object_get(type, "singleton"))
                    ? "Update"
                    : "Query, Create, Update, Destroy");
    json_t *cols = json_object_get(type, "listColumns");
    if (json_array_size(cols)) {
        fputs("  table columns:", out);
        size_t i;
        json_t *c;
        json_array_foreach(cols, i, c)
        {
            fprintf(out, "%s %s", i ? "," : "", json_string_value(c));
        }
        fputc('\n', out);
    }
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(type, "groups"), i, g)
    {
        if (json_is_string(g))
            describe_group(out, type, json_string_value(g));
    }
    describe_group(out, type, NULL);
}

void gh_cli_print_json(FILE *out, json_t *v)
{
    json_dumpf(v, out, JSON_INDENT(2) | JSON_ENCODE_ANY);
    fputc('\n', out);
}

/* Stalwart-style validationErrors: [{"type": "MinValue", "property": "socketTtl", ...}]. */
static void validation_errors(FILE *f, json_t *list)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        fprintf(f, "; %s: %s", str_of(v, "property", "?"), str_of(v, "type", "invalid"));
    }
}

int gh_cli_set_error(gh_cli_err *err, json_t *e)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return gh_cli_fail(err, GH_CLI_REFUSED, "%s", str_of(e, "type", "error"));
    fputs(str_of(e, "type", "error"), f);
    json_t *props = json_object_get(e, "properties");
    if (json_array_size(props)) {
        fputs(" (", f);
        size_t i;
        json_t *p;
        json_array_foreach(props, i, p)
        {
            fprintf(f, "%s%s", i ? ", " : "", json_string_value(p));
        }
        fputc(')', f);
    }
    if (str_of(e, "description", NULL))
        fprintf(f, ": %s", str_of(e, "description", ""));
    if (str_of(e, "existingId", NULL))
        fprintf(f, "; existing id %s", str_of(e, "existingId", ""));
    validation_errors(f, json_object_get(e, "validationErrors"));
    int status = fclose(f) == 0
                     ? gh_cli_fail(err, GH_CLI_REFUSED, "%s", buf)
                     : gh_cli_fail(err, GH_CLI_REFUSED, "%s", str_of(e, "type", "error"));
    free(buf);
    return status;
}
