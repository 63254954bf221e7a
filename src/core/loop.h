/*
 * loop: one event loop per thread (epoll or io_uring), with timers and cross-thread messages.
 * Only the owning thread touches a loop, except gh_loop_post, which any thread may call.
 */
#ifndef GH_LOOP_H
#define GH_LOOP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/err.h"

#define gh_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct gh_loop;
struct gh_io;
struct gh_timer;

typedef void (*gh_io_fn)(struct gh_io *io, uint32_t events);
typedef void (*gh_timer_fn)(struct gh_timer *t);
typedef void (*gh_msg_fn)(struct gh_loop *loop, void *arg);

/* Embedded in its owner; the owner is found back with gh_container_of. */
struct gh_io {
    int fd;
    uint32_t events; /* as last set on epoll, where setting them again is skipped */
    gh_io_fn fn;
};

/* Embedded in its owner. heap_index is 0 when the timer is not armed. Its deadline is
 * the key of its heap entry; a timer pushed later keeps that place and moves once it
 * comes, by later_ms. */
struct gh_timer {
    uint32_t heap_index; /* 1-based */
    uint32_t later_ms;   /* it fires this long after its key */
    gh_timer_fn fn;
};

/* How loops wait for readiness; chosen once at start, before the first gh_loop_new. */
enum gh_loop_backend { GH_BACKEND_AUTO, GH_BACKEND_EPOLL, GH_BACKEND_IO_URING };
bool gh_loop_backend_parse(const char *s, enum gh_loop_backend *out);
const char *gh_loop_backend_name(enum gh_loop_backend b);
/* auto takes io_uring when the kernel offers what it needs, else epoll with one log line
 * saying why; io_uring fails with the reason when it cannot be had. */
bool gh_loop_choose_backend(enum gh_loop_backend want, gh_err *err);
enum gh_loop_backend gh_loop_backend(void);

struct gh_loop *gh_loop_new(gh_err *err);
void gh_loop_free(struct gh_loop *loop);

/* Runs until gh_loop_stop; returns false with err only when the wait itself fails. */
bool gh_loop_run(struct gh_loop *loop, gh_err *err);
void gh_loop_stop(struct gh_loop *loop);

/* A watch added with no events reports nothing, not even an error or hang-up, until
 * gh_io_mod asks for some (on epoll it is only added then). */
bool gh_io_add(struct gh_loop *loop, struct gh_io *io, uint32_t events, gh_err *err);
bool gh_io_mod(struct gh_loop *loop, struct gh_io *io, uint32_t events);
void gh_io_del(struct gh_loop *loop, struct gh_io *io);
/* Closes a watched descriptor. close() alone takes it out of epoll only when no other
 * descriptor shares its file; while gh_loop_fds_shared(true) is in force (a child process
 * holds a copy of the descriptor table between fork and exec) it is taken out first. */
void gh_io_close(struct gh_loop *loop, struct gh_io *io);
void gh_loop_fds_shared(bool shared);

/*
 * Socket I/O through the loop, with recv(2)/send(2)'s returns (-1 and EAGAIN when nothing is
 * ready). On epoll they are those system calls. On io_uring, a watch switched to ring I/O has
 * its reads done by the ring ahead of its handler (EPOLLIN then means the bytes are here) and
 * its writes sent with the turn's one io_uring_enter; a close (gh_io_close) or
 * gh_io_shutdown_write waits for the writes before it. Everything written is accepted up to
 * a bound, past which the send says EAGAIN and EPOLLOUT follows.
 */
ssize_t gh_io_recv(struct gh_loop *loop, struct gh_io *io, void *buf, size_t len);
ssize_t gh_io_send(struct gh_loop *loop, struct gh_io *io, const void *buf, size_t len);
void gh_io_shutdown_write(struct gh_loop *loop, struct gh_io *io);
/* Ring I/O on or off for a watched socket; false where the loop cannot do it (epoll). Off
 * lets the ring finish what it holds: system calls of the owner's own on the descriptor
 * (peeks, splice) are safe once gh_io_ring_idle says so; gh_io_recv/send are always safe. */
bool gh_io_ring(struct gh_loop *loop, struct gh_io *io, bool on);
bool gh_io_ring_idle(struct gh_loop *loop, const struct gh_io *io);
/* Receive buffers the ring provides now (0 on epoll): they grow after a turn that lacked some. */
unsigned gh_loop_ring_buffers(const struct gh_loop *loop);
/*
 * Accepts through the loop, with accept4(2)'s return (non-blocking, close-on-exec). On
 * io_uring, a listening socket switched to ring accepts has the ring take its connections
 * (EPOLLIN then means one is taken, peer address included) at no system call of its own.
 * Switched off, an accept still in the ring may yet take one: it is handed over too, the end
 * is reported with an EPOLLIN, and gh_io_ring_idle says when nothing is left. gh_io_del and
 * gh_io_close drop what the ring takes: an owner that must lose no connection switches ring
 * accepts off and waits for gh_io_ring_idle first.
 */
bool gh_io_ring_accept(struct gh_loop *loop, struct gh_io *io, bool on);
int gh_io_accept(struct gh_loop *loop, struct gh_io *io, struct sockaddr *addr, socklen_t *len);

/*
 * Watches io's socket (non-blocking, not yet connected) for events, as gh_io_add, and
 * connects it to sa: false, with errno, when that fails at once. The outcome is reported as
 * EPOLLOUT, with EPOLLERR when it failed, and read with gh_io_connect_error. On io_uring a TCP
 * connect goes through the ring (the address is copied), at no system call of its own.
 */
bool gh_io_connect(struct gh_loop *loop, struct gh_io *io, uint32_t events,
                   const struct sockaddr *sa, socklen_t len);
/* After that report (its events): 0 when connected, else the errno the connect failed with. */
int gh_io_connect_error(struct gh_loop *loop, struct gh_io *io, uint32_t events);

/* Monotonic milliseconds, cached once per loop turn. */
uint64_t gh_loop_now(const struct gh_loop *loop);

/* Arms (or re-arms) t to fire after ms milliseconds. */
void gh_timer_set(struct gh_loop *loop, struct gh_timer *t, uint64_t ms);
void gh_timer_cancel(struct gh_loop *loop, struct gh_timer *t);
static inline bool gh_timer_armed(const struct gh_timer *t)
{
    return t->heap_index != 0;
}

/* Embedded in its owner: work run once the current batch of events is handled, so an
 * object closed by one event is not freed while a later event of the batch names it. */
struct gh_deferred {
    struct gh_deferred *next;
    void (*fn)(struct gh_deferred *d);
};
void gh_loop_defer(struct gh_loop *loop, struct gh_deferred *d);

/* Thread-safe: runs fn(loop, arg) on the loop's own thread, in posting order. */
bool gh_loop_post(struct gh_loop *loop, gh_msg_fn fn, void *arg);

/* The loop running on the calling thread, or NULL. */
struct gh_loop *gh_loop_current(void);

#endif
