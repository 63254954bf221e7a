/*
 * uring: epoll's readiness contract served by io_uring. Each watched descriptor has one poll
 * request in the ring; adding, changing and removing it only queues entries, and the loop
 * submits them all with its wait in a single io_uring_enter. So a session costs its reads,
 * writes, accept and close, plus one enter per loop turn shared by every socket of the turn,
 * where epoll adds an epoll_ctl per change and an epoll_wait per turn.
 *
 * Level-triggered watches (no EPOLLET) are one-shot polls re-armed after their handler runs,
 * which reports readiness again while it lasts, as epoll does. EPOLLET watches are multishot
 * polls. Every request carries the descriptor and a generation in its user data: a completion
 * from a poll that was removed or replaced (the descriptor closed, or its mask changed) names
 * an old generation and is dropped, so a handler never sees an event meant for an object
 * already freed, nor one meant for an earlier file under the same number.
 *
 * A socket switched to ring I/O (gh_uring_ring) has no poll for its data: the ring receives
 * for it, into a buffer of the ring's provided-buffer group picked only when bytes arrive (an
 * idle connection holds none), and reports EPOLLIN once they are there; gh_uring_recv then
 * hands them over with no system call. Its writes are queued, and the turn's sends leave with
 * the turn's single enter; a close asked for meanwhile is linked behind them. So a
 * request-reply exchange costs no system call of its own.
 *
 * Accepts through the ring are in core/uring_accept.c; sends, and the close or shutdown
 * after them, in core/uring_send.c.
 *
 * Closing a watched descriptor is queued too, behind the removal of its poll (which holds the
 * file open until then): the number stays taken until the turn's enter, which only this
 * thread could notice. A removal that meets its poll while the kernel is delivering it
 * (EALREADY) is sent again until it lands: a multishot poll left behind would hold its file
 * open for ever. The loop's eventfd (cross-thread messages) is read through the ring.
 */
#include "core/uring.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/sys.h"
#include "core/uring-t.h"

#define RING_ENTRIES 4096
#define CQE_BATCH    256

bool gh_uring_probe(gh_err *err)
{
    struct io_uring ring;
    int rc = io_uring_queue_init(8, &ring, 0);
    if (rc < 0)
        return gh_fail_sys(err, -rc, "io_uring_queue_init");
    bool ok = true;
    struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
    static const struct {
        int op;
        const char *name;
    } need[] = {{IORING_OP_POLL_ADD, "POLL_ADD"},
                {IORING_OP_POLL_REMOVE, "POLL_REMOVE"},
                {IORING_OP_READ, "READ"}};
    if (!p)
        ok = gh_fail(err, "io_uring opcode probe not supported");
    for (size_t i = 0; ok && i < sizeof need / sizeof need[0]; i++)
        if (!io_uring_opcode_supported(p, need[i].op))
            ok = gh_fail(err, "io_uring lacks the %s operation", need[i].name);
    /* A timed wait in the same enter (EXT_ARG: the teardown's) and multishot polls (which
     * arrived with the 5.13 kernels, before CQE_SKIP in 5.17): without them each turn would
     * cost more. Such a kernel also moves a timeout request (TIMEOUT_UPDATE, from 5.11),
     * which keeps the loop's deadline. */
    if (ok && !(ring.features & IORING_FEAT_EXT_ARG))
        ok = gh_fail(err, "io_uring lacks timed waits (IORING_FEAT_EXT_ARG)");
    if (ok && !(ring.features & IORING_FEAT_CQE_SKIP))
        ok = gh_fail(err, "io_uring kernel older than 5.17 (no multishot poll updates)");
    if (ok && !(ring.features & IORING_FEAT_NODROP))
        ok = gh_fail(err, "io_uring may drop completions (no IORING_FEAT_NODROP)");
    if (p)
        io_uring_free_probe(p);
    io_uring_queue_exit(&ring);
    return ok;
}

