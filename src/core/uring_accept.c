/*
 * uring_accept: how sockets begin on the ring. A listening socket switched to ring accepts
 * (gh_uring_ring_accept) has an accept in the ring instead of a poll: EPOLLIN means a
 * connection is taken, and gh_uring_accept hands it over with its peer's address. One accept
 * at a time, each with its own address (a multishot accept shares one address buffer among
 * all its connections, which would cost a getpeername each).
 *
 * An outgoing TCP connection (gh_uring_connect) is made by the ring too: its outcome comes
 * with the completion, so neither the connect(2) nor the getsockopt(SO_ERROR) after it is a
 * system call of its own.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/uring-t.h"

void uring_queue_accept(struct gh_uring *u, int fd, struct acc *a)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    a->addrlen = sizeof a->addr;
    io_uring_prep_accept(sqe, fd, (struct sockaddr *)&a->addr, &a->addrlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
    a->gen = uring_gen(u);
    io_uring_sqe_set_data64(sqe, user_data(K_ACCEPT, a->gen, fd));
    a->inflight = true;
}

void uring_cancel_accept(struct gh_uring *u, int fd, struct acc *a)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_cancel64(sqe, user_data(K_ACCEPT, a->gen, fd), 0);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
}

/* For a new owner of the number, a close, or the end: an accept still in the ring is
 * cancelled (a connection it takes all the same is stale, and closed when it arrives), and
 * one taken but not handed over is closed. */
void uring_acc_free(struct gh_uring *u, int fd, struct watch *w)
{
    struct acc *a = uring_acc(u, fd, w);
    w->accepts = false;
    if (!a)
        return;
    for (struct acc **pp = &u->accs; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    if (a->inflight)
        uring_cancel_accept(u, fd, a);
    if (a->conn >= 0)
        close(a->conn);
    free(a);
}

bool gh_uring_ring_accept(struct gh_uring *u, struct gh_io *io, bool on)
{
    struct watch *w = uring_watch(u, io->fd, false);
    if (!w || w->io != io)
        return false;
    struct acc *a = uring_acc(u, io->fd, w);
    if (!a && !on)
        return true;
    if (!a) {
        if (!(a = calloc(1, sizeof *a)))
            return false;
        a->fd = io->fd;
        a->conn = -1;
        a->next = u->accs;
        u->accs = a;
        w->accepts = true;
    }
    if (a->on == on)
        return true;
    a->on = on;
    /* Off: a connection the accept in the ring takes all the same is handed over too; the
     * owner learns that it has ended from an EPOLLIN, and from gh_uring_ring_idle. */
    if (!on && a->inflight)
        uring_cancel_accept(u, io->fd, a);
    uring_arm_if_wanted(u, io->fd, w);
    return true;
}

int gh_uring_accept(struct gh_uring *u, struct gh_io *io, struct sockaddr *addr, socklen_t *len)
{
    struct watch *w = uring_watch(u, io->fd, false);
    struct acc *a = w && w->io == io ? uring_acc(u, io->fd, w) : NULL;
    if (a && a->conn >= 0) {
        int conn = a->conn;
        a->conn = -1;
        memcpy(addr, &a->addr, a->addrlen < *len ? a->addrlen : *len);
        *len = a->addrlen;
        return conn;
    }
    if (a && a->err) {
        errno = a->err;
        a->err = 0;
        return -1;
    }
    if (a && (a->on || a->inflight)) {
        errno = EAGAIN; /* reported by the accept's completion */
        return -1;
    }
    return accept4(io->fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void uring_on_accept(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = uring_watch(u, fd, false);
    struct acc *a = w ? uring_acc(u, fd, w) : NULL;
    if (!a || !a->inflight || a->gen != ud_gen(cqe->user_data) || !w->io || u->draining) {
        if (cqe->res >= 0)
            close(cqe->res); /* taken for an owner gone since: nobody will serve it */
        return;
    }
    a->inflight = false;
    if (cqe->res >= 0)
        a->conn = cqe->res;
    else if (cqe->res != -ECANCELED && cqe->res != -EINTR && cqe->res != -EAGAIN &&
             cqe->res != -ECONNABORTED)
        a->err = -cqe->res; /* out of descriptors, or the socket shut down */
    struct gh_io *io = w->io;
    if (!a->on && a->conn < 0 && !a->err && (w->events & EPOLLIN)) {
        io->fn(io, EPOLLIN); /* switched off and now ended: the owner may be waiting for it */
        w = uring_watch(u, fd, false);
        if (w && w->io == io)
            uring_arm_if_wanted(u, fd, w);
        return;
    }
    uring_report(u, fd, w);
}

/* ---- connects ---- */

bool gh_uring_connect(struct gh_uring *u, struct gh_io *io, uint32_t events,
                      const struct sockaddr *sa, socklen_t len)
{
    bool ip = sa->sa_family == AF_INET || sa->sa_family == AF_INET6;
    if (!ip || len > sizeof u->connect_addrs[0] || u->nconnect_addrs == CONNECT_ADDRS)
        return false; /* a local socket connects at once: connect(2) is as good */
    struct watch *w = uring_take_watch(u, io, events);
    if (!w)
        return false;
    struct sockaddr_in6 *kept = &u->connect_addrs[u->nconnect_addrs++];
    memcpy(kept, sa, len);
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_connect(sqe, io->fd, (const struct sockaddr *)kept, len);
    io_uring_sqe_set_data64(sqe, user_data(K_CONNECT, w->r.gen, io->fd));
    w->connect = CONNECT_INFLIGHT;
    return true;
}

int gh_uring_connect_error(struct gh_uring *u, const struct gh_io *io)
{
    const struct watch *w = uring_watch(u, io->fd, false);
    if (!w || w->io != io || w->connect == CONNECT_NONE)
        return -1;
    return w->connect == CONNECT_INFLIGHT ? EINPROGRESS : w->r.err;
}

/* For a new owner of the number, or none: a connect still in the ring is cancelled (its
 * completion then names an old generation). */
void uring_connect_drop(struct gh_uring *u, int fd, struct watch *w)
{
    if (w->connect == CONNECT_INFLIGHT) {
        struct io_uring_sqe *sqe = uring_sqe(u);
        io_uring_prep_cancel64(sqe, user_data(K_CONNECT, w->r.gen, fd), 0);
        io_uring_sqe_set_data64(sqe, UD_INTERNAL);
    }
    w->connect = CONNECT_NONE;
}

/* The outcome goes to the owner as EPOLLOUT, with EPOLLERR when it failed; a failure stays
 * in the socket's ring state, so its later reads and writes fail the same way. */
void uring_on_connect(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = uring_watch(u, fd, false);
    if (!w || !w->io || w->connect != CONNECT_INFLIGHT || w->r.gen != ud_gen(cqe->user_data) ||
        u->draining)
        return;
    w->connect = CONNECT_DONE;
    if (cqe->res < 0)
        w->r.err = (uint16_t)-cqe->res;
    else
        w->r.talked = true; /* a server greets first, or answers us: its receives poll first */
    struct gh_io *io = w->io;
    io->fn(io, cqe->res < 0 ? EPOLLOUT | EPOLLERR : EPOLLOUT);
    w = uring_watch(u, fd, false);
    if (w && w->io == io)
        uring_arm_if_wanted(u, fd, w);
}
