/*
 * output: how the client shows objects to a person — "Label: value" lines grouped by the
 * schema's groups (get), a table of the schema's list columns (query), a property reference
 * (describe), SetErrors as one line naming type, property and description — or JSON.
 */
#ifndef GH_CLI_OUTPUT_H
#define GH_CLI_OUTPUT_H
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "cli/cli.h"

/* A value as a person reads it: yes/no, "<none>" for null or an empty list, members joined
 * with ", "; one_line cuts a multi-line text after its first line. A new string. */
char *gh_cli_show_value(json_t *v, bool one_line);

/* get: "Id: …", then each group's properties present in obj as "  Label: value". */
void gh_cli_print_object(FILE *out, json_t *type, json_t *obj);

/* query: a table, "Id" then the labels of columns (property names), one row per object. */
void gh_cli_print_table(FILE *out, json_t *type, json_t *objects, json_t *columns);

/* describe: every property of the type with its type, default, rules and values. */
void gh_cli_print_describe(FILE *out, json_t *type, const char *key);

/* --json: the value, indented, with a newline. */
void gh_cli_print_json(FILE *out, json_t *v);

/* Fills err with "type (property, ...): description" for a SetError; returns GH_CLI_REFUSED. */
int gh_cli_set_error(gh_cli_err *err, json_t *set_error);

#endif
