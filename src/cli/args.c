/*
 * args: one pass over argv. Global options are accepted before or after the command;
 * each command option is checked against the commands that take it, so a misplaced option
 * is a usage error that names the command rather than a silent no-op.
 */
#include "cli/args.h"

#include <stdlib.h>
#include <string.h>

#include "cli/util.h"

#define DEFAULT_URL "http://127.0.0.1:8080"

static const char *const commands[] = {"get",   "create",   "update", "delete",
                                       "query", "describe", "help"};

bool gh_cli_args_known_command(const char *command)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i], command) == 0)
            return true;
    return false;
}

/* An option: its name, whether it takes a value, and the commands it belongs to. */
struct opt {
    const char *name;
    bool value;
    const char *commands; /* space-separated; "*" for every command (global) */
};

static const struct opt opts[] = {
    {"--url", true, "*"},
    {"--token", true, "*"},
    {"--user", true, "*"},
    {"--password", true, "*"},
    {"-k", false, "*"},
    {"--insecure", false, "*"},
    {"--help", false, "*"},
    {"-h", false, "*"},
    {"--version", false, "*"},
    {"--field", true, "create update"},
    {"--file", true, "create update"},
    {"--stdin", false, "create update delete"},
    {"--where", true, "query"},
    {"--fields", true, "query"},
    {"--ids", true, "delete"},
    /* --json takes the object with create/update and is a flag with the others */
    {"--json", false, "get query describe"},
};

