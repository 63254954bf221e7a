/*
 * log: one line per event on stderr (or --log-file), as text or JSON lines, carrying the
 * listener name, the client address (the PROXY-given one when there is one) and an event name.
 */
#ifndef GH_LOG_H
#define GH_LOG_H
#include <stdbool.h>

#include "core/err.h"

struct gh_loop;

enum gh_log_format { GH_LOG_TEXT, GH_LOG_JSON };

void gh_log_init(enum gh_log_format format);

/* listener and client may be NULL. Never pass secrets in the message. */
void gh_log(const char *listener, const char *client, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes every line to path (appended, created 0640) instead of stderr. */
bool gh_log_open_file(const char *path, gh_err *err);
/* Opens the file again under its name (after logrotate renamed it); a no-op on stderr. */
bool gh_log_reopen(gh_err *err);

/* One field of a structured line. A NULL value leaves the field out. Values come from
 * outside (a client, an operator) unless marked: characters that could split or fake a field
 * are replaced, and JSON escaped. */
enum gh_log_value {
    GH_LOG_FOREIGN, /* anything: sanitised */
    GH_LOG_OWN,     /* made here (an address, a name from a table): written as it is */
    GH_LOG_NUM,     /* made here, a number or boolean: unquoted in JSON */
};
/* A field's key, a literal written with its separators in one copy: " key=" in text,
 * ",\"key\":" in JSON. A line's keys are a static table; only its values change. */
struct gh_log_key {
    const char *text, *json;
    unsigned char text_len, json_len;
    enum gh_log_value kind;
};
#define GH_LOG_KEY(key, kind)                                                                      \
    {                                                                                              \
        " " key "=", ",\"" key "\":", sizeof(key) + 1, sizeof(key) + 3, (kind)                     \
    }

/* Whether session lines are written (--session-log on|off; on by default). */
void gh_log_set_sessions(bool on);
bool gh_log_sessions(void);

/* A line of fields after the time and event: `key=value` in text (values made of safe
 * characters), members in JSON; values[i] belongs to keys[i], and a NULL one leaves its field
 * out. On a thread with an attached loop the line is made in place in the thread's buffer
 * and written within a second; elsewhere at once. */
void gh_log_fields(const char *event, const struct gh_log_key *keys, const char *const *values,
                   unsigned n);

/* Gives the calling thread a buffer flushed by a timer of its loop; detach writes what is
 * left and frees it (a worker's stop). */
void gh_log_attach(struct gh_loop *loop);
void gh_log_detach(void);
/* Writes the calling thread's buffered lines now. */
void gh_log_flush(void);

#endif
