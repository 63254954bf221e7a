/*
 * frontauth: logins at the front door (SPEC §13). A protocol that has a client's
 * credentials asks the listener's auth service; on OK the session goes to the backend it
 * names, where the protocol's driver logs in on the client's behalf; otherwise the
 * protocol answers with its failure reply (after Auth-Wait), and the third failure ends
 * the session. Shared by SMTP, IMAP, POP3 and ManageSieve.
 */
#ifndef GH_FRONTAUTH_H
#define GH_FRONTAUTH_H
#include <stdbool.h>
#include <stddef.h>

#include "auth/auth_http.h"
#include "net/conn.h"
#include "net/handoff.h"

#define GH_FRONT_MAX_FAILURES 3
#define GH_FRONT_USER_MAX     255 /* a login name from the client */
#define GH_FRONT_PASS_MAX     511 /* a password from the client */

struct gh_front_auth;

/* What one protocol adds. */
struct gh_front_auth_ops {
    const char *protocol; /* Auth-Protocol: "smtp", "imap", "pop3", "sieve" */
    bool need_pass;       /* the backend login needs a password (all but SMTP) */
    /* The login failed: temporary (service or backend trouble) or not; message is the
     * service's Auth-Status text when passErrorMessage is on, else NULL; smtp_code its
     * Auth-Error-Code or NULL. Writes the protocol's reply; when last, the session ends
     * after it (write the goodbye too). */
    void (*failed)(struct gh_conn *c, bool temporary, const char *message, const char *smtp_code,
                   bool last);
    /* The backend login driver (see gh_backend_login); fa gives the credentials. */
    enum gh_login_step (*backend_line)(struct gh_front_auth *fa, struct gh_conn *c,
                                       const char *line, size_t len, struct gh_buf *to_backend);
    /* The front door may read commands again (a failure was answered); called from the
     * loop, outside the protocol's callbacks. */
    void (*resume)(struct gh_conn *c);
};

/* Owner: the protocol's state (a pointer there, made on the first login). */
struct gh_front_auth {
    const struct gh_front_auth_ops *ops;
    struct gh_conn *c;
    struct gh_auth_call *call;
    struct gh_timer wait;
    unsigned attempts, failures;
    enum { FA_RETRY, FA_ANSWER, FA_RESUME } timer_job; /* what the wait timer does */
    bool last_temporary;
    bool xclient;
    enum gh_forwarding forwarding;
    uint32_t timeout_ms;
    char message[GH_AUTH_MSG_MAX], smtp_code[GH_AUTH_CODE_MAX];
    bool pass_error_message;
    /* The client's credentials, then the backend's (Auth-User/Auth-Pass when given). */
    char user[GH_AUTH_USER_MAX], pass[GH_AUTH_USER_MAX];
    size_t user_len, pass_len;
    char login_user[GH_AUTH_USER_MAX]; /* the client's login name, for logs and counting */
    /* SMTP without AUTH: the transaction's first lines */
    bool method_none;
    char *smtp_helo, *smtp_from, *smtp_to;
    /* for the protocol's driver */
    int stage;
    unsigned flags;
    char tag[72];
    struct gh_buf pieces; /* literal parts still to send after "+" */
};

/* The auth service serving this connection's listener, if any (on its worker). */
bool gh_front_auth_serves(const struct gh_conn *c);

/*
 * Starts a login for user/pass (raw bytes). *fa is made when NULL. The protocol stops
 * reading commands until ops->resume or the hand-off. tag (IMAP, may be NULL) is kept for
 * the driver and the replies.
 */
void gh_front_auth_start(struct gh_front_auth **fa, struct gh_conn *c,
                         const struct gh_front_auth_ops *ops, const char *tag, const char *user,
                         size_t user_len, const char *pass, size_t pass_len);
/* SMTP without AUTH: routes the session by its envelope (Auth-Method: none). */
void gh_front_auth_start_none(struct gh_front_auth **fa, struct gh_conn *c,
                              const struct gh_front_auth_ops *ops, const char *helo,
                              const char *from, const char *to);
/* Frees it (cancelling a request in flight); NULL is fine. */
void gh_front_auth_free(struct gh_front_auth *fa);

/* SASL PLAIN: decodes base64 text into authcid and password; false when malformed
 * (bad base64, not two NULs, empty or over-long parts). */
bool gh_sasl_plain(const char *b64, size_t len, char *user, size_t *user_len, char *pass,
                   size_t *pass_len);
/* Strict base64 (RFC 4648, padding required): out holds at most cap bytes. */
bool gh_base64_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len);

#endif