/* A free submission entry, submitting the queue first when it is full. */
struct io_uring_sqe *uring_sqe(struct gh_uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    while (!sqe) {
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static void arm_wake(struct gh_uring *u)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_read(sqe, u->wake_fd, &u->wake_count, sizeof u->wake_count, 0);
    io_uring_sqe_set_data64(sqe, UD_WAKE);
}

/* ---- provided receive buffers ---- */

static char *rx_addr(const struct gh_uring *u, unsigned bid)
{
    return u->rx_chunks[bid / RX_CHUNK] + (size_t)(bid % RX_CHUNK) * RX_BUF_SIZE;
}

static void rx_recycle(struct gh_uring *u, int bid)
{
    io_uring_buf_ring_add(u->rx_ring, rx_addr(u, (unsigned)bid), RX_BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(RX_MAX), 0);
    io_uring_buf_ring_advance(u->rx_ring, 1);
}

/* One more chunk of buffers for the kernel to pick from; false at the limit or out of memory. */
static bool rx_add_chunk(struct gh_uring *u)
{
    char *chunk = u->rx_bufs < RX_MAX ? malloc((size_t)RX_CHUNK * RX_BUF_SIZE) : NULL;
    if (!chunk)
        return false;
    u->rx_chunks[u->rx_bufs / RX_CHUNK] = chunk;
    for (unsigned i = 0; i < RX_CHUNK; i++)
        io_uring_buf_ring_add(u->rx_ring, chunk + (size_t)i * RX_BUF_SIZE, RX_BUF_SIZE,
                              (unsigned short)(u->rx_bufs + i), io_uring_buf_ring_mask(RX_MAX),
                              (int)i);
    io_uring_buf_ring_advance(u->rx_ring, RX_CHUNK);
    u->rx_bufs += RX_CHUNK;
    return true;
}

/* Every receive in the ring that completes in one turn holds a buffer until its owner reads
 * it, later in the turn; a receive that finds none fails (ENOBUFS) and its bytes cost a
 * system call. The pool starts at one chunk, and after a turn that came up short it grows
 * by what was missing, up to RX_MAX: 1,024 busy clients found 256 short about once per
 * session (docs/BENCHMARKS.md), while an idle or quiet worker keeps 1 MiB. */
static void rx_grow(struct gh_uring *u)
{
    unsigned want = u->rx_short, before = u->rx_bufs;
    u->rx_short = 0;
    for (unsigned got = 0; got < want && rx_add_chunk(u); got += RX_CHUNK)
        ;
    if (u->rx_bufs != before)
        gh_log(NULL, NULL, "engine", "io_uring: %u receive buffers (%u KiB) after %u found none",
               u->rx_bufs, u->rx_bufs * (RX_BUF_SIZE / 1024), want);
}

/* Ring I/O is an optimisation: a kernel that refuses provided buffers (before 5.19) keeps
 * every socket on polls and system calls. */
static void rx_setup(struct gh_uring *u)
{
    size_t ring_bytes = RX_MAX * sizeof(struct io_uring_buf);
    void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring == MAP_FAILED)
        return;
    u->rx_ring = ring;
    io_uring_buf_ring_init(u->rx_ring);
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)ring, .ring_entries = RX_MAX, .bgid = RX_GROUP};
    if (io_uring_register_buf_ring(&u->ring, &reg, 0) < 0) {
        munmap(ring, ring_bytes);
        u->rx_ring = NULL;
        return;
    }
    if (!rx_add_chunk(u)) {
        io_uring_unregister_buf_ring(&u->ring, RX_GROUP);
        munmap(ring, ring_bytes);
        u->rx_ring = NULL;
    }
}

unsigned gh_uring_rx_buffers(const struct gh_uring *u)
{
    return u->rx_bufs;
}

