/*
 * line: the line reader shared by the text protocols. A line ends with LF (CRLF or a
 * bare LF); it is handed out without its ending. Over-long lines are reported, not cut.
 */
#ifndef GH_LINE_H
#define GH_LINE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "net/conn.h"

/* Replies waiting for the client beyond which a front door takes no more commands from its
 * input: a client that pipelines without reading cannot make replies pile up in memory. */
#define GH_LINE_OUT_MAX GH_CONN_OUT_HIGH

enum gh_line_result {
    GH_LINE_MORE,    /* no complete line yet */
    GH_LINE_OK,      /* *line and *len hold one line, consumed from the buffer */
    GH_LINE_TOO_LONG /* the line exceeds max bytes: reported once, then its rest is
                        discarded up to and including its LF */
};

/* The line points into the buffer and stays valid until the buffer is next changed.
 * It is NUL-terminated in place of its line ending. *skipping is the reader's state
 * (false at start) and is kept by the caller between calls. */
enum gh_line_result gh_line_take(struct gh_buf *in, size_t max, bool *skipping, char **line,
                                 size_t *len);

/* The idle time-out of a mail front door: dflt, unless GATEHOUSE_MAIL_IDLE_MS (100 ms to
 * 1 day) overrides it for every mail protocol, e.g. in tests. */
uint32_t gh_line_idle_ms(uint32_t dflt);

/* Splits a command line: *word_len is the length of its first word (up to a space), and
 * the arguments after the spaces that follow it are returned ("" when there are none). */
const char *gh_line_word(const char *line, size_t *word_len);
/* The word is name, ignoring ASCII case. */
bool gh_line_is(const char *word, size_t word_len, const char *name);

/* IMAP and ManageSieve: when the line ends with a literal announcement "{N}", "{N+}" or
 * "{N-}", stores N and whether the client sends it without waiting (+/-) and returns true. */
bool gh_line_literal(const char *line, size_t len, uint64_t *n, bool *nonsync);

/* Discards up to *remaining bytes of a literal from the buffer; false while more are due. */
bool gh_line_skip(struct gh_buf *in, uint64_t *remaining);

#endif
