/*
 * schema: the client's reading of the daemon's /api/schema — finding an object type by any
 * of its spellings, finding a property, and typing a `--field KEY=VALUE` by the property's
 * schema entry. Nothing here knows a particular object type: the server's schema is the
 * only description of the objects the client has.
 */
#ifndef GH_CLI_SCHEMA_H
#define GH_CLI_SCHEMA_H
#include <jansson.h>
#include <stdbool.h>

#include "cli/cli.h"

/* The type named "network-listener", "NetworkListener" or "x:NetworkListener" (any case),
 * or NULL; *key gets its JMAP name ("x:NetworkListener"). Borrowed from schema. */
json_t *gh_cli_schema_type(json_t *schema, const char *name, const char **key);

/* "network-listener, system-settings, ..." (a new string owned by the caller). */
char *gh_cli_schema_type_names(json_t *schema);

/* The type's bare name for messages ("NetworkListener"). */
const char *gh_cli_schema_type_label(json_t *type, const char *key);

/* The property with this name (case-insensitive), or NULL. Borrowed from type. */
json_t *gh_cli_schema_prop(json_t *type, const char *name);

/* Names of the type's properties that have member `needs` (NULL: all), comma-separated
 * (a new string owned by the caller). */
char *gh_cli_schema_prop_names(json_t *type, const char *needs);

/*
 * Types a value for a property: "null" is null; a value starting with [ { or " is JSON;
 * a list property takes comma-separated members; Boolean true/false (any case), UnsignedInt
 * a whole number, Duration a whole number of ms or "1m"-style text, Enum one of the schema's
 * values (any case), Text "@FILE" the file's contents, anything else the text as is.
 * *out is a new reference. GH_CLI_REFUSED when the value does not fit the property,
 * GH_CLI_USAGE when it is malformed (bad JSON).
 */
int gh_cli_coerce(json_t *prop, const char *text, json_t **out, gh_cli_err *err);

/*
 * Splits "KEY=VALUE" (a key may be quoted, "k=ey"=v, to protect an '='), checks KEY names a
 * property of type and types VALUE with gh_cli_coerce. With allow_path, KEY may be a
 * JSON-pointer path ("bind/[::]:587"); its value is JSON-ish (true, null, numbers, JSON)
 * and a list member containing '/' is escaped for the pointer. *key (owned by the caller)
 * is the canonical key; *value a new reference.
 */
int gh_cli_field(json_t *type, const char *arg, bool allow_path, char **key, json_t **value,
                 gh_cli_err *err);

#endif