struct gh_uring *gh_uring_new(int wake_fd, gh_err *err)
{
    struct gh_uring *u = calloc(1, sizeof *u);
    if (!u) {
        gh_fail(err, "out of memory");
        return NULL;
    }
    /* COOP_TASKRUN: the kernel finishes requests when the thread next enters, which it does
     * every turn, instead of interrupting it to do so (about a sixth less CPU per session
     * here). A kernel older than 5.19 refuses the flag: then without it. */
    struct io_uring_params params = {.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN,
                                     .cq_entries = 4 * RING_ENTRIES};
    int rc = io_uring_queue_init_params(RING_ENTRIES, &u->ring, &params);
    if (rc == -EINVAL) {
        params =
            (struct io_uring_params){.flags = IORING_SETUP_CQSIZE, .cq_entries = 4 * RING_ENTRIES};
        rc = io_uring_queue_init_params(RING_ENTRIES, &u->ring, &params);
    }
    if (rc < 0) {
        gh_fail_sys(err, -rc, "io_uring_queue_init");
        free(u);
        return NULL;
    }
    /* The ring's own descriptor is not registered (io_uring_register_ring_fd): that is the
     * registering thread's alone, and rings are made before their workers start (so
     * registered, the daemon's loops stopped answering); liburing 2.3's timed wait, the
     * teardown's, also fails with it (EINVAL). */
    rx_setup(u);
    u->wake_fd = wake_fd;
    u->next_gen = 1;
    arm_wake(u);
    return u;
}

/* Waits for the final cancel; connections that accepts took meanwhile are closed, since
 * nobody is left to serve them. Bounded: a second at most. */
static void reap_until_last(struct gh_uring *u)
{
    bool last = false;
    for (int i = 0; i < 100 && !last; i++) {
        struct __kernel_timespec ts = {.tv_nsec = 10 * 1000000};
        struct io_uring_cqe *cqe;
        io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
        unsigned head, n = 0;
        io_uring_for_each_cqe(&u->ring, head, cqe)
        {
            n++;
            if (cqe->user_data == UD_LAST)
                last = true;
            else if (ud_kind(cqe->user_data) == K_ACCEPT && cqe->user_data != UD_INTERNAL &&
                     cqe->user_data != UD_WAKE && cqe->res >= 0)
                close(cqe->res);
        }
        io_uring_cq_advance(&u->ring, n);
    }
}

void gh_uring_free(struct gh_uring *u)
{
    if (!u)
        return;
    uring_drain_sends(u);
    /* The ring's own teardown is asynchronous, and its polls hold their sockets open until
     * it runs: a listening socket would linger (and take connections it will never accept)
     * after the loop is gone. Cancel everything first, and wait for it. */
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, UD_LAST);
    reap_until_last(u);
    io_uring_queue_exit(&u->ring);
    for (size_t i = 0; i < u->nwatches; i++)
        uring_tx_free(u, &u->watches[i].r);
    uring_tx_spares_free(u);
    while (u->accs) {
        struct acc *a = u->accs;
        u->accs = a->next;
        if (a->conn >= 0)
            close(a->conn);
        free(a);
    }
    if (u->watches)
        munmap(u->watches, u->nwatches * sizeof *u->watches);
    if (u->rx_ring)
        munmap(u->rx_ring, RX_MAX * sizeof(struct io_uring_buf));
    for (unsigned i = 0; i < u->rx_bufs / RX_CHUNK; i++)
        free(u->rx_chunks[i]);
    free(u->dirty);
    free(u->adding);
    free(u);
}

/* The slots are mapped rather than allocated: growing moves pages instead of copying them
 * and never clears them (the kernel's come zeroed), so the table doubles ahead of the
 * highest descriptor without making the half not yet used resident. */
struct watch *uring_watch(struct gh_uring *u, int fd, bool grow)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= u->nwatches) {
        if (!grow)
            return NULL;
        size_t n = u->nwatches ? u->nwatches : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        void *w = u->watches ? mremap(u->watches, u->nwatches * sizeof *u->watches,
                                      n * sizeof *u->watches, MREMAP_MAYMOVE)
                             : mmap(NULL, n * sizeof *u->watches, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (w == MAP_FAILED)
            return NULL;
        u->watches = w;
        u->nwatches = n;
    }
    return &u->watches[fd];
}

static bool wants_readiness(uint32_t events)
{
    return events & (EPOLLIN | EPOLLOUT | EPOLLPRI);
}

uint32_t uring_gen(struct gh_uring *u)
{
    uint32_t gen = u->next_gen;
    u->next_gen = (u->next_gen + 1) & GEN_MASK;
    if (!u->next_gen)
        u->next_gen = 1;
    return gen;
}

/* ---- ring I/O state ---- */

struct acc *uring_acc(const struct gh_uring *u, int fd, const struct watch *w)
{
    if (!w->accepts)
        return NULL;
    for (struct acc *a = u->accs; a; a = a->next)
        if (a->fd == fd)
            return a;
    return NULL;
}

