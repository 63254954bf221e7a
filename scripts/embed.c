/*
 * embed: turns the web page's files into a C table compiled into the daemon,
 * so the page needs no files on disk and no network at run time.
 */
#include <stdio.h>
#include <string.h>

static const char *mime_for(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot)
        return "application/octet-stream";
    if (!strcmp(dot, ".html"))
        return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js"))
        return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css"))
        return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg"))
        return "image/svg+xml";
    if (!strcmp(dot, ".png"))
        return "image/png";
    return "application/octet-stream";
}

int main(int argc, char **argv)
{
    printf("#include <stddef.h>\n#include \"core/assets.h\"\n");
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        printf("static const unsigned char asset_%d[] = {", i);
        int ch;
        size_t n = 0;
        while ((ch = getc(f)) != EOF)
            printf("%s%d,", (n++ % 32) ? "" : "\n", ch);
        printf("0};\n");
        fclose(f);
    }
    printf("const struct gh_asset gh_assets[] = {\n");
    for (int i = 1; i < argc; i++) {
        const char *name = strrchr(argv[i], '/');
        name = name ? name + 1 : argv[i];
        printf("    {\"/%s\", \"%s\", asset_%d, sizeof(asset_%d) - 1},\n", name, mime_for(argv[i]),
               i, i);
    }
    printf("    {NULL, NULL, NULL, 0},\n};\n");
    return 0;
}
