/*
 * handoff: passing a session to a backend mail server (an x:Destination) once the front
 * door's part is done — choosing one (load shared, failing over), connecting, telling it the
 * client's address (PROXY v2, v1 or nothing), then relaying bytes both ways.
 */
#ifndef GH_HANDOFF_H
#define GH_HANDOFF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/addr.h"
#include "net/listener-t.h"

struct gh_conn;
struct gh_engine;

enum gh_forwarding { GH_FWD_PROXY_V2, GH_FWD_PROXY_V1, GH_FWD_NONE };

#define GH_DEST_NAME_MAX 65
#define GH_DEST_UNIX_MAX 108

/* One backend as the engine sees it. */
struct gh_destination {
    char name[GH_DEST_NAME_MAX];
    enum gh_protocol protocol;
    bool is_unix;
    struct gh_sockaddr addr;          /* when !is_unix */
    char unix_path[GH_DEST_UNIX_MAX]; /* when is_unix */
    enum gh_forwarding forwarding;
    uint32_t connect_timeout_ms;
    unsigned nlisteners; /* 0: every listener of the protocol */
    char (*listeners)[GH_DEST_NAME_MAX];
};

/* Replaces the destinations every worker uses for new hand-offs (copied). */
bool gh_engine_set_destinations(struct gh_engine *e, const struct gh_destination *d, unsigned n);

/* Whether a destination serves this connection's listener. */
bool gh_conn_has_destination(const struct gh_conn *c);

/*
 * Hands the session over. swallow_greeting: the client already had the front door's
 * greeting, so the backend's is read and dropped. hello (optional, "EHLO name"): sent after
 * the greeting, its reply dropped too — opportunistic SMTP, where the client already said
 * hello to us. first (optional): a command line the front door had taken, sent next. Then
 * whatever is left in c->in, and from then on bytes flow both ways untouched.
 * When no destination can be reached the client gets the protocol's temporary failure.
 */
void gh_conn_handoff(struct gh_conn *c, bool swallow_greeting, const char *hello,
                     const char *first);

/* A login on the client's behalf at a backend chosen at run time. The protocol's driver
 * reads the backend's lines (greeting first) and answers them; ctx is the protocol's. */
enum gh_login_step {
    GH_LOGIN_CONTINUE, /* send what was queued in to_backend, read the next line */
    GH_LOGIN_DONE,     /* logged in: what was written to the client stands, relay from now */
    GH_LOGIN_REFUSED   /* the backend said no: the session goes back to the front door */
};
struct gh_buf;
struct gh_backend_login {
    /* line: NUL-terminated without its line end; the driver may gh_conn_write to c. */
    enum gh_login_step (*line)(void *ctx, struct gh_conn *c, const char *line, size_t len,
                               struct gh_buf *to_backend);
    /* The session is back at the front door (phase PROTOCOL, input resumed): the backend
     * refused (why NULL), or could not be reached or answered wrongly (why says what). */
    void (*failed)(void *ctx, struct gh_conn *c, const char *why);
    void *ctx;
};

/*
 * Hands the session to addr (forwarding the client's address as asked) and runs login's
 * driver there; on GH_LOGIN_DONE whatever the client sent meanwhile follows, then bytes
 * flow both ways. On failure login->failed is called and the session stays with the
 * front door, which may try again.
 */
void gh_conn_handoff_to(struct gh_conn *c, const struct gh_sockaddr *addr,
                        enum gh_forwarding forwarding, uint32_t connect_timeout_ms,
                        const struct gh_backend_login *login);

#endif