/* What the ring itself can report to the owner now, without the kernel's poll. */
static uint32_t rio_ready(const struct gh_uring *u, int fd, const struct watch *w)
{
    const struct acc *a = uring_acc(u, fd, w);
    const struct rio *r = &w->r;
    uint32_t ready = 0;
    if (r->buf1 || r->direct)
        ready |= EPOLLIN;
    if (r->eof)
        ready |= EPOLLIN | EPOLLRDHUP;
    if (r->err)
        ready |= EPOLLERR;
    if (r->on && !r->err && rio_room(r))
        ready |= EPOLLOUT;
    if (a && (a->conn >= 0 || a->err))
        ready |= EPOLLIN;
    return ready & (w->events | EPOLLERR | EPOLLHUP);
}

/* What is left to the kernel's poll: the directions the ring does not carry. */
static uint32_t poll_mask(const struct gh_uring *u, int fd, const struct watch *w)
{
    const struct acc *a = uring_acc(u, fd, w);
    uint32_t m = w->events;
    if (w->connect == CONNECT_INFLIGHT)
        return 0; /* an unconnected socket polls as ready (hung up) */
    if (rio_reads(&w->r))
        m &= ~(uint32_t)(EPOLLIN | EPOLLRDHUP | EPOLLPRI);
    if (rio_writes(&w->r))
        m &= ~(uint32_t)EPOLLOUT;
    if (a && (a->on || a->inflight || a->conn >= 0 || a->err))
        m &= ~(uint32_t)EPOLLIN;
    return m;
}

/* For a new owner, or none: what was received is dropped; sends still going out (a close
 * waiting for them) carry on. */
static void rio_reset(struct gh_uring *u, struct rio *r)
{
    if (r->buf1)
        rx_recycle(u, r->buf1 - 1);
    *r = (struct rio){.tx = r->tx, .gen = uring_gen(u)}; /* what is in the ring is stale now */
}

static void cancel_recv(struct gh_uring *u, int fd, struct rio *r)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_cancel64(sqe, user_data(K_RECV, r->gen, fd), 0);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
}

/* A receive is queued once the last one left the socket empty. When bytes have passed
 * either way, or we connected (the server greets first), what the peer says next answers
 * ours, and trying to read it at once only finds the socket empty: the receive waits for
 * the poll first (14 of 15 receives of a handed-off session). A client's first receive is
 * tried at once (a TLS client hello is usually waiting). The flag needs 5.19, as the
 * provided-buffer ring without which nothing is received here. */
static void queue_recv(struct gh_uring *u, int fd, struct rio *r)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_recv(sqe, fd, NULL, RX_BUF_SIZE, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RX_GROUP;
    if (r->talked)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, user_data(K_RECV, r->gen, fd));
    r->recv_inflight = true;
    r->more = false;
}

/* A no-op through the ring: its completion reports what is already here, from the loop
 * rather than from inside the handler that made it so. */
static void kick(struct gh_uring *u, int fd, struct rio *r)
{
    if (r->kick_pending)
        return;
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, user_data(K_KICK, r->gen, fd));
    r->kick_pending = true;
}

static void rio_arm(struct gh_uring *u, int fd, struct watch *w)
{
    struct rio *r = &w->r;
    struct acc *a = uring_acc(u, fd, w);
    if (rio_ready(u, fd, w))
        kick(u, fd, r);
    else if (r->on && (w->events & EPOLLIN) && !r->recv_inflight && !rio_has_input(r))
        queue_recv(u, fd, r);
    else if (a && a->on && (w->events & EPOLLIN) && !a->inflight && a->conn < 0 && !a->err)
        uring_queue_accept(u, fd, a);
}

/* ---- polls ---- */

/* Queues a poll for mask under a new generation. */
static void arm(struct gh_uring *u, int fd, struct watch *w, uint32_t mask, bool multishot)
{
    w->gen = uring_gen(u);
    w->pmask = mask;
    struct io_uring_sqe *sqe = uring_sqe(u);
    mask &= ~(uint32_t)(EPOLLET | EPOLLONESHOT);
    if (multishot)
        io_uring_prep_poll_multishot(sqe, fd, mask & ~EPOLLEXCLUSIVE);
    else
        io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, user_data(K_POLL, w->gen, fd));
    w->armed = true;
}