static bool word_in(const char *word, const char *list)
{
    size_t n = strlen(word);
    if (n == 0)
        return false;
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

static const struct opt *find_opt(const char *name)
{
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

static bool push(const char ***arr, size_t *n, const char *v, int cap)
{
    if (!*arr && !(*arr = calloc((size_t)cap, sizeof **arr)))
        return false;
    (*arr)[(*n)++] = v;
    return true;
}

/* Stores one option's value (or flag) in a. */
static int apply(struct gh_cli_args *a, const char *name, const char *v, int argc, gh_cli_err *err)
{
    bool ok = true;
    if (!strcmp(name, "--url"))
        a->url = v;
    else if (!strcmp(name, "--token"))
        a->token = v;
    else if (!strcmp(name, "--user"))
        a->user = v;
    else if (!strcmp(name, "--password"))
        a->password = v;
    else if (!strcmp(name, "-k") || !strcmp(name, "--insecure"))
        a->insecure = true;
    else if (!strcmp(name, "--help") || !strcmp(name, "-h"))
        a->help = true;
    else if (!strcmp(name, "--version"))
        a->version = true;
    else if (!strcmp(name, "--field"))
        ok = push(&a->fields, &a->nfields, v, argc);
    else if (!strcmp(name, "--where"))
        ok = push(&a->wheres, &a->nwheres, v, argc);
    else if (!strcmp(name, "--ids"))
        ok = push(&a->ids, &a->nids, v, argc);
    else if (!strcmp(name, "--fields"))
        a->select = v;
    else if (!strcmp(name, "--file"))
        a->file = v;
    else if (!strcmp(name, "--stdin"))
        a->from_stdin = true;
    else if (!strcmp(name, "--json") && v)
        a->json_text = v;
    else if (!strcmp(name, "--json"))
        a->json_out = true;
    return ok ? GH_CLI_OK : gh_cli_fail(err, GH_CLI_USAGE, "out of memory");
}

static bool json_takes_value(const char *command)
{
    return command && (!strcmp(command, "create") || !strcmp(command, "update"));
}

/* Handles argv[*i], an option; advances *i past its value. */
static int option(struct gh_cli_args *a, int argc, char **argv, int *i, gh_cli_err *err)
{
    char name[32];
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    if (n >= sizeof name)
        return gh_cli_fail(err, GH_CLI_USAGE, "unknown option %s", arg);
    memcpy(name, arg, n);
    name[n] = '\0';

    const struct opt *o = find_opt(name);
    if (!o)
        return gh_cli_fail(err, GH_CLI_USAGE, "unknown option %s", name);
    const char *cmd = a->command ? a->command : "";
    bool takes_value = o->value;
    bool applies = !strcmp(o->commands, "*") || word_in(cmd, o->commands);
    if (!strcmp(name, "--json") && json_takes_value(a->command))
        takes_value = applies = true;
    if (!applies)
        return gh_cli_fail(err, GH_CLI_USAGE, "option %s does not apply to %s", name,
                           a->command ? a->command : "gatehouse-cli without a command");

    const char *value = NULL;
    if (takes_value) {
        if (eq)
            value = eq + 1;
        else if (*i + 1 < argc)
            value = argv[++*i];
        else
            return gh_cli_fail(err, GH_CLI_USAGE, "option %s needs a value", name);
    } else if (eq) {
        return gh_cli_fail(err, GH_CLI_USAGE, "option %s takes no value", name);
    }
    return apply(a, name, value, argc, err);
}

static int positional(struct gh_cli_args *a, const char *arg, gh_cli_err *err)
{
    if (!a->command) {
        if (!gh_cli_args_known_command(arg))
            return gh_cli_fail(err, GH_CLI_USAGE,
                               "unknown command \"%s\"; commands: get, create, update, delete, "
                               "query, describe",
                               arg);
        a->command = arg;
    } else if (!a->type) {
        a->type = arg;
    } else if (!a->id) {
        a->id = arg;
    } else {
        return gh_cli_fail(err, GH_CLI_USAGE, "%s: unexpected argument \"%s\"", a->command, arg);
    }
    return GH_CLI_OK;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* URL and credentials from the environment where the command line gave none. */
static int credentials(struct gh_cli_args *a, gh_cli_err *err)
{
    if (!a->url)
        a->url = env("GATEHOUSE_URL") ? env("GATEHOUSE_URL") : DEFAULT_URL;
    if (a->token && a->user)
        return gh_cli_fail(err, GH_CLI_USAGE, "give either --token or --user/--password, not both");
    if (!a->user && !a->password && !a->token) {
        a->token = env("GATEHOUSE_TOKEN");
        if (!a->token) {
            a->user = env("GATEHOUSE_USER");
            a->password = env("GATEHOUSE_PASSWORD");
        }
    }
    if (a->password && !a->user && !a->token)
        a->user = env("GATEHOUSE_USER");
    if (a->password && !a->user)
        return gh_cli_fail(err, GH_CLI_USAGE, "--password needs --user");
    if (a->user && !a->password && !(a->password = env("GATEHOUSE_PASSWORD")))
        return gh_cli_fail(err, GH_CLI_USAGE, "--user needs --password (or GATEHOUSE_PASSWORD)");
    return GH_CLI_OK;
}

/* The checks on the command's arguments that need no server. */
static int check_command(const struct gh_cli_args *a, gh_cli_err *err)
{
    if (a->help || a->version)
        return GH_CLI_OK;
    if (!a->command)
        return gh_cli_fail(err, GH_CLI_USAGE, "no command given");
    const char *c = a->command;
    if (!strcmp(c, "help"))
        return GH_CLI_OK;
    if (strcmp(c, "describe") != 0 && !a->type)
        return gh_cli_fail(err, GH_CLI_USAGE,
                           "%s: missing the object type, e.g. %s network-listener", c, c);
    if (!strcmp(c, "describe") && a->id)
        return gh_cli_fail(err, GH_CLI_USAGE, "describe: unexpected argument \"%s\"", a->id);
    if ((!strcmp(c, "create") || !strcmp(c, "delete") || !strcmp(c, "query")) && a->id)
        return gh_cli_fail(err, GH_CLI_USAGE, "%s: unexpected argument \"%s\"%s", c, a->id,
                           !strcmp(c, "delete") ? " (give ids with --ids)" : "");
    int sources = (a->json_text != NULL) + (a->file != NULL) + a->from_stdin;
    if ((!strcmp(c, "create") || !strcmp(c, "update")) && sources > 1)
        return gh_cli_fail(err, GH_CLI_USAGE, "%s: give only one of --json, --file, --stdin", c);
    if ((!strcmp(c, "create") || !strcmp(c, "update")) && sources == 0 && a->nfields == 0)
        return gh_cli_fail(err, GH_CLI_USAGE,
                           "%s: nothing to %s; give --field KEY=VALUE, --json, --file or --stdin",
                           c, c);
    if (!strcmp(c, "delete") && a->nids == 0 && !a->from_stdin)
        return gh_cli_fail(err, GH_CLI_USAGE, "delete: give the ids with --ids ID[,ID...]");
    return GH_CLI_OK;
}

int gh_cli_args_parse(struct gh_cli_args *a, int argc, char **argv, gh_cli_err *err)
{
    memset(a, 0, sizeof *a);
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int status = GH_CLI_OK;
        if (!options_done && !strcmp(arg, "--"))
            options_done = true;
        else if (!options_done && arg[0] == '-' && arg[1] != '\0')
            status = option(a, argc, argv, &i, err);
        else
            status = positional(a, arg, err);
        if (status != GH_CLI_OK)
            return status;
    }
    int status = credentials(a, err);
    return status == GH_CLI_OK ? check_command(a, err) : status;
}

void gh_cli_args_free(struct gh_cli_args *a)
{
    free(a->fields);
    free(a->wheres);
    free(a->ids);
    a->fields = a->wheres = a->ids = NULL;
}
