/*
 * tls_io: a BIO whose reads and writes are the loop's gh_io_recv/gh_io_send. A would-block
 * answer becomes OpenSSL's retry (SSL_ERROR_WANT_READ/WRITE), as with a socket BIO; errno is
 * left as the call set it, so a failed handshake can still say why. A large write's records
 * are gathered and sent together (gh_tls_io_write); what a short send leaves of them goes
 * before anything else written.
 */
#include "net/tls_io.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

/* One gathering's records, and one OpenSSL still held from a write that had to wait. */
#define GATHER_ROOM ((GH_TLS_GATHER / SSL3_RT_MAX_PLAIN_LENGTH + 1) * SSL3_RT_MAX_PACKET_SIZE)

struct tls_io {
    struct gh_io *io;
    char *held; /* gathered records not yet sent: held[off..len) */
    size_t off, len;
    bool gathering;
};

static BIO_METHOD *method;
static int method_type;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static int would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* 1 when nothing is held any more, 0 when the socket is full, -1 on failure (errno). */
static int send_held(struct tls_io *t)
{
    while (t->off < t->len) {
        ssize_t n = gh_io_send(gh_loop_current(), t->io, t->held + t->off, t->len - t->off);
        if (n < 0)
            return would_block() ? 0 : -1;
        t->off += (size_t)n;
    }
    free(t->held);
    t->held = NULL;
    t->off = t->len = 0;
    return 1;
}

static int gather(struct tls_io *t, const char *data, size_t len)
{
    if (!t->held && !(t->held = malloc(GATHER_ROOM)))
        return 0;
    if (GATHER_ROOM - t->len < len)
        return 0; /* not reached: gh_tls_io_write bounds what one gathering takes */
    memcpy(t->held + t->len, data, len);
    t->len += len;
    return 1;
}

static int io_write(BIO *b, const char *data, size_t len, size_t *written)
{
    struct tls_io *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->gathering) {
        *written = len;
        return gather(t, data, len);
    }
    int held = t->held ? send_held(t) : 1; /* in the order OpenSSL wrote them */
    if (held <= 0) {
        if (held == 0)
            BIO_set_retry_write(b);
        return 0;
    }
    ssize_t n = gh_io_send(gh_loop_current(), t->io, data, len);
    if (n < 0) {
        if (would_block())
            BIO_set_retry_write(b);
        return 0;
    }
    *written = (size_t)n;
    return 1;
}

static int io_read(BIO *b, char *data, size_t len, size_t *readbytes)
{
    struct tls_io *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = gh_io_recv(gh_loop_current(), t->io, data, len);
    if (n < 0) {
        if (would_block())
            BIO_set_retry_read(b);
        return 0;
    }
    if (n == 0)
        BIO_set_flags(b, BIO_FLAGS_IN_EOF); /* the peer's end: not a retry */
    *readbytes = (size_t)n;
    return n > 0;
}

static long io_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH: /* writes are already on their way */
        return 1;
    case BIO_CTRL_EOF:
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    default:
        return 0;
    }
}

static int io_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int io_destroy(BIO *b)
{
    struct tls_io *t = BIO_get_data(b);
    if (t) {
        free(t->held);
        free(t);
        BIO_set_data(b, NULL);
    }
    return 1;
}

static void make_method(void)
{
    method_type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    BIO_METHOD *m = BIO_meth_new(method_type, "gatehouse loop");
    if (m && BIO_meth_set_write_ex(m, io_write) && BIO_meth_set_read_ex(m, io_read) &&
        BIO_meth_set_ctrl(m, io_ctrl) && BIO_meth_set_create(m, io_create) &&
        BIO_meth_set_destroy(m, io_destroy))
        method = m;
    else
        BIO_meth_free(m);
}

bool gh_tls_io_attach(SSL *ssl, struct gh_io *io)
{
    pthread_once(&method_once, make_method);
    struct tls_io *t = method ? gh_zalloc(sizeof *t) : NULL;
    BIO *b = t ? BIO_new(method) : NULL;
    if (!b) {
        free(t);
        return false;
    }
    t->io = io;
    BIO_set_data(b, t);
    SSL_set_bio(ssl, b, b);
    return true;
}

static struct tls_io *tls_io_of(SSL *ssl)
{
    BIO *b = SSL_get_wbio(ssl); /* ours, below the buffer OpenSSL adds during a handshake */
    return b && BIO_method_type(b) == method_type ? BIO_get_data(b) : NULL;
}

ssize_t gh_tls_io_write(SSL *ssl, const void *data, size_t len)
{
    struct tls_io *t = tls_io_of(ssl);
    int held = t && t->held ? send_held(t) : 1;
    if (held <= 0)
        return held;
    size_t want = len > GH_TLS_GATHER ? GH_TLS_GATHER : len, taken = 0;
    if (t)
        t->gathering = want > SSL3_RT_MAX_PLAIN_LENGTH; /* a single record gains nothing */
    ERR_clear_error();
    int r = 1;
    /* a session in partial-write mode writes one record per call */
    while (taken < want &&
           (r = SSL_write(ssl, (const char *)data + taken, (int)(want - taken))) > 0)
        taken += (size_t)r;
    if (t)
        t->gathering = false;
    if (!taken) {
        int e = SSL_get_error(ssl, r);
        return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
    }
    return t && t->held && send_held(t) < 0 ? -1 : (ssize_t)taken;
}

int gh_tls_io_flush(SSL *ssl)
{
    struct tls_io *t = tls_io_of(ssl);
    return t && t->held ? send_held(t) : 1;
}