static void remove_poll(struct gh_uring *u, uint64_t poll_data)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_poll_remove(sqe, poll_data);
    io_uring_sqe_set_data64(sqe, user_data(K_REMOVE, ud_gen(poll_data), ud_fd(poll_data)));
}

static void disarm(struct gh_uring *u, int fd, struct watch *w)
{
    if (!w->armed)
        return;
    remove_poll(u, user_data(K_POLL, w->gen, fd));
    w->armed = false;
    w->gen = 0; /* what the removed poll still delivers is stale from now on */
}

/* A poll that completes at once with nothing asked for (the peer's half-close, which the ring
 * always reports, on a watch for room to write) would complete at once for ever: poll again
 * after a short pause instead. (A multishot poll there missed the later room to write.) */
static void rearm_later(struct gh_uring *u, int fd, struct watch *w)
{
    static const struct __kernel_timespec pause = {.tv_nsec = 5 * 1000000};
    w->gen = uring_gen(u);
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&pause, 0, 0);
    io_uring_sqe_set_data64(sqe, user_data(K_REARM, w->gen, fd));
}

/* Puts in the ring what the watch needs: a receive or a report for what ring I/O carries, a
 * poll for the rest. */
void uring_arm_if_wanted(struct gh_uring *u, int fd, struct watch *w)
{
    rio_arm(u, fd, w);
    uint32_t mask = poll_mask(u, fd, w);
    if (w->armed && w->pmask != mask)
        disarm(u, fd, w); /* the watch or the ring's share of it changed */
    if (!w->armed && wants_readiness(mask))
        arm(u, fd, w, mask, w->events & EPOLLET);
}

static void on_rearm(struct gh_uring *u, uint64_t data)
{
    struct watch *w = uring_watch(u, ud_fd(data), false);
    if (w && w->io && !w->armed && w->gen == ud_gen(data))
        uring_arm_if_wanted(u, ud_fd(data), w);
}

/* The watch of io's number, made io's, with nothing in the ring yet; NULL when out of memory. */
struct watch *uring_take_watch(struct gh_uring *u, struct gh_io *io, uint32_t events)
{
    struct watch *w = uring_watch(u, io->fd, true);
    if (!w)
        return NULL;
    /* A watch left on this number belongs to a file closed without gh_io_close: release
     * that file's poll (epoll forgets a closed file by itself). */
    disarm(u, io->fd, w);
    uring_drop_closed_tx(u, &w->r);
    uring_connect_drop(u, io->fd, w);
    rio_reset(u, &w->r);
    uring_acc_free(u, io->fd, w);
    w->io = io;
    w->events = events;
    w->pmask = w->gen = 0;
    return w;
}

/* A new watch's poll waits for the turn's end: a connection switched to ring I/O in the
 * turn it is accepted (the usual case) then never has a poll to add and remove again. */
static void arm_at_turn_end(struct gh_uring *u, int fd, struct watch *w)
{
    if (w->arm_pending)
        return;
    if (u->nadding == u->capadding) {
        size_t n = u->capadding ? 2 * u->capadding : 256;
        int *a = realloc(u->adding, n * sizeof *a);
        if (!a) {
            uring_arm_if_wanted(u, fd, w); /* out of memory: now */
            return;
        }
        u->adding = a;
        u->capadding = n;
    }
    u->adding[u->nadding++] = fd;
    w->arm_pending = true;
}

static void arm_added(struct gh_uring *u)
{
    for (size_t i = 0; i < u->nadding; i++) {
        struct watch *w = uring_watch(u, u->adding[i], false);
        if (w && w->arm_pending) {
            w->arm_pending = false;
            if (w->io)
                uring_arm_if_wanted(u, u->adding[i], w);
        }
    }
    u->nadding = 0;
}

bool gh_uring_add(struct gh_uring *u, struct gh_io *io, uint32_t events, gh_err *err)
{
    struct watch *w = uring_take_watch(u, io, events);
    if (!w)
        return gh_fail(err, "out of memory watching fd %d", io->fd);
    arm_at_turn_end(u, io->fd, w);
    return true;
}

