/*
 * tls_io: OpenSSL reads and writes a connection's socket through the event loop's socket I/O
 * (gh_io_recv/gh_io_send), so TLS sessions ride the io_uring engine's ring I/O as well.
 */
#ifndef GH_TLS_IO_H
#define GH_TLS_IO_H
#include <stdbool.h>

#include "core/loop.h"

typedef struct ssl_st SSL;

/* Gives ssl a BIO over io on the calling thread's loop (which must own io); false when
 * OpenSSL is out of memory. */
bool gh_tls_io_attach(SSL *ssl, struct gh_io *io);

#endif
