/*
 * gatehouse-cli: the command-line client of the Gatehouse management API. main parses the
 * command line, prints help, runs the command and turns its outcome into the exit code.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/help.h"

/* The command whose help a usage error points to ("" for the tool's). */
static const char *topic_of(const struct gh_cli_args *a)
{
    if (a->command && gh_cli_args_known_command(a->command) && strcmp(a->command, "help") != 0)
        return a->command;
    return "";
}

int main(int argc, char **argv)
{
    struct gh_cli_args a;
    gh_cli_err err = {{0}};
    int status = gh_cli_args_parse(&a, argc, argv, &err);
    if (status == GH_CLI_OK && a.version) {
        printf("%s %s\n", GH_CLI_NAME, GH_CLI_VERSION);
    } else if (status == GH_CLI_OK && (a.help || !strcmp(a.command, "help"))) {
        const char *topic = a.command && strcmp(a.command, "help") != 0 ? a.command : a.type;
        if (!gh_cli_help(stdout, topic)) {
            fprintf(stderr,
                    "%s: no help for \"%s\"; commands: get, create, update, delete, "
                    "query, describe\n",
                    GH_CLI_NAME, topic);
            status = GH_CLI_USAGE;
        }
    } else if (status == GH_CLI_OK) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fprintf(stderr, "%s: cannot start libcurl\n", GH_CLI_NAME);
            status = GH_CLI_CONNECT;
        } else {
            status = gh_cli_run(&a, &err);
            curl_global_cleanup();
        }
    }
    if (status != GH_CLI_OK && err.msg[0]) {
        fprintf(stderr, "%s: %s\n", GH_CLI_NAME, err.msg);
        if (status == GH_CLI_USAGE)
            fprintf(stderr, "Try '%s %s%s--help'.\n", GH_CLI_NAME, topic_of(&a),
                    topic_of(&a)[0] ? " " : "");
    }
    gh_cli_args_free(&a);
    return status;
}
