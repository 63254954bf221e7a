/*
 * util: small helpers the client's parts share — failing with an exit code, reading a
 * whole file or stdin (bounded), and case-insensitive name comparison.
 */
#ifndef GH_CLI_UTIL_H
#define GH_CLI_UTIL_H
#include <stdbool.h>
#include <stddef.h>

#include "cli/cli.h"

/* Fills err and returns code, so a failing path reads `return gh_cli_fail(err, code, ...)`. */
int gh_cli_fail(gh_cli_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads a whole file ("-" = stdin) into a new NUL-terminated string (owned by the caller),
 * at most max bytes. Exit code, 0 on success (GH_CLI_USAGE when it cannot be read). */
int gh_cli_read_file(const char *path, size_t max, char **out, gh_cli_err *err);

/* Equal ignoring case, '-', '_' and a leading "x:": "network-listener" == "x:NetworkListener". */
bool gh_cli_same_name(const char *a, const char *b);

/* Prefixes err's message with "context: ". */
void gh_cli_err_context(gh_cli_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
