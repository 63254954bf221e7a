/*
 * commands: get, create, update, delete, query and describe — each turns the parsed command
 * line into JMAP calls on the object type the schema names, and prints the outcome.
 */
#ifndef GH_CLI_COMMANDS_H
#define GH_CLI_COMMANDS_H

#include "cli/args.h"
#include "cli/cli.h"

/* Connects, reads the session and schema, runs a->command. Returns the exit code. */
int gh_cli_run(const struct gh_cli_args *a, gh_cli_err *err);

#endif