bool gh_uring_mod(struct gh_uring *u, struct gh_io *io, uint32_t events)
{
    struct watch *w = uring_watch(u, io->fd, false);
    if (!w || w->io != io)
        return false;
    w->events = events;
    uring_arm_if_wanted(u, io->fd, w);
    return true;
}

void gh_uring_del(struct gh_uring *u, struct gh_io *io)
{
    struct watch *w = uring_watch(u, io->fd, false);
    if (!w || w->io != io)
        return;
    bool was_armed = w->armed;
    disarm(u, io->fd, w);
    w->io = NULL;
    if (w->r.recv_inflight)
        cancel_recv(u, io->fd, &w->r);
    uring_connect_drop(u, io->fd, w);
    rio_reset(u, &w->r); /* what was received is the departed owner's */
    struct acc *a = uring_acc(u, io->fd, w);
    if (a && a->inflight) { /* what it takes from now on finds no owner */
        uring_cancel_accept(u, io->fd, a);
        a->on = false;
    }
    /* An exclusive watch (a listening socket shared by workers or processes) wakes only one
     * waiter per connection: left in the ring until the turn ends, it could take a wake-up
     * it will never act on, and the connection would wait for the next one. Removed now,
     * as epoll_ctl would (listening sockets are rarely dropped, so this costs nothing). */
    if (was_armed && (w->events & EPOLLEXCLUSIVE))
        io_uring_submit(&u->ring);
}

static void queue_close(struct gh_uring *u, int fd)
{
    struct io_uring_sqe *sqe = uring_sqe(u);
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
}

void gh_uring_close(struct gh_uring *u, struct gh_io *io)
{
    struct watch *w = uring_watch(u, io->fd, false);
    struct tx *t = w && w->io == io ? w->r.tx : NULL;
    gh_uring_del(u, io);
    if (w)
        uring_acc_free(u, io->fd, w);
    if (t) { /* the client gets every byte written before the close */
        t->close_pending = true;
        uring_mark_dirty(u, io->fd, &w->r);
        return;
    }
    queue_close(u, io->fd);
}

/* ---- ring I/O: the owner's calls ---- */

struct rio *uring_rio(struct gh_uring *u, const struct gh_io *io)
{
    struct watch *w = uring_watch(u, io->fd, false);
    return w && w->io == io ? &w->r : NULL;
}

bool gh_uring_ring(struct gh_uring *u, struct gh_io *io, bool on)
{
    struct watch *w = uring_watch(u, io->fd, false);
    if (!u->rx_ring || !w || w->io != io)
        return false;
    struct rio *r = &w->r;
    if (r->on == on)
        return true;
    r->on = on;
    /* Off: a receive in the ring may already hold bytes that come before anything a system
     * call would read, so reads wait for its end (data or cancelled) before going direct. */
    if (!on && r->recv_inflight)
        cancel_recv(u, io->fd, r);
    /* On: what it carries waits for the turn's end too, by when the owner has usually
     * changed what it asks for (a connected backend stops asking for room to write, which
     * the ring would otherwise report once for nothing). */
    if (on)
        arm_at_turn_end(u, io->fd, w);
    else
        uring_arm_if_wanted(u, io->fd, w);
    return true;
}

bool gh_uring_ring_idle(struct gh_uring *u, const struct gh_io *io)
{
    const struct watch *w = uring_watch(u, io->fd, false);
    if (!w || w->io != io)
        return true;
    const struct rio *r = &w->r;
    const struct acc *a = uring_acc(u, io->fd, w);
    return !r->on && !r->recv_inflight && !rio_has_input(r) && !rio_sends_busy(r) &&
           (!a || (!a->on && !a->inflight && a->conn < 0));
}

static ssize_t rx_take(struct gh_uring *u, struct rio *r, void *buf, size_t len)
{
    size_t n = len < r->len ? len : r->len;
    memcpy(buf, rx_addr(u, r->buf1 - 1u) + r->off, n);
    r->off += (uint16_t)n;
    r->len -= (uint16_t)n;
    if (!r->len) {
        rx_recycle(u, r->buf1 - 1);
        r->buf1 = 0;
    }
    return (ssize_t)n;
}

