/*
 * help: the --help texts of gatehouse-cli, one for the tool and one per command.
 */
#ifndef GH_CLI_HELP_H
#define GH_CLI_HELP_H
#include <stdbool.h>
#include <stdio.h>

/* Prints the help of command (NULL: the tool's). False when the command is unknown. */
bool gh_cli_help(FILE *out, const char *command);

#endif
