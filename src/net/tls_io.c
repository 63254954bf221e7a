/*
 * tls_io: a BIO whose reads and writes are the loop's gh_io_recv/gh_io_send. A would-block
 * answer becomes OpenSSL's retry (SSL_ERROR_WANT_READ/WRITE), as with a socket BIO; errno is
 * left as the call set it, so a failed handshake can still say why.
 */
#include "net/tls_io.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <pthread.h>

static BIO_METHOD *method;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static int would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static int io_write(BIO *b, const char *data, size_t len, size_t *written)
{
    BIO_clear_retry_flags(b);
    ssize_t n = gh_io_send(gh_loop_current(), BIO_get_data(b), data, len);
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
    BIO_clear_retry_flags(b);
    ssize_t n = gh_io_recv(gh_loop_current(), BIO_get_data(b), data, len);
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

static void make_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gatehouse loop");
    if (m && BIO_meth_set_write_ex(m, io_write) && BIO_meth_set_read_ex(m, io_read) &&
        BIO_meth_set_ctrl(m, io_ctrl) && BIO_meth_set_create(m, io_create))
        method = m;
    else
        BIO_meth_free(m);
}

bool gh_tls_io_attach(SSL *ssl, struct gh_io *io)
{
    pthread_once(&method_once, make_method);
    BIO *b = method ? BIO_new(method) : NULL;
    if (!b)
        return false;
    BIO_set_data(b, io);
    SSL_set_bio(ssl, b, b);
    return true;
}