ssize_t gh_uring_recv(struct gh_uring *u, struct gh_io *io, void *buf, size_t len)
{
    struct rio *r = uring_rio(u, io);
    if (!r)
        return gh_sys_recv(io->fd, buf, len, 0);
    if (r->buf1)
        return rx_take(u, r, buf, len);
    if (r->err) {
        errno = r->err;
        return -1;
    }
    if (r->eof)
        return 0;
    if (r->recv_inflight || (r->on && !r->direct && !r->more)) {
        errno = EAGAIN; /* reported by the receive's completion */
        return -1;
    }
    /* Nothing of the ring's is left to come first, so the socket may be read directly: out
     * of buffers, or once behind a full buffer (a TLS record is larger than one), where that
     * read beats a loop turn per buffer. Only once: a client that keeps the socket full
     * would otherwise hold the worker in one long read loop. */
    r->direct = r->more = false;
    ssize_t n = gh_sys_recv(io->fd, buf, len, 0);
    if (n == 0)
        r->eof = true;
    return n;
}

/* ---- ring I/O: completions ---- */

/* Tells the owner what the ring has for it, then puts back in the ring what it still needs. */
void uring_report(struct gh_uring *u, int fd, struct watch *w)
{
    struct gh_io *io = w->io;
    if (!io || u->draining)
        return;
    uint32_t ready = rio_ready(u, fd, w);
    if (ready)
        io->fn(io, ready);
    w = uring_watch(u, fd, false);
    if (w && w->io == io)
        uring_arm_if_wanted(u, fd, w);
}

static void on_recv(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = uring_watch(u, fd, false);
    struct rio *r = w ? &w->r : NULL;
    bool has_buf = cqe->flags & IORING_CQE_F_BUFFER;
    int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    if (!r || r->gen != ud_gen(cqe->user_data) || !r->recv_inflight) {
        if (has_buf)
            rx_recycle(u, bid); /* for an owner gone since */
        return;
    }
    r->recv_inflight = false;
    if (cqe->res > 0 && has_buf) {
        r->buf1 = (uint16_t)(bid + 1);
        r->off = 0;
        r->len = (uint16_t)cqe->res;
        r->more = cqe->res == RX_BUF_SIZE;
        r->talked = true;
        has_buf = false;
    } else if (cqe->res == 0) {
        r->eof = true;
    } else if (cqe->res == -ENOBUFS) {
        r->direct = true; /* bytes wait in the socket: read them with a system call */
        u->rx_short++;
    } else if (cqe->res < 0 && cqe->res != -ECANCELED && cqe->res != -EINTR) {
        r->err = (uint16_t)-cqe->res;
    }
    if (has_buf)
        rx_recycle(u, bid);
    uring_report(u, fd, w);
}

static void on_kick(struct gh_uring *u, uint64_t data)
{
    int fd = ud_fd(data);
    struct watch *w = uring_watch(u, fd, false);
    if (!w || w->r.gen != ud_gen(data))
        return;
    w->r.kick_pending = false;
    uring_report(u, fd, w);
}

/* ---- the turn ---- */

/* The loop's deadline is a timeout request in the ring rather than a timed wait: a timed
 * wait starts and stops a kernel timer every time the loop sleeps, while the next deadline
 * mostly stays where it was (sessions end before theirs, and a new one's comes later). One
 * request is kept: moved earlier when a deadline comes before it, left alone when the next
 * one is later (it then wakes the loop early, for a turn that finds nothing due and waits
 * again), and armed anew once it has fired. */
static void keep_deadline(struct gh_uring *u, uint64_t at_ms)
{
    if (at_ms == UINT64_MAX || (u->deadline_ms && u->deadline_ms <= at_ms))
        return;
    u->deadline_ts = (struct __kernel_timespec){.tv_sec = (long long)(at_ms / 1000),
                                                .tv_nsec = (long long)(at_ms % 1000) * 1000000};
    struct io_uring_sqe *sqe = uring_sqe(u);
    if (u->deadline_ms) {
        io_uring_prep_timeout_update(sqe, &u->deadline_ts, user_data(K_DEADLINE, 0, 0),
                                     IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, UD_INTERNAL); /* too late (fired): its completion tells */
    } else {
        io_uring_prep_timeout(sqe, &u->deadline_ts, 0, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqe, user_data(K_DEADLINE, 0, 0));
    }
    u->deadline_ms = at_ms;
}

