/*
 * session_log: the `session` line written when a connection ends — who, where, how
 * encrypted, to which destination, how many bytes, how long and how it ended.
 */
#ifndef GH_SESSION_LOG_H
#define GH_SESSION_LOG_H
#include <stdbool.h>
#include <stdint.h>

struct gh_conn;

/* Writes the line of c (buffered per worker); us is the session's duration. Called by
 * gh_conn_close while the socket and the relay are still there. */
void gh_session_log(struct gh_conn *c, uint64_t us);

/* Whether the PROXY header named a client other than the TCP peer. */
bool gh_session_peer_differs(const struct gh_conn *c);

extern const char *const gh_session_end_names[]; /* by enum gh_session_end */

#endif
