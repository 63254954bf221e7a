/*
 * err: errors as values. A function that can fail takes a `gh_err *` and fills it
 * with a message a person can act on; callers add context as the error travels up.
 */
#ifndef GH_ERR_H
#define GH_ERR_H
#include <stdbool.h>

#define GH_ERR_MAX 256

typedef struct gh_err {
    int sys;              /* errno behind the failure, 0 when none */
    char msg[GH_ERR_MAX]; /* "bind 127.0.0.1:25: Address already in use" */
} gh_err;

/* Sets the message and returns false, so a failing path reads `return gh_fail(...)`. */
bool gh_fail(gh_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* As gh_fail, with ": strerror(errnum)" appended and errnum kept in e->sys. */
bool gh_fail_sys(gh_err *e, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes the message with "context: ". */
void gh_err_context(gh_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
