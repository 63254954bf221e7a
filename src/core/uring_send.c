/*
 * uring_send: a ring I/O socket's writes are queued, and the turn's sends leave with the
 * turn's single enter, one send for all a socket wrote; a close asked for meanwhile is linked
 * behind them, and tracked until its own completion; a shutdown follows their completion.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "core/mem.h"
#include "core/sys.h"
#include "core/uring-t.h"

static struct tx *tx_take(struct gh_uring *u)
{
    if (!u->nspare_tx)
        return gh_zalloc(sizeof(struct tx));
    struct tx *t = u->spare_tx[--u->nspare_tx];
    *t = (struct tx){0};
    return t;
}

void uring_tx_free(struct gh_uring *u, struct rio *r)
{
    struct tx *t = r->tx;
    if (!t)
        return;
    r->tx = NULL;
    gh_buf_free(&t->sending);
    gh_buf_free(&t->queued);
    if (GH_KEEP_SPARES && u->nspare_tx < TX_SPARES)
        u->spare_tx[u->nspare_tx++] = t;
    else
        free(t);
}

void uring_tx_spares_free(struct gh_uring *u)
{
    while (u->nspare_tx)
        free(u->spare_tx[--u->nspare_tx]);
}

/* The close after the sends, kept in the tx until its own completion. */
static void queue_tail(struct gh_uring *u, int fd, struct tx *t)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_close(sqe, fd);
    t->gen = uring_gen(u);
    io_uring_sqe_set_data64(sqe, user_data(K_TAIL, t->gen, fd));
    t->tail_inflight = true;
    u->sends_inflight++;
}

/* Sends what is queued (one send for everything written since the last), with a close that
 * waits for it linked behind. MSG_WAITALL: a send completes whole or failed, and only a whole
 * one lets the linked close run. A kernel with provided-buffer rings (5.19) has MSG_WAITALL for
 * sends (5.18). A shutdown waits for the sends' completion and is a system call: the ring
 * would run it on one of its worker threads (it cannot be done without blocking there), a
 * thread woken per session; shutdown(2) of a TCP socket only queues the FIN. Once nothing is
 * left, the tx is freed. */
static void start_send(struct gh_uring *u, int fd, struct rio *r)
{
    struct tx *t = r->tx;
    if (!t || t->send_inflight || t->tail_inflight || t->dirty)
        return;
    if (r->err) {
        gh_buf_clear(&t->sending);
        gh_buf_clear(&t->queued);
    }
    if (!gh_buf_len(&t->sending)) {
        struct gh_buf b = t->sending;
        t->sending = t->queued;
        t->queued = b;
    }
    if (!gh_buf_len(&t->sending)) {
        if (t->shut_pending && !t->close_pending && !r->err)
            shutdown(fd, SHUT_WR);
        t->shut_pending = false;
        if (t->close_pending)
            queue_tail(u, fd, t); /* the tx is freed once it has run */
        else
            uring_tx_free(u, r);
        return;
    }
    if (t->close_pending && io_uring_sq_space_left(&u->ring) < 2)
        io_uring_submit(&u->ring); /* a link must not be split across two submissions */
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_send(sqe, fd, gh_buf_head(&t->sending), gh_buf_len(&t->sending),
                       MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, user_data(K_SEND, 0, fd));
    t->send_inflight = true;
    u->sends_inflight++;
    if (t->close_pending && !gh_buf_len(&t->queued)) {
        sqe->flags |= IOSQE_IO_LINK;
        queue_tail(u, fd, t);
    }
}

/* The socket's sends start at the end of the turn, as one send for all it wrote. */
void uring_mark_dirty(struct gh_uring *u, int fd, struct rio *r)
{
    if (r->tx->dirty)
        return;
    if (u->ndirty == u->capdirty) {
        size_t n = u->capdirty ? 2 * u->capdirty : 256;
        int *d = realloc(u->dirty, n * sizeof *d);
        if (!d) {
            start_send(u, fd, r); /* out of memory: now, unbatched */
            return;
        }
        u->dirty = d;
        u->capdirty = n;
    }
    u->dirty[u->ndirty++] = fd;
    r->tx->dirty = true;
}

void uring_flush_sends(struct gh_uring *u)
{
    for (size_t i = 0; i < u->ndirty; i++) {
        struct watch *w = uring_watch(u, u->dirty[i], false);
        if (!w || !w->r.tx)
            continue;
        w->r.tx->dirty = false;
        start_send(u, u->dirty[i], &w->r);
    }
    u->ndirty = 0;
}

