/*
 * proto: what every protocol front door implements. A protocol sees a connection
 * only after the PROXY header and any implicit TLS handshake are done.
 */
#ifndef GH_PROTO_H
#define GH_PROTO_H
#include <stdbool.h>

#include "net/conn.h"
#include "net/listener-t.h"

struct gh_proto {
    const char *name;
    /* The connection is ready: send the greeting, arm the idle deadline. */
    void (*open)(struct gh_conn *c);
    /* New bytes are in c->in: consume what forms complete commands. */
    void (*input)(struct gh_conn *c);
    /* A STARTTLS handshake completed: reset state (and, for ManageSieve, re-send capabilities). */
    void (*tls_ready)(struct gh_conn *c);
    /* The idle deadline fired: say goodbye and close. */
    void (*idle)(struct gh_conn *c);
    /* Graceful stop of the daemon: send the protocol's goodbye, close after flush. */
    void (*shutdown)(struct gh_conn *c);
    /* Frees c->proto_state. */
    void (*release)(struct gh_conn *c);
    /* Written, then the connection is closed, when the listener is at maxConnections.
     * NULL: close silently. */
    const char *over_limit;
    /* Written, then the connection is closed, when no destination can take the session. */
    const char *unavailable;
    /* The command that ends the client's session (QUIT; LOGOUT, after its tag in IMAP): a
     * relay whose backend ends the session right after it closes at once. NULL: none. */
    const char *end_command;
    /* After STARTTLS the client expects the greeting again (ManageSieve's capabilities), so a
     * hand-off then relays the backend's greeting instead of dropping it. */
    bool greets_after_tls;
};

const struct gh_proto *gh_proto_for(enum gh_protocol p);

extern const struct gh_proto gh_proto_smtp, gh_proto_lmtp, gh_proto_imap, gh_proto_pop3,
    gh_proto_managesieve, gh_proto_http;

#endif
