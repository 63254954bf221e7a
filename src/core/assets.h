/*
 * assets: the web page's files, compiled into the daemon by scripts/embed.c.
 * The table ends with an entry whose path is NULL.
 */
#ifndef GH_ASSETS_H
#define GH_ASSETS_H
#include <stddef.h>

struct gh_asset {
    const char *path; /* "/index.html" */
    const char *mime;
    const unsigned char *data;
    size_t len;
};

extern const struct gh_asset gh_assets[];

#endif