/* Bytes written before the loop ended (goodbyes at stop) go out with their closes before the
 * ring is torn down, as send(2) would have handed them to the kernel; bounded to a second. */
void uring_drain_sends(struct gh_uring *u)
{
    u->draining = true;
    for (int i = 0; i < 100; i++) {
        uring_flush_sends(u);
        if (!u->sends_inflight)
            break;
        struct __kernel_timespec ts = {.tv_nsec = 10 * 1000000};
        struct io_uring_cqe *cqe;
        io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
        unsigned head, n = 0;
        io_uring_for_each_cqe(&u->ring, head, cqe)
        {
            n++;
            if (ud_kind(cqe->user_data) == K_SEND && cqe->user_data != UD_INTERNAL)
                uring_on_send(u, cqe);
            else if (ud_kind(cqe->user_data) == K_TAIL && cqe->user_data != UD_INTERNAL)
                uring_on_tail(u, cqe);
        }
        io_uring_cq_advance(&u->ring, n);
    }
    io_uring_submit(&u->ring); /* the closes queued behind the last sends */
}

/* A close in the ring has already run when a new socket gets its number (the kernel freed
 * the number): what is left of the old socket's sends belongs to nobody. */
void uring_drop_closed_tx(struct gh_uring *u, struct rio *r)
{
    if (r->tx && r->tx->tail_inflight) {
        u->sends_inflight--;
        uring_tx_free(u, r); /* its completion, when it comes, finds another generation or none */
    }
}

ssize_t gh_uring_send(struct gh_uring *u, struct gh_io *io, const void *buf, size_t len)
{
    struct rio *r = uring_rio(u, io);
    if (!r || !rio_writes(r))
        return gh_sys_send(io->fd, buf, len, MSG_NOSIGNAL);
    if (r->err) {
        errno = r->err;
        return -1;
    }
    if (!r->on) {
        errno = EAGAIN; /* handing the socket back: what the ring holds goes first */
        return -1;
    }
    if (!r->tx && !(r->tx = tx_take(u))) {
        errno = ENOMEM;
        return -1;
    }
    struct tx *t = r->tx;
    size_t busy = gh_buf_len(&t->sending) + gh_buf_len(&t->queued);
    if (busy >= TX_CAP) {
        errno = EAGAIN; /* EPOLLOUT comes once the ring has sent half of it */
        return -1;
    }
    size_t n = len < TX_CAP - busy ? len : TX_CAP - busy;
    bool ok = gh_buf_append(&t->queued, buf, n);
    r->talked = true;
    uring_mark_dirty(u, io->fd, r); /* also frees a tx left empty */
    if (!ok) {
        errno = ENOMEM;
        return -1;
    }
    return (ssize_t)n;
}

void gh_uring_shutdown_write(struct gh_uring *u, struct gh_io *io)
{
    struct rio *r = uring_rio(u, io);
    if (!r || !r->tx) { /* nothing on its way: at once */
        shutdown(io->fd, SHUT_WR);
        return;
    }
    r->tx->shut_pending = true;
    uring_mark_dirty(u, io->fd, r);
}

void uring_on_send(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = uring_watch(u, fd, false);
    struct rio *r = w ? &w->r : NULL;
    struct tx *t = r ? r->tx : NULL;
    if (!t || !t->send_inflight)
        return;
    t->send_inflight = false;
    u->sends_inflight--;
    if (cqe->res < 0 && cqe->res != -EINTR && cqe->res != -EAGAIN)
        r->err = (uint16_t)-cqe->res;
    else if (cqe->res > 0)
        gh_buf_consume(&t->sending, (size_t)cqe->res);
    start_send(u, fd, r);
    if (r->tx) {
        gh_buf_release_if_empty(&r->tx->sending);
        gh_buf_release_if_empty(&r->tx->queued);
    }
    if (w->io && (w->events & EPOLLOUT || r->err))
        uring_report(u, fd, w);
}

/* A close or shutdown ended: run (or failed: nothing more to try), or cancelled because the
 * send it was linked behind fell short, in which case it is asked for again after the rest. */
void uring_on_tail(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = uring_watch(u, fd, false);
    struct rio *r = w ? &w->r : NULL;
    struct tx *t = r ? r->tx : NULL;
    if (!t || !t->tail_inflight || t->gen != ud_gen(cqe->user_data))
        return;
    t->tail_inflight = false;
    u->sends_inflight--;
    if (cqe->res != -ECANCELED)
        t->close_pending = false;
    start_send(u, fd, r); /* a close asked for meanwhile goes now; else the tx is freed */
    if (w->io)
        uring_arm_if_wanted(u, fd, w); /* the ring's share of the watch may have changed */
}
