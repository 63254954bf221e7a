#!/usr/bin/env python3
"""Writes bash completion for gatehouse-cli from the object schema (`gatehouse schema`
on stdin): the commands and options, the object types, each type's properties for --field,
--where and --fields, and the values of enum and boolean properties."""
import json
import sys

COMMANDS = "get create update delete query describe help"
GLOBAL_OPTS = "--url --token --user --password -k --insecure --help --version"
COMMAND_OPTS = {
    "get": "--json",
    "create": "--field --json --file --stdin",
    "update": "--field --json --file --stdin",
    "delete": "--ids --stdin",
    "query": "--where --fields --json",
    "describe": "--json",
}


def words(items):
    return " ".join(sorted(set(items)))


def main():
    types = json.load(sys.stdin)["types"]
    out = ["# bash completion for gatehouse-cli. Generated from the daemon's object schema by",
           "# scripts/gen-completion.py; do not edit.", "",
           "declare -gA _gatehouse_cli_props _gatehouse_cli_mutable _gatehouse_cli_filters",
           "declare -gA _gatehouse_cli_values"]
    names = []
    for t in types.values():
        name = t["cliName"]
        names.append(name)
        props = [p for p in t["properties"] if p["name"] != "id"]
        settable = [p["name"] for p in props if p.get("mutability") != "serverSet"]
        mutable = [p["name"] for p in props if p.get("mutability") == "mutable"]
        filters = [p["name"] for p in props if p.get("filter")]
        out.append(f'_gatehouse_cli_props[{name}]="{words(settable)}"')
        out.append(f'_gatehouse_cli_mutable[{name}]="{words(mutable)}"')
        out.append(f'_gatehouse_cli_filters[{name}]="{words(filters)}"')
        for p in props:
            values = [e["value"] for e in p.get("enum") or []]
            if p.get("type") == "Boolean":
                values = ["true", "false"]
            if values:
                out.append(f'_gatehouse_cli_values[{name}.{p["name"]}]="{words(values)}"')
    out.append(f'_gatehouse_cli_types="{words(names)}"')
    out.append("")
    out.append(TEMPLATE.replace("@COMMANDS@", COMMANDS).replace("@GLOBAL@", GLOBAL_OPTS)
               .replace("@CASES@", "\n".join(f'        {c}) opts="{o}" ;;'
                                            for c, o in COMMAND_OPTS.items())))
    sys.stdout.write("\n".join(out))


TEMPLATE = r'''_gatehouse_cli() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local i w cmd="" type="" n=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in
            --url|--token|--user|--password|--field|--file|--where|--fields|--ids) ((i++)) ;;
            -*) ;;
            *) if [[ -z $cmd ]]; then cmd=$w; elif [[ -z $type ]]; then type=$w; fi ;;
        esac
    done
    type=${type,,}
    case $prev in
        --url|--token|--user|--password|--ids) return ;;
        --file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --field|--where)
            local props=${_gatehouse_cli_props[$type]}
            [[ $cmd == update ]] && props=${_gatehouse_cli_mutable[$type]}
            [[ $prev == --where ]] && props=${_gatehouse_cli_filters[$type]}
            if [[ $cur == *=* ]]; then
                local key=${cur%%=*}
                COMPREPLY=($(compgen -P "$key=" -W "${_gatehouse_cli_values[$type.$key]}" -- "${cur#*=}"))
            else
                compopt -o nospace 2>/dev/null
                COMPREPLY=($(compgen -S = -W "$props" -- "$cur"))
            fi
            return ;;
        --fields)
            COMPREPLY=($(compgen -W "id ${_gatehouse_cli_props[$type]}" -- "${cur##*,}"))
            return ;;
    esac
    if [[ $cur == -* ]]; then
        local opts=""
        case $cmd in
@CASES@
        esac
        COMPREPLY=($(compgen -W "@GLOBAL@ $opts" -- "$cur"))
    elif [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "@COMMANDS@" -- "$cur"))
    elif [[ -z $type && $cmd != help ]]; then
        COMPREPLY=($(compgen -W "$_gatehouse_cli_types" -- "$cur"))
    elif [[ $cmd == help && -z $type ]]; then
        COMPREPLY=($(compgen -W "@COMMANDS@" -- "$cur"))
    fi
}
complete -F _gatehouse_cli gatehouse-cli
'''

if __name__ == "__main__":
    main()
