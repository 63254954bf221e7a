/*
 * pointer: the path of a JMAP result reference, an RFC 6901 JSON Pointer extended with "*"
 * (RFC 8620 §3.7), evaluated against an earlier method response.
 */
#include "jmap/jmap.h"

#include <stdlib.h>
#include <string.h>

/* Decodes one reference token (~1 is "/", ~0 is "~"); NULL for a bad escape. */
static char *decode_token(const char *tok, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (tok[i] != '~') {
            *o++ = tok[i];
            continue;
        }
        if (i + 1 < n && (tok[i + 1] == '0' || tok[i + 1] == '1')) {
            *o++ = tok[i + 1] == '0' ? '~' : '/';
            i++;
            continue;
        }
        free(out);
        return NULL;
    }
    *o = '\0';
    return out;
}

/* An array index: "0", or digits without a leading zero. */
static bool parse_index(const char *tok, size_t *out)
{
    if (!*tok || (tok[0] == '0' && tok[1]) || strlen(tok) > 15)
        return false;
    size_t v = 0;
    for (const char *p = tok; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (size_t)(*p - '0');
    }
    *out = v;
    return true;
}

/* path is "" or "/token..." */
static json_t *walk(json_t *v, const char *path)
{
    if (!*path)
        return json_incref(v);
    const char *tok = path + 1, *rest = strchr(tok, '/');
    if (!rest)
        rest = tok + strlen(tok);
    char *key = decode_token(tok, (size_t)(rest - tok));
    if (!key)
        return NULL;
    json_t *out = NULL;
    if (json_is_array(v) && !strcmp(key, "*")) {
        /* Map the rest over every element; arrays it yields are flattened one level. */
        out = json_array();
        size_t i;
        json_t *elem;
        json_array_foreach(v, i, elem)
        {
            json_t *r = walk(elem, rest);
            if (!r) {
                json_decref(out);
                out = NULL;
                break;
            }
            if (json_is_array(r))
                json_array_extend(out, r);
            else
                json_array_append(out, r);
            json_decref(r);
        }
    } else if (json_is_array(v)) {
        size_t idx;
        if (parse_index(key, &idx) && idx < json_array_size(v))
            out = walk(json_array_get(v, idx), rest);
    } else if (json_is_object(v)) {
        json_t *child = json_object_get(v, key);
        if (child)
            out = walk(child, rest);
    }
    free(key);
    return out;
}

json_t *gh_jmap_pointer(json_t *value, const char *path)
{
    if (!value || (*path && *path != '/'))
        return NULL;
    return walk(value, path);
}
