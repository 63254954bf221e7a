/*
 * tls_io: OpenSSL reads and writes a connection's socket through the event loop's socket I/O
 * (gh_io_recv/gh_io_send), so TLS sessions ride the io_uring engine's ring I/O as well; the
 * records of a large write leave in one system call instead of one each.
 */
#ifndef GH_TLS_IO_H
#define GH_TLS_IO_H
#include <stdbool.h>
#include <sys/types.h>

#include "core/loop.h"

typedef struct ssl_st SSL;

/* Gives ssl a BIO over io on the calling thread's loop (which must own io); false when
 * OpenSSL is out of memory. */
bool gh_tls_io_attach(SSL *ssl, struct gh_io *io);

/* Plaintext one gh_tls_io_write takes at most: its records are gathered and sent together. */
#define GH_TLS_GATHER (64 * 1024)

/* SSL_write of up to GH_TLS_GATHER bytes of data (on a session with the BIO above, whose
 * records then leave in one send): the bytes taken; 0 when none can be taken now (wait for
 * the socket to be writable, or readable for WANT_READ); -1 on failure. Records a short send
 * left are held and go first. */
ssize_t gh_tls_io_write(SSL *ssl, const void *data, size_t len);
/* Sends the records still held: 1 when none are left, 0 when the socket is full (wait for
 * writability), -1 on failure. */
int gh_tls_io_flush(SSL *ssl);

#endif
