/*
 * backend: one connection to a destination, brought to the point where it can take a
 * session — connect, PROXY header, TLS (implicit, or the protocol's own STARTTLS), greeting —
 * shared by the hand-off and the health checks; then reads and writes through TLS or not.
 */
#ifndef GH_BACKEND_H
#define GH_BACKEND_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/loop.h"
#include "net/handoff.h"

typedef struct ssl_st SSL;
struct gh_backend;

/* Called once the backend is ready (error NULL) or has failed (error says why). The
 * backend may be closed or freed from inside. */
typedef void (*gh_backend_done_fn)(struct gh_backend *b, const char *error);

/* Embedded in its owner, zeroed before gh_backend_open. */
struct gh_backend {
    struct gh_io io; /* after done(NULL) the owner sets io.fn and its events */
    struct gh_timer timer;
    struct gh_loop *loop;
    const struct gh_destination *dest; /* borrowed: the owner holds the set */
    SSL *ssl;
    int stage;
    bool registered, want_greeting;
    uint32_t step_timeout_ms; /* each step after connecting; 0 = 30 s */
    char *hello_name; /* SMTP/LMTP before STARTTLS: EHLO/LHLO's name (owned; NULL: localhost) */
    struct gh_buf out, in;
    char *greeting; /* the greeting to present to a client, when read (owned) */
    size_t greeting_len;
    gh_backend_done_fn done;
};

/*
 * Starts connecting to d; header (may be NULL) is sent first, before any TLS.
 * want_greeting: read the greeting (a refusal fails the open) and keep it in b->greeting;
 * with a STARTTLS leg it is always read, and is the one to present (IMAP without its
 * pre-TLS CAPABILITY code; ManageSieve: the capabilities sent again after TLS). False when
 * the connection cannot even start (then done is not called).
 */
bool gh_backend_open(struct gh_backend *b, struct gh_loop *loop, const struct gh_destination *d,
                     const void *header, size_t header_len, bool want_greeting,
                     gh_backend_done_fn done);
/* Closes the socket and the TLS session, frees buffers and the greeting. Idempotent. */
void gh_backend_close(struct gh_backend *b);

/* recv/send through TLS when the leg has it: >0 bytes, 0 closed (recv), -1 with errno
 * (EAGAIN when it would block). */
ssize_t gh_backend_recv(struct gh_backend *b, void *buf, size_t len);
ssize_t gh_backend_send(struct gh_backend *b, const void *buf, size_t len);
/* Sends records a short TLS send left behind: 1 when none are left, 0 when the socket is
 * full (wait for writability), -1 on failure. */
int gh_backend_flush(struct gh_backend *b);
/* Bytes already decrypted and waiting inside the TLS session (epoll does not see them). */
bool gh_backend_pending(const struct gh_backend *b);
/* Bytes received and held by the TLS session, decrypted or not: with read-ahead whole records
 * can wait there, and no readiness will tell of them. */
bool gh_backend_buffered(const struct gh_backend *b);

/* Length of the complete first reply in buf (a multi-line SMTP reply, a ManageSieve
 * block up to OK/NO/BYE, one line otherwise), or 0 while it is incomplete. */
size_t gh_backend_reply_length(enum gh_protocol p, const char *buf, size_t len);
/* Whether a greeting or reply (NUL-terminated) is a positive one. */
bool gh_backend_reply_positive(enum gh_protocol p, const char *buf);

/* A TLS client context: TLS 1.2 and 1.3; verify against ca_pem (PEM trust anchors) or, when
 * NULL, the system CA store. NULL with err. */
SSL_CTX *gh_backend_tls_ctx(bool verify, const char *ca_pem, gh_err *err);

#endif
