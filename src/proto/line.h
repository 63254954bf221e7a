/*
 * line: the line reader shared by the text protocols. A line ends with LF (CRLF or a
 * bare LF); it is handed out without its ending. Over-long lines are reported, not cut.
 * gh_line_input drives a front door's input: each protocol file keeps only its dialogue.
 */
#ifndef GH_LINE_H
#define GH_LINE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "net/conn.h"

/* Replies waiting for the client beyond which a front door takes no more commands from its
 * input: a client that pipelines without reading cannot make replies pile up in memory. */
#define GH_LINE_OUT_MAX GH_CONN_OUT_HIGH

/* Error replies (unknown commands, bad syntax, over-long lines) after which a front door
 * says goodbye and closes. */
#define GH_LINE_MAX_ERRORS 20

/* What a text protocol gives the shared reader; one static table per protocol. The
 * callbacks find their protocol's state in c->proto_state. */
struct gh_line_proto {
    size_t max_line;  /* the longest command line, its ending apart */
    uint32_t idle_ms; /* the idle time-out, unless GATEHOUSE_MAIL_IDLE_MS overrides it */
    /* Goodbyes, formats given the host name: after GH_LINE_MAX_ERRORS errors, at the idle
     * time-out, at the daemon's shutdown. */
    const char *too_many_errors;
    const char *idle_goodbye;
    const char *shutdown_goodbye;
    /* IMAP and ManageSieve (zero elsewhere): the largest literal skipped, the goodbye for a
     * larger one, and whether a synchronizing {N} follows its line at once too (ManageSieve
     * has no continuation request; IMAP's client waits for a "+" that never comes). */
    uint64_t max_literal;
    const char *literal_too_large;
    bool sync_literal_follows;
    /* The first line of a command, NUL-terminated in place of its ending; len counts any NUL
     * within. Without finish the protocol answers it here. */
    void (*line)(struct gh_conn *c, const char *line, size_t len);
    /* IMAP and ManageSieve: the command's last line is in, its literals skipped: answer it. */
    void (*finish)(struct gh_conn *c);
    /* A line over max_line (its rest is discarded, and the line after it starts a new
     * command) gets the error too_long_reply, or too_long answers it. */
    const char *too_long_reply;
    void (*too_long)(struct gh_conn *c);
};

/* The reader state of a text front door. It is the first member of the protocol's state
 * (c->proto_state, allocated by gh_line_open), which is where the functions below find it. */
struct gh_line_reader {
    const struct gh_line_proto *proto;
    bool skipping;    /* discarding the rest of an over-long line */
    bool stopped;     /* a goodbye, STARTTLS or a hand-off: input that follows is not ours */
    uint64_t literal; /* bytes of a literal still to discard (IMAP, ManageSieve) */
    bool continued;   /* the next line continues a command, after its literal */
    unsigned errors;  /* error replies so far; a TLS upgrade does not reset them */
};

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
/* The word is name, ignoring ASCII case. Inline, so a command chain's names are measured
 * at compile time, and the first letter settles most of its comparisons without a call. */
static inline bool gh_line_is(const char *word, size_t word_len, const char *name)
{
    return strlen(name) == word_len &&
           (word_len == 0 || (word[0] | 0x20) == (name[0] | 0x20)) && /* | 0x20: ASCII lower */
           strncasecmp(word, name, word_len) == 0;
}
/* The word is one of names (a list that ends with NULL), ignoring ASCII case. */
bool gh_line_is_any(const char *word, size_t word_len, const char *const *names);

/* IMAP and ManageSieve: when the line ends with a literal announcement "{N}", "{N+}" or
 * "{N-}", stores N and whether the client sends it without waiting (+/-) and returns true. */
bool gh_line_literal(const char *line, size_t len, uint64_t *n, bool *nonsync);

/* Discards up to *remaining bytes of a literal from the buffer; false while more are due. */
bool gh_line_skip(struct gh_buf *in, uint64_t *remaining);

/* Allocates the protocol's state (size bytes, zeroed, beginning with its gh_line_reader) as
 * c->proto_state, reading for proto, and arms the idle time-out. NULL when out of memory:
 * the connection is closed. */
void *gh_line_open(struct gh_conn *c, size_t size, const struct gh_line_proto *proto);

/* gh_proto.input: while the session is not stopped and fewer than GH_LINE_OUT_MAX bytes of
 * replies wait, skips any pending literal and hands each command to the protocol. Only complete
 * commands count as activity: the idle time-out is re-armed after them, so a client trickling
 * bytes cannot hold a connection slot. */
void gh_line_input(struct gh_conn *c);

/* Writes reply and its CRLF and counts it as an error; the GH_LINE_MAX_ERRORS-th also gets
 * the protocol's goodbye, and the session stops. */
void gh_line_error(struct gh_conn *c, const char *reply);

/* The session ends: nothing more is read, and the connection closes once replies are sent. */
void gh_line_stop(struct gh_conn *c);

/* The upgrade's ready reply is queued: nothing more is read in plaintext (whatever the client
 * pipelined behind the command is thrown away, never answered), and the handshake starts. */
void gh_line_starttls(struct gh_conn *c);

/* The handshake completed: reading starts over (errors are kept), the idle time-out is armed
 * and bytes that arrived encrypted behind the handshake are read. */
void gh_line_restart(struct gh_conn *c);

/* gh_proto.idle and .shutdown: the protocol's goodbye, then close. A session already ending,
 * or inside a TLS handshake where plaintext cannot go, only closes. */
void gh_line_idle(struct gh_conn *c);
void gh_line_shutdown(struct gh_conn *c);

/* gh_proto.release: frees the state gh_line_open allocated. */
void gh_line_release(struct gh_conn *c);

#endif