int gh_uring_wait(struct gh_uring *u, uint64_t deadline_ms)
{
    arm_added(u);
    uring_flush_sends(u);
    keep_deadline(u, deadline_ms);
    int rc = io_uring_submit_and_wait(&u->ring, 1);
    if (!io_uring_sq_ready(&u->ring))
        u->nconnect_addrs = 0; /* every connect queued has read its address */
    if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY || rc >= 0)
        return 0;
    return rc;
}

static void on_poll(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    uint32_t gen = ud_gen(cqe->user_data);
    struct watch *w = uring_watch(u, fd, false);
    if (!w || !w->io || !w->armed || w->gen != gen)
        return; /* removed or replaced since */
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        w->armed = false;
    if (cqe->res < 0) {
        if (cqe->res == -EINVAL && (w->events & EPOLLEXCLUSIVE)) {
            w->events &= ~EPOLLEXCLUSIVE; /* a kernel that will not poll exclusively */
            uring_arm_if_wanted(u, fd, w);
            return;
        }
        if (cqe->res == -ECANCELED) {
            uring_arm_if_wanted(u, fd, w);
            return;
        }
    }
    uint32_t ready = cqe->res < 0 ? EPOLLERR : (uint32_t)cqe->res;
    ready &= w->pmask | EPOLLERR | EPOLLHUP;
    struct gh_io *io = w->io;
    if (ready)
        io->fn(io, ready);
    /* The handler may have changed the watch (new generation), dropped it, or left it. */
    w = uring_watch(u, fd, false);
    if (!w || w->io != io || w->gen != gen || w->armed)
        return;
    if (cqe->res < 0)
        return; /* a poll the kernel refused would fail again at once: left to the next mod */
    /* Level-triggered: poll again; it completes at once while the condition lasts. */
    if (!ready && !(w->events & EPOLLET))
        rearm_later(u, fd, w);
    else
        uring_arm_if_wanted(u, fd, w);
}

static void dispatch_one(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    uint64_t d = cqe->user_data;
    if (d == UD_INTERNAL)
        return;
    if (d == UD_WAKE) {
        arm_wake(u); /* the messages themselves are drained by the loop */
        return;
    }
    switch (ud_kind(d)) {
    case K_POLL:
        on_poll(u, cqe);
        return;
    case K_REMOVE:
        if (cqe->res == -EALREADY)
            remove_poll(u, user_data(K_POLL, ud_gen(d), ud_fd(d)));
        return;
    case K_REARM:
        on_rearm(u, d);
        return;
    case K_RECV:
        on_recv(u, cqe);
        return;
    case K_SEND:
        uring_on_send(u, cqe);
        return;
    case K_KICK:
        on_kick(u, d);
        return;
    case K_ACCEPT:
        uring_on_accept(u, cqe);
        return;
    case K_CONNECT:
        uring_on_connect(u, cqe);
        return;
    case K_DEADLINE:
        u->deadline_ms = 0; /* fired (or cancelled): the next wait arms one again */
        return;
    case K_TAIL:
        uring_on_tail(u, cqe);
        return;
    case K_INTERNAL:
        return;
    }
}

void gh_uring_dispatch(struct gh_uring *u)
{
    struct io_uring_cqe *batch[CQE_BATCH];
    for (;;) {
        unsigned n = io_uring_peek_batch_cqe(&u->ring, batch, CQE_BATCH);
        if (!n)
            return;
        /* Copied out and consumed first: handlers queue entries, never read completions. */
        struct io_uring_cqe copy[CQE_BATCH];
        for (unsigned i = 0; i < n; i++)
            copy[i] = *batch[i];
        io_uring_cq_advance(&u->ring, n);
        for (unsigned i = 0; i < n; i++)
            dispatch_one(u, &copy[i]);
        if (n < CQE_BATCH)
            break;
    }
    if (u->rx_short)
        rx_grow(u);
}
