/*
 * line: the line reader shared by the text protocols. A line ends with LF (CRLF or a
 * bare LF); it is handed out without its ending. Over-long lines are reported, not cut.
 */
#ifndef GH_LINE_H
#define GH_LINE_H
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

enum gh_line_result {
    GH_LINE_MORE,    /* no complete line yet */
    GH_LINE_OK,      /* *line/*len hold one line, consumed from the buffer */
    GH_LINE_TOO_LONG /* the line exceeds max bytes: reported once, then its rest is
                        discarded up to and including its LF */
};

/* The line points into the buffer and stays valid until the buffer is next changed.
 * It is NUL-terminated in place of its line ending. *skipping is the reader's state
 * (false at start) and is kept by the caller between calls. */
enum gh_line_result gh_line_take(struct gh_buf *in, size_t max, bool *skipping, char **line,
                                 size_t *len);

#endif
