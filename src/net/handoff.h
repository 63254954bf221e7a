/*
 * handoff: passing a session to a backend mail server (an x:Destination, or one named at run
 * time for a login at the front door) once the front door's part is done — choosing one (load
 * shared, failing over), connecting, telling it the client's address (PROXY v2, v1 or
 * nothing), then relaying bytes both ways.
 */
#ifndef GH_HANDOFF_H
#define GH_HANDOFF_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#include "net/addr.h"
#include "net/listener-t.h"
#include "net/tls_io.h"

struct gh_conn;
struct gh_engine;

enum gh_forwarding { GH_FWD_PROXY_V2, GH_FWD_PROXY_V1, GH_FWD_NONE };
enum gh_backend_tls { GH_BTLS_NONE, GH_BTLS_IMPLICIT, GH_BTLS_STARTTLS };
enum gh_dest_status { GH_DEST_UNKNOWN, GH_DEST_UP, GH_DEST_DOWN };

#define GH_DEST_NAME_MAX 65
#define GH_DEST_UNIX_MAX 108
#define GH_DEST_ID_MAX   72

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_session_st SSL_SESSION;

/*
 * What the health checks found about one destination. Written by the health checker
 * alone (status atomically; the counters are its own), read by every worker without a
 * lock. Carried from one destination set to the next while the destination keeps its id
 * and address. Owner: reference-counted (each set holding the destination).
 */
struct gh_dest_health {
    atomic_uint refs;
    atomic_int status;   /* enum gh_dest_status */
    unsigned oks, fails; /* consecutive results, health checker only */
};

/* One backend as the engine sees it. */
struct gh_destination {
    char id[GH_DEST_ID_MAX];
    char name[GH_DEST_NAME_MAX];
    enum gh_protocol protocol;
    bool is_unix;
    struct gh_sockaddr addr;          /* when !is_unix */
    char unix_path[GH_DEST_UNIX_MAX]; /* when is_unix */
    enum gh_forwarding forwarding;
    uint32_t connect_timeout_ms;
    uint32_t weight; /* 0: draining, no new sessions */
    bool health_check;
    uint32_t check_interval_ms, check_timeout_ms, rise, fall;
    enum gh_backend_tls tls;
    bool tls_verify;
    char *tls_ca_pem; /* trust anchors (PEM); NULL: the system CA store */
    char tls_server_name[256];
    unsigned nlisteners; /* 0: every listener of the protocol */
    char (*listeners)[GH_DEST_NAME_MAX];
    /* filled in by gh_dest_set_new */
    SSL_CTX *tls_ctx;              /* when tls != none */
    SSL_SESSION **tls_sessions;    /* with tls_ctx: per worker (by index), the last session
                                      this destination gave it, which its next connect resumes */
    struct gh_dest_health *health; /* never NULL in a set */
};

/* The destinations, immutable once built, shared by the workers and the health checker.
 * Owner: reference-counted. */
struct gh_dest_set {
    atomic_uint refs;
    unsigned n;
    struct gh_destination *d;
};

/* A set from n destinations (copied), with their TLS client contexts; the health state of
 * a destination of prev with the same id and address is carried over. NULL with err. */
struct gh_dest_set *gh_dest_set_new(const struct gh_destination *d, unsigned n,
                                    const struct gh_dest_set *prev, gh_err *err);
struct gh_dest_set *gh_dest_set_ref(struct gh_dest_set *s);
void gh_dest_set_unref(struct gh_dest_set *s);

/* Whether new sessions may be sent there on the first try: weight above 0 and not down. */
bool gh_dest_usable(const struct gh_destination *d);

/* Smooth weighted round-robin (as nginx): each eligible destination (weight[i] > 0) gains its
 * weight, the one with the most is chosen and loses the total. Over any run of sessions each
 * gets its share within one session, interleaved. current (n values) is the state. Returns
 * the index, or -1 when none is eligible. */
int gh_swrr_pick(int64_t *current, const uint32_t *weight, unsigned n);

/* Replaces the destinations every worker uses for new hand-offs (takes a reference). */
void gh_engine_use_destinations(struct gh_engine *e, struct gh_dest_set *s);

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

/* The destination bytes flow to, once the hand-off is done; NULL before or without one. */
const char *gh_relay_destination(const struct gh_conn *c);
/* A session carrying a transfer with TLS on a leg is read GH_RELAY_STREAM_CHUNK at a time,
 * which then leaves in one send (its records gathered). */
#define GH_RELAY_STREAM_CHUNK GH_TLS_GATHER
bool gh_relay_streaming(const struct gh_conn *c);

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
