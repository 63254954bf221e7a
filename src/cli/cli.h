/*
 * cli: what every part of gatehouse-cli shares — the exit codes a script can rely on and
 * the program name used in messages. Each part returns one of these codes with a gh_err.
 */
#ifndef GH_CLI_H
#define GH_CLI_H

#define GH_CLI_NAME "gatehouse-cli"
#ifdef GH_VERSION /* from debian/changelog, through the Makefile */
#define GH_CLI_VERSION GH_VERSION
#else
#define GH_CLI_VERSION "0.1.0"
#endif

/* Exit codes (SPEC §7): scripts branch on these, so they never change meaning. */
enum gh_cli_status {
    GH_CLI_OK = 0,      /* the server did what was asked */
    GH_CLI_REFUSED = 1, /* the server (or its schema) refused the request */
    GH_CLI_USAGE = 2,   /* the command line is wrong; nothing was sent */
    GH_CLI_CONNECT = 3, /* no connection, TLS failure or authentication failure */
};

/* The client's error value. Like gh_err, but long enough for a message that lists every
 * valid name ("valid properties: name, bind, protocol, ...") so the operator can act on it. */
typedef struct gh_cli_err {
    char msg[4096];
} gh_cli_err;

#endif
