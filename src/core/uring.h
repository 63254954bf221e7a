/*
 * uring: the io_uring back end of the event loop — readiness of watched descriptors reported
 * through the ring, so a loop turn costs one io_uring_enter however many sockets change.
 */
#ifndef GH_URING_H
#define GH_URING_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/err.h"
#include "core/loop.h"

struct gh_uring;

/* True when this kernel offers everything the back end needs; otherwise err says why. */
bool gh_uring_probe(gh_err *err);

/* A ring that also reads wake_fd (an eventfd) whenever it is written. */
struct gh_uring *gh_uring_new(int wake_fd, gh_err *err);
void gh_uring_free(struct gh_uring *u);

/* The same contract as gh_io_add/mod/del: events are EPOLL* bits, EPOLLET included. */
bool gh_uring_add(struct gh_uring *u, struct gh_io *io, uint32_t events, gh_err *err);
bool gh_uring_mod(struct gh_uring *u, struct gh_io *io, uint32_t events);
void gh_uring_del(struct gh_uring *u, struct gh_io *io);
/* gh_uring_del, then the close itself, both done by the ring with the turn's wait. */
void gh_uring_close(struct gh_uring *u, struct gh_io *io);

/* Ring I/O (see core/loop.h, gh_io_ring): false when this ring cannot do it. */
bool gh_uring_ring(struct gh_uring *u, struct gh_io *io, bool on);
bool gh_uring_ring_idle(struct gh_uring *u, const struct gh_io *io);
/* Ring accepts (see core/loop.h, gh_io_ring_accept). */
bool gh_uring_ring_accept(struct gh_uring *u, struct gh_io *io, bool on);
int gh_uring_accept(struct gh_uring *u, struct gh_io *io, struct sockaddr *addr, socklen_t *len);
/* gh_uring_add, and a connect of io to sa through the ring (see core/loop.h, gh_io_connect);
 * false, with nothing done, when the ring will not take it (the caller then connects). */
bool gh_uring_connect(struct gh_uring *u, struct gh_io *io, uint32_t events,
                      const struct sockaddr *sa, socklen_t len);
/* The outcome of that connect (an errno, 0, or EINPROGRESS), or -1 when it was not one. */
int gh_uring_connect_error(struct gh_uring *u, const struct gh_io *io);
ssize_t gh_uring_recv(struct gh_uring *u, struct gh_io *io, void *buf, size_t len);
ssize_t gh_uring_send(struct gh_uring *u, struct gh_io *io, const void *buf, size_t len);
void gh_uring_shutdown_write(struct gh_uring *u, struct gh_io *io);

/* Provided receive buffers the ring holds now (0 when the kernel took none): they grow after
 * a turn whose receives found too few. */
unsigned gh_uring_rx_buffers(const struct gh_uring *u);

/* Submits what the last turn queued and waits for at least one completion, or until
 * deadline_ms (CLOCK_MONOTONIC milliseconds; UINT64_MAX: none) has passed, perhaps less
 * (then the caller waits again); returns 0 or a negative errno. */
int gh_uring_wait(struct gh_uring *u, uint64_t deadline_ms);
/* Calls the handler of every descriptor reported ready since the last call. */
void gh_uring_dispatch(struct gh_uring *u);

#endif
