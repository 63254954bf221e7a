/*
 * log: one line per event on stderr, as text or JSON lines, carrying the listener
 * name, the client address (the PROXY-given one when there is one) and an event name.
 */
#ifndef GH_LOG_H
#define GH_LOG_H

enum gh_log_format { GH_LOG_TEXT, GH_LOG_JSON };

void gh_log_init(enum gh_log_format format);

/* listener and client may be NULL. Never pass secrets in the message. */
void gh_log(const char *listener, const char *client, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
