/*
 * help: usage texts. The object types and their properties are not listed here: they come
 * from the server (`gatehouse-cli describe`), so the help never goes stale.
 */
#include "cli/help.h"

#include <string.h>

static const char tool_help[] =
    "Usage: gatehouse-cli [--url URL] [--token T | --user U --password P] [-k] COMMAND ...\n"
    "\n"
    "Manages a Gatehouse daemon through its JMAP API.\n"
    "\n"
    "Commands:\n"
    "  get TYPE [ID] [--json]                 show one object\n"
    "  create TYPE --field K=V ... | --json '{...}' | --file F | --stdin\n"
    "                                         create an object\n"
    "  update TYPE [ID] --field K=V ...       change an object\n"
    "  delete TYPE --ids ID[,ID...]           delete objects\n"
    "  query TYPE [--where K=V]... [--fields A,B] [--json]\n"
    "                                         list objects\n"
    "  describe [TYPE] [--json]               show every property, its type, default and rules\n"
    "  help [COMMAND]                         show this help, or a command's\n"
    "\n"
    "TYPE is an object type such as network-listener (also NetworkListener or\n"
    "x:NetworkListener, in any case); `gatehouse-cli describe` lists them all.\n"
    "\n"
    "Options:\n"
    "  --url URL          the daemon (default $GATEHOUSE_URL, else http://127.0.0.1:8080)\n"
    "  --token T          API key or administrator secret, sent as a Bearer token\n"
    "                     (default $GATEHOUSE_TOKEN)\n"
    "  --user U --password P\n"
    "                     HTTP Basic credentials ($GATEHOUSE_USER, $GATEHOUSE_PASSWORD)\n"
    "  -k, --insecure     accept any TLS certificate (a self-signed one, for example)\n"
    "  -h, --help         show help; `gatehouse-cli COMMAND --help` for a command\n"
    "  --version          show the version\n"
    "\n"
    "Exit status: 0 done, 1 refused by the server, 2 usage error,\n"
    "3 connection or authentication failure.\n";

static const char get_help[] =
    "Usage: gatehouse-cli get TYPE [ID] [--json]\n"
    "\n"
    "Shows one object as \"Label: value\" lines grouped like the web page's form, or as\n"
    "JSON with --json. A singleton type (system-settings) needs no ID.\n"
    "\n"
    "Example:\n"
    "  gatehouse-cli get network-listener b3xk2p\n";

static const char create_help[] =
    "Usage: gatehouse-cli create TYPE --field KEY=VALUE ...\n"
    "       gatehouse-cli create TYPE --json '{...}' | --file FILE | --stdin [--field ...]\n"
    "\n"
    "Creates an object and prints \"Created TYPE ID\". Each --field is typed by the\n"
    "property: true/false for booleans, a whole number for numbers, 1m or 500ms (or a\n"
    "number of milliseconds) for durations, one of the listed values for enums, JSON\n"
    "(starting with [ or {) or comma-separated members for lists, @FILE for a multi-line\n"
    "text such as a PEM certificate, and null to unset. --field values override those of\n"
    "--json, --file or --stdin (a JSON object; --file - reads stdin).\n"
    "\n"
    "Example:\n"
    "  gatehouse-cli create network-listener --field name=submission \\\n"
    "      --field protocol=smtp --field 'bind=[\"0.0.0.0:587\"]' --field tlsTimeout=30s\n";

static const char update_help[] =
    "Usage: gatehouse-cli update TYPE [ID] --field KEY=VALUE ...\n"
    "       gatehouse-cli update TYPE [ID] --json '{...}' | --file FILE | --stdin\n"
    "\n"
    "Changes the given properties of an object (a JMAP patch) and prints \"Updated TYPE ID\".\n"
    "Values are typed as for create. KEY may be a path into a list: bind/ADDR=true adds a\n"
    "member and bind/ADDR=null removes it (a '/' inside the member is escaped for you).\n"
    "Quote a key that contains '=': '\"k=ey\"=value'. A singleton type needs no ID.\n"
    "\n"
    "Examples:\n"
    "  gatehouse-cli update network-listener b3xk2p --field maxConnections=500\n"
    "  gatehouse-cli update network-listener b3xk2p --field 'bind/[::]:587=true'\n"
    "  gatehouse-cli update network-listener b3xk2p --field socketTtl=null\n";

static const char delete_help[] =
    "Usage: gatehouse-cli delete TYPE --ids ID[,ID...] [--stdin]\n"
    "\n"
    "Deletes objects and prints one line per id (\"ID deleted\" or \"ID failed: ...\") and a\n"
    "summary. With --stdin the ids are also read from standard input (one per line, or\n"
    "separated by commas or spaces). The exit status is 1 when any deletion failed.\n"
    "\n"
    "Example:\n"
    "  gatehouse-cli delete network-listener --ids b3xk2p,c7mq1r\n";

static const char query_help[] =
    "Usage: gatehouse-cli query TYPE [--where KEY=VALUE]... [--fields A,B] [--json]\n"
    "\n"
    "Lists every matching object (paging through all results) as a table of the type's\n"
    "usual columns, or of --fields. --where filters on a filterable property (for\n"
    "listeners: name, as a case-insensitive contains, and protocol, as equals); several\n"
    "--where must all match. --json prints a JSON array of the objects.\n"
    "\n"
    "Examples:\n"
    "  gatehouse-cli query network-listener\n"
    "  gatehouse-cli query network-listener --where name=smtp --where protocol=smtp\n"
    "  gatehouse-cli query network-listener --fields name,maxConnections --json\n";

static const char describe_help[] =
    "Usage: gatehouse-cli describe [TYPE] [--json]\n"
    "\n"
    "Shows every property of TYPE (or of every type) as the server's schema gives it:\n"
    "type, whether it is a list or nullable, default, rules, allowed values, and whether it\n"
    "can be used in query filters. --json prints the schema itself.\n"
    "\n"
    "Example:\n"
    "  gatehouse-cli describe network-listener\n";

bool gh_cli_help(FILE *out, const char *command)
{
    static const struct {
        const char *command;
        const char *text;
    } texts[] = {
        {"get", get_help},       {"create", create_help}, {"update", update_help},
        {"delete", delete_help}, {"query", query_help},   {"describe", describe_help},
        {"help", tool_help},
    };
    if (!command) {
        fputs(tool_help, out);
        return true;
    }
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        if (strcmp(texts[i].command, command) == 0) {
            fputs(texts[i].text, out);
            return true;
        }
    }
    return false;
}
