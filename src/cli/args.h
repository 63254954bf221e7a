/*
 * args: the command line of gatehouse-cli — global options (URL, credentials, -k, from the
 * environment when not given), the command, its positional TYPE and ID, and its options.
 * Parsing checks everything that can be checked without the server, so usage errors exit 2
 * before any connection is made.
 */
#ifndef GH_CLI_ARGS_H
#define GH_CLI_ARGS_H
#include <stdbool.h>
#include <stddef.h>

#include "cli/cli.h"

struct gh_cli_args {
    /* global; all strings borrowed from argv or the environment */
    const char *url; /* --url, GATEHOUSE_URL, default http://127.0.0.1:8080 */
    const char *token;
    const char *user;
    const char *password;
    bool insecure;

    const char *command; /* "get", "create", ...; NULL with --help alone */
    const char *type;    /* TYPE positional, or NULL */
    const char *id;      /* ID positional, or NULL */
    bool help;           /* --help / -h / help COMMAND: print help and exit 0 */
    bool version;

    /* command options; the arrays (owned, freed by gh_cli_args_free) hold argv pointers */
    const char **fields; /* --field KEY=VALUE (create, update) */
    size_t nfields;
    const char **wheres; /* --where KEY=VALUE (query) */
    size_t nwheres;
    const char **ids; /* --ids A,B (delete; repeatable) */
    size_t nids;
    const char *select;    /* --fields a,b (query) */
    const char *json_text; /* create/update --json '{...}' */
    const char *file;      /* create/update --file F */
    bool from_stdin;       /* --stdin */
    bool json_out;         /* get/query/describe --json */
};

/* Parses argv (and the environment). GH_CLI_USAGE with err set on a usage error. */
int gh_cli_args_parse(struct gh_cli_args *a, int argc, char **argv, gh_cli_err *err);
void gh_cli_args_free(struct gh_cli_args *a);

/* Is this a command gatehouse-cli knows? */
bool gh_cli_args_known_command(const char *command);

#endif
