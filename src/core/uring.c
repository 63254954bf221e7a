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
 * the turn's single enter; a close or shutdown asked for meanwhile is linked behind them. So a
 * request-reply exchange costs no system call of its own.
 *
 * A listening socket switched to ring accepts (gh_uring_ring_accept) has an accept in the ring
 * instead of a poll: EPOLLIN means a connection is taken, and gh_uring_accept hands it over with
 * its peer's address. One accept at a time, each with its own address (a multishot accept
 * shares one address buffer among all its connections, which would cost a getpeername each).
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

#define RING_ENTRIES 4096
#define CQE_BATCH    256
#define RX_BUFS      256  /* provided receive buffers per ring (a power of two) */
#define RX_BUF_SIZE  4096 /* one TLS record takes a few; a command line, one */
#define RX_GROUP     0
#define TX_CAP       (256 * 1024) /* queued for one socket before sends say EAGAIN */

/* User data: what the request is (top 6 bits), a generation (26 bits), the descriptor. */
enum kind { K_POLL, K_REMOVE, K_REARM, K_RECV, K_SEND, K_KICK, K_TAIL, K_ACCEPT, K_INTERNAL = 63 };
#define UD_INTERNAL UINT64_MAX       /* closes and cancels: nothing to do when they complete */
#define UD_WAKE     (UINT64_MAX - 1) /* the read of the wake eventfd */
#define UD_LAST     (UINT64_MAX - 2) /* the cancel of everything, when the ring is freed */
#define GEN_MASK    0x03ffffffu

/* The sends of one socket, while it has any: allocated on the first write, freed once all
 * went out, so an idle connection holds none. */
struct tx {
    struct gh_buf sending; /* carried by the send in flight: unchanged until it completes */
    struct gh_buf queued;  /* written since; goes out with the next turn */
    bool send_inflight;    /* a send of `sending` is in the ring */
    bool close_pending;    /* close once the sends are out */
    bool shut_pending;     /* shutdown(SHUT_WR) once the sends are out */
    bool tail_inflight;    /* that close or shutdown is in the ring (behind the send, or alone) */
    bool tail_closes;      /* ... and it is the close */
    uint32_t gen;          /* of the tail in the ring: a completion of another is stale */
    bool dirty;            /* in the ring's list of sockets with bytes to send */
};

/* Ring I/O of one socket: bytes the ring received ahead of the owner's read, and its sends.
 * Part of the descriptor's slot (all zero: no ring I/O), reset for each new owner. */
struct rio {
    struct tx *tx;
    uint32_t gen;      /* of its receive and kick: completions of another are stale */
    uint16_t buf1;     /* the provided buffer holding unread bytes, plus one (0: none) */
    uint16_t off, len; /* of those bytes */
    uint16_t err;      /* a receive or send failed (errno): later calls fail with it */
    bool on : 1;       /* the owner asked for ring I/O */
    bool recv_inflight : 1;
    bool kick_pending : 1; /* a no-op is in the ring to report what is already here */
    bool direct : 1;       /* out of provided buffers: the next read is a system call */
    bool more : 1;         /* the last receive filled its buffer: one direct read may follow */
    bool eof : 1;          /* a receive returned 0: the peer ended its stream */
};

/* Ring accepts of one listening socket: allocated when they are switched on, freed with the
 * watch's next owner. The kernel writes the peer's address into addr; a connection taken
 * waits in conn, with that address, until the owner's gh_uring_accept. Listening sockets are
 * few: they are kept in a short list rather than in every descriptor's slot. */
struct acc {
    struct acc *next;
    int fd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t gen;  /* of the accept in the ring */
    int conn;      /* taken and not yet handed over, or -1 */
    int err;       /* the last accept failed (errno), not yet reported */
    bool on;       /* the owner asked for ring accepts */
    bool inflight; /* an accept is in the ring */
};

struct watch {
    struct gh_io *io; /* NULL when the descriptor is not watched */
    uint32_t events;  /* as asked, EPOLL* bits */
    uint32_t pmask;   /* of the poll in the ring */
    uint32_t gen;     /* of the poll now in the ring */
    bool armed;       /* a poll for gen is in the ring */
    bool accepts;     /* the ring's list of accepts has an entry for this descriptor */
    struct rio r;
};

struct gh_uring {
    struct io_uring ring;
    struct watch *watches; /* by descriptor number */
    size_t nwatches;
    uint32_t next_gen;
    int wake_fd;
    uint64_t wake_count;
    struct io_uring_buf_ring *rx_ring; /* NULL when the kernel took no provided buffers */
    char *rx_base;
    int *dirty; /* descriptors with bytes queued to send this turn */
    size_t ndirty, capdirty;
    unsigned sends_inflight;
    struct acc *accs; /* ring accepts, one per listening socket switched to them */
    bool draining;    /* the loop has ended: completions are not reported to owners */
};

static uint64_t user_data(enum kind k, uint32_t gen, int fd)
{
    return (uint64_t)k << 58 | (uint64_t)(gen & GEN_MASK) << 32 | (uint32_t)fd;
}
static enum kind ud_kind(uint64_t d)
{
    return (enum kind)(d >> 58);
}
static uint32_t ud_gen(uint64_t d)
{
    return (uint32_t)(d >> 32) & GEN_MASK;
}
static int ud_fd(uint64_t d)
{
    return (int)(uint32_t)d;
}

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
    /* A timed wait in the same enter (EXT_ARG) and multishot polls (which arrived with the
     * 5.13 kernels, before CQE_SKIP in 5.17): without them each turn would cost more. */
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
static struct io_uring_sqe *get_sqe(struct gh_uring *u)
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
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_read(sqe, u->wake_fd, &u->wake_count, sizeof u->wake_count, 0);
    io_uring_sqe_set_data64(sqe, UD_WAKE);
}

/* ---- provided receive buffers ---- */

static void rx_recycle(struct gh_uring *u, int bid)
{
    io_uring_buf_ring_add(u->rx_ring, u->rx_base + (size_t)bid * RX_BUF_SIZE, RX_BUF_SIZE,
                          (unsigned short)bid, io_uring_buf_ring_mask(RX_BUFS), 0);
    io_uring_buf_ring_advance(u->rx_ring, 1);
}

/* Ring I/O is an optimisation: a kernel that refuses provided buffers (before 5.19) keeps
 * every socket on polls and system calls. */
static void rx_setup(struct gh_uring *u)
{
    size_t ring_bytes = RX_BUFS * sizeof(struct io_uring_buf);
    void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring == MAP_FAILED)
        return;
    u->rx_ring = ring;
    io_uring_buf_ring_init(u->rx_ring);
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)ring, .ring_entries = RX_BUFS, .bgid = RX_GROUP};
    if (!(u->rx_base = malloc((size_t)RX_BUFS * RX_BUF_SIZE)) ||
        io_uring_register_buf_ring(&u->ring, &reg, 0) < 0) {
        free(u->rx_base);
        u->rx_base = NULL;
        munmap(ring, ring_bytes);
        u->rx_ring = NULL;
        return;
    }
    for (int i = 0; i < RX_BUFS; i++)
        rx_recycle(u, i);
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
    /* The ring's own descriptor is not registered (io_uring_register_ring_fd): with it,
     * liburing 2.3's timed wait (the loop's only wait) fails with EINVAL. */
    rx_setup(u);
    u->wake_fd = wake_fd;
    u->next_gen = 1;
    arm_wake(u);
    return u;
}

static void tx_free(struct rio *r)
{
    if (!r->tx)
        return;
    gh_buf_free(&r->tx->sending);
    gh_buf_free(&r->tx->queued);
    free(r->tx);
    r->tx = NULL;
}

static void flush_sends(struct gh_uring *u);
static void on_send(struct gh_uring *u, const struct io_uring_cqe *cqe);
static void on_tail(struct gh_uring *u, const struct io_uring_cqe *cqe);

/* Bytes written before the loop ended (goodbyes at stop) go out with their closes before the
 * ring is torn down, as send(2) would have handed them to the kernel; bounded to a second. */
static void drain_sends(struct gh_uring *u)
{
    u->draining = true;
    for (int i = 0; i < 100; i++) {
        flush_sends(u);
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
                on_send(u, cqe);
            else if (ud_kind(cqe->user_data) == K_TAIL && cqe->user_data != UD_INTERNAL)
                on_tail(u, cqe);
        }
        io_uring_cq_advance(&u->ring, n);
    }
    io_uring_submit(&u->ring); /* the closes queued behind the last sends */
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
    drain_sends(u);
    /* The ring's own teardown is asynchronous, and its polls hold their sockets open until
     * it runs: a listening socket would linger (and take connections it will never accept)
     * after the loop is gone. Cancel everything first, and wait for it. */
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, UD_LAST);
    reap_until_last(u);
    io_uring_queue_exit(&u->ring);
    for (size_t i = 0; i < u->nwatches; i++)
        tx_free(&u->watches[i].r);
    while (u->accs) {
        struct acc *a = u->accs;
        u->accs = a->next;
        if (a->conn >= 0)
            close(a->conn);
        free(a);
    }
    free(u->watches);
    if (u->rx_ring)
        munmap(u->rx_ring, RX_BUFS * sizeof(struct io_uring_buf));
    free(u->rx_base);
    free(u->dirty);
    free(u);
}

static struct watch *watch_of(struct gh_uring *u, int fd, bool grow)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= u->nwatches) {
        if (!grow)
            return NULL;
        size_t n = u->nwatches ? u->nwatches : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct watch *w = realloc(u->watches, n * sizeof *w);
        if (!w)
            return NULL;
        memset(w + u->nwatches, 0, (n - u->nwatches) * sizeof *w);
        u->watches = w;
        u->nwatches = n;
    }
    return &u->watches[fd];
}

static bool wants_readiness(uint32_t events)
{
    return events & (EPOLLIN | EPOLLOUT | EPOLLPRI);
}

static uint32_t new_gen(struct gh_uring *u)
{
    uint32_t gen = u->next_gen;
    u->next_gen = (u->next_gen + 1) & GEN_MASK;
    if (!u->next_gen)
        u->next_gen = 1;
    return gen;
}

/* ---- ring I/O state ---- */

static bool rio_sends_busy(const struct rio *r)
{
    return r->tx != NULL; /* freed once nothing is left to send */
}

static bool rio_has_input(const struct rio *r)
{
    return r->buf1 || r->eof || r->err || r->direct;
}

static bool rio_reads(const struct rio *r)
{
    return r->on || r->recv_inflight || rio_has_input(r);
}

static bool rio_writes(const struct rio *r)
{
    return r->on || rio_sends_busy(r);
}

static bool rio_room(const struct rio *r)
{
    return !r->tx || gh_buf_len(&r->tx->sending) + gh_buf_len(&r->tx->queued) < TX_CAP / 2;
}

static struct acc *acc_of(const struct gh_uring *u, int fd, const struct watch *w)
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
    const struct acc *a = acc_of(u, fd, w);
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
    const struct acc *a = acc_of(u, fd, w);
    uint32_t m = w->events;
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
    *r = (struct rio){.tx = r->tx, .gen = new_gen(u)}; /* what is in the ring is stale now */
}

static void cancel_recv(struct gh_uring *u, int fd, struct rio *r)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_cancel64(sqe, user_data(K_RECV, r->gen, fd), 0);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
}

static void queue_recv(struct gh_uring *u, int fd, struct rio *r)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_recv(sqe, fd, NULL, RX_BUF_SIZE, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RX_GROUP;
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
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, user_data(K_KICK, r->gen, fd));
    r->kick_pending = true;
}

static void queue_accept(struct gh_uring *u, int fd, struct acc *a)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    a->addrlen = sizeof a->addr;
    io_uring_prep_accept(sqe, fd, (struct sockaddr *)&a->addr, &a->addrlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
    a->gen = new_gen(u);
    io_uring_sqe_set_data64(sqe, user_data(K_ACCEPT, a->gen, fd));
    a->inflight = true;
}

static void cancel_accept(struct gh_uring *u, int fd, struct acc *a)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_cancel64(sqe, user_data(K_ACCEPT, a->gen, fd), 0);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
}

static void rio_arm(struct gh_uring *u, int fd, struct watch *w)
{
    struct rio *r = &w->r;
    struct acc *a = acc_of(u, fd, w);
    if (rio_ready(u, fd, w))
        kick(u, fd, r);
    else if (r->on && (w->events & EPOLLIN) && !r->recv_inflight && !rio_has_input(r))
        queue_recv(u, fd, r);
    else if (a && a->on && (w->events & EPOLLIN) && !a->inflight && a->conn < 0 && !a->err)
        queue_accept(u, fd, a);
}

/* For a new owner of the number, a close, or the end: an accept still in the ring is
 * cancelled (a connection it takes all the same is stale, and closed when it arrives), and
 * one taken but not handed over is closed. */
static void acc_free(struct gh_uring *u, int fd, struct watch *w)
{
    struct acc *a = acc_of(u, fd, w);
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
        cancel_accept(u, fd, a);
    if (a->conn >= 0)
        close(a->conn);
    free(a);
}

static void start_send(struct gh_uring *u, int fd, struct rio *r);

/* The socket's sends start at the end of the turn, as one send for all it wrote. */
static void mark_dirty(struct gh_uring *u, int fd, struct rio *r)
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

/* ---- polls ---- */

/* Queues a poll for mask under a new generation. */
static void arm(struct gh_uring *u, int fd, struct watch *w, uint32_t mask, bool multishot)
{
    w->gen = new_gen(u);
    w->pmask = mask;
    struct io_uring_sqe *sqe = get_sqe(u);
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
    struct io_uring_sqe *sqe = get_sqe(u);
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
    w->gen = new_gen(u);
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_timeout(sqe, (struct __kernel_timespec *)&pause, 0, 0);
    io_uring_sqe_set_data64(sqe, user_data(K_REARM, w->gen, fd));
}

/* Puts in the ring what the watch needs: a receive or a report for what ring I/O carries, a
 * poll for the rest. */
static void arm_if_wanted(struct gh_uring *u, int fd, struct watch *w)
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
    struct watch *w = watch_of(u, ud_fd(data), false);
    if (w && w->io && !w->armed && w->gen == ud_gen(data))
        arm_if_wanted(u, ud_fd(data), w);
}

/* A close in the ring has already run when a new socket gets its number (the kernel freed
 * the number): what is left of the old socket's sends belongs to nobody. */
static void drop_closed_tx(struct gh_uring *u, struct rio *r)
{
    if (r->tx && r->tx->tail_inflight && r->tx->tail_closes) {
        u->sends_inflight--;
        tx_free(r); /* its completion, when it comes, finds another generation or none */
    }
}

bool gh_uring_add(struct gh_uring *u, struct gh_io *io, uint32_t events, gh_err *err)
{
    struct watch *w = watch_of(u, io->fd, true);
    if (!w)
        return gh_fail(err, "out of memory watching fd %d", io->fd);
    /* A watch left on this number belongs to a file closed without gh_io_close: release
     * that file's poll (epoll forgets a closed file by itself). */
    disarm(u, io->fd, w);
    drop_closed_tx(u, &w->r);
    rio_reset(u, &w->r);
    acc_free(u, io->fd, w);
    w->io = io;
    w->events = events;
    w->pmask = w->gen = 0;
    arm_if_wanted(u, io->fd, w);
    return true;
}

bool gh_uring_mod(struct gh_uring *u, struct gh_io *io, uint32_t events)
{
    struct watch *w = watch_of(u, io->fd, false);
    if (!w || w->io != io)
        return false;
    w->events = events;
    arm_if_wanted(u, io->fd, w);
    return true;
}

void gh_uring_del(struct gh_uring *u, struct gh_io *io)
{
    struct watch *w = watch_of(u, io->fd, false);
    if (!w || w->io != io)
        return;
    bool was_armed = w->armed;
    disarm(u, io->fd, w);
    w->io = NULL;
    if (w->r.recv_inflight)
        cancel_recv(u, io->fd, &w->r);
    rio_reset(u, &w->r); /* what was received is the departed owner's */
    struct acc *a = acc_of(u, io->fd, w);
    if (a && a->inflight) { /* what it takes from now on finds no owner */
        cancel_accept(u, io->fd, a);
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
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
}

void gh_uring_close(struct gh_uring *u, struct gh_io *io)
{
    struct watch *w = watch_of(u, io->fd, false);
    struct tx *t = w && w->io == io ? w->r.tx : NULL;
    gh_uring_del(u, io);
    if (w)
        acc_free(u, io->fd, w);
    if (t) { /* the client gets every byte written before the close */
        t->close_pending = true;
        mark_dirty(u, io->fd, &w->r);
        return;
    }
    queue_close(u, io->fd);
}

/* ---- ring I/O: the owner's calls ---- */

static struct rio *rio_for(struct gh_uring *u, const struct gh_io *io)
{
    struct watch *w = watch_of(u, io->fd, false);
    return w && w->io == io ? &w->r : NULL;
}

bool gh_uring_ring(struct gh_uring *u, struct gh_io *io, bool on)
{
    struct watch *w = watch_of(u, io->fd, false);
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
    arm_if_wanted(u, io->fd, w);
    return true;
}

bool gh_uring_ring_idle(struct gh_uring *u, const struct gh_io *io)
{
    const struct watch *w = watch_of(u, io->fd, false);
    if (!w || w->io != io)
        return true;
    const struct rio *r = &w->r;
    const struct acc *a = acc_of(u, io->fd, w);
    return !r->on && !r->recv_inflight && !rio_has_input(r) && !rio_sends_busy(r) &&
           (!a || (!a->on && !a->inflight && a->conn < 0));
}

bool gh_uring_ring_accept(struct gh_uring *u, struct gh_io *io, bool on)
{
    struct watch *w = watch_of(u, io->fd, false);
    if (!w || w->io != io)
        return false;
    struct acc *a = acc_of(u, io->fd, w);
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
        cancel_accept(u, io->fd, a);
    arm_if_wanted(u, io->fd, w);
    return true;
}

int gh_uring_accept(struct gh_uring *u, struct gh_io *io, struct sockaddr *addr, socklen_t *len)
{
    struct watch *w = watch_of(u, io->fd, false);
    struct acc *a = w && w->io == io ? acc_of(u, io->fd, w) : NULL;
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

static ssize_t rx_take(struct gh_uring *u, struct rio *r, void *buf, size_t len)
{
    size_t n = len < r->len ? len : r->len;
    memcpy(buf, u->rx_base + (size_t)(r->buf1 - 1) * RX_BUF_SIZE + r->off, n);
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
    struct rio *r = rio_for(u, io);
    if (!r)
        return recv(io->fd, buf, len, 0);
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
    ssize_t n = recv(io->fd, buf, len, 0);
    if (n == 0)
        r->eof = true;
    return n;
}

ssize_t gh_uring_send(struct gh_uring *u, struct gh_io *io, const void *buf, size_t len)
{
    struct rio *r = rio_for(u, io);
    if (!r || !rio_writes(r))
        return send(io->fd, buf, len, MSG_NOSIGNAL);
    if (r->err) {
        errno = r->err;
        return -1;
    }
    if (!r->on) {
        errno = EAGAIN; /* handing the socket back: what the ring holds goes first */
        return -1;
    }
    if (!r->tx && !(r->tx = calloc(1, sizeof *r->tx))) {
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
    mark_dirty(u, io->fd, r); /* also frees a tx left empty */
    if (!ok) {
        errno = ENOMEM;
        return -1;
    }
    return (ssize_t)n;
}

void gh_uring_shutdown_write(struct gh_uring *u, struct gh_io *io)
{
    struct rio *r = rio_for(u, io);
    /* nothing to send first: the ring shuts it all the same, tracked like a send's */
    if (r && r->on && !r->tx)
        r->tx = calloc(1, sizeof *r->tx);
    if (!r || !r->tx) {
        shutdown(io->fd, SHUT_WR);
        return;
    }
    r->tx->shut_pending = true;
    mark_dirty(u, io->fd, r);
}

/* ---- ring I/O: sends, and what follows them ---- */

/* The close or shutdown after the sends, kept in the tx until its own completion: the kernel
 * runs a shutdown on one of its worker threads, so a close asked for later, run at once,
 * could overtake it, and the number pass to a new connection that the late shutdown would
 * then end. So a close waits for the shutdown before it. */
static void queue_tail(struct gh_uring *u, int fd, struct tx *t)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    t->tail_closes = t->close_pending;
    if (t->tail_closes)
        io_uring_prep_close(sqe, fd);
    else
        io_uring_prep_shutdown(sqe, fd, SHUT_WR);
    t->gen = new_gen(u);
    io_uring_sqe_set_data64(sqe, user_data(K_TAIL, t->gen, fd));
    t->tail_inflight = true;
    u->sends_inflight++;
}

/* Sends what is queued (one send for everything written since the last), with a close or
 * shutdown that waits for it linked behind. MSG_WAITALL: a send completes whole or failed,
 * and only a whole one lets the linked close run. A kernel with provided-buffer rings (5.19)
 * has MSG_WAITALL for sends (5.18). Once nothing is left, the tx is freed. */
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
    bool tail = t->close_pending || t->shut_pending;
    if (!gh_buf_len(&t->sending)) {
        if (tail)
            queue_tail(u, fd, t); /* the tx is freed once it has run */
        else
            tx_free(r);
        return;
    }
    if (tail && io_uring_sq_space_left(&u->ring) < 2)
        io_uring_submit(&u->ring); /* a link must not be split across two submissions */
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_send(sqe, fd, gh_buf_head(&t->sending), gh_buf_len(&t->sending),
                       MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, user_data(K_SEND, 0, fd));
    t->send_inflight = true;
    u->sends_inflight++;
    if (tail && !gh_buf_len(&t->queued)) {
        sqe->flags |= IOSQE_IO_LINK;
        queue_tail(u, fd, t);
    }
}

static void flush_sends(struct gh_uring *u)
{
    for (size_t i = 0; i < u->ndirty; i++) {
        struct watch *w = watch_of(u, u->dirty[i], false);
        if (!w || !w->r.tx)
            continue;
        w->r.tx->dirty = false;
        start_send(u, u->dirty[i], &w->r);
    }
    u->ndirty = 0;
}

/* Tells the owner what the ring has for it, then puts back in the ring what it still needs. */
static void rio_report(struct gh_uring *u, int fd, struct watch *w)
{
    struct gh_io *io = w->io;
    if (!io || u->draining)
        return;
    uint32_t ready = rio_ready(u, fd, w);
    if (ready)
        io->fn(io, ready);
    w = watch_of(u, fd, false);
    if (w && w->io == io)
        arm_if_wanted(u, fd, w);
}

static void on_send(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = watch_of(u, fd, false);
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
    if (r->err && !t->close_pending)
        t->shut_pending = false; /* nothing more will go out on this socket */
    start_send(u, fd, r);
    if (r->tx) {
        gh_buf_release_if_empty(&r->tx->sending);
        gh_buf_release_if_empty(&r->tx->queued);
    }
    if (w->io && (w->events & EPOLLOUT || r->err))
        rio_report(u, fd, w);
}

/* A close or shutdown ended: run (or failed: nothing more to try), or cancelled because the
 * send it was linked behind fell short, in which case it is asked for again after the rest. */
static void on_tail(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = watch_of(u, fd, false);
    struct rio *r = w ? &w->r : NULL;
    struct tx *t = r ? r->tx : NULL;
    if (!t || !t->tail_inflight || t->gen != ud_gen(cqe->user_data))
        return;
    t->tail_inflight = false;
    u->sends_inflight--;
    if (cqe->res != -ECANCELED) {
        t->shut_pending = false;
        if (t->tail_closes)
            t->close_pending = false;
    }
    start_send(u, fd, r); /* a close asked for meanwhile goes now; else the tx is freed */
    if (w->io)
        arm_if_wanted(u, fd, w); /* the ring's share of the watch may have changed */
}

static void on_recv(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = watch_of(u, fd, false);
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
        has_buf = false;
    } else if (cqe->res == 0) {
        r->eof = true;
    } else if (cqe->res == -ENOBUFS) {
        r->direct = true; /* bytes wait in the socket: read them with a system call */
    } else if (cqe->res < 0 && cqe->res != -ECANCELED && cqe->res != -EINTR) {
        r->err = (uint16_t)-cqe->res;
    }
    if (has_buf)
        rx_recycle(u, bid);
    rio_report(u, fd, w);
}

static void on_accept(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    struct watch *w = watch_of(u, fd, false);
    struct acc *a = w ? acc_of(u, fd, w) : NULL;
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
        w = watch_of(u, fd, false);
        if (w && w->io == io)
            arm_if_wanted(u, fd, w);
        return;
    }
    rio_report(u, fd, w);
}

static void on_kick(struct gh_uring *u, uint64_t data)
{
    int fd = ud_fd(data);
    struct watch *w = watch_of(u, fd, false);
    if (!w || w->r.gen != ud_gen(data))
        return;
    w->r.kick_pending = false;
    rio_report(u, fd, w);
}

/* ---- the turn ---- */

int gh_uring_wait(struct gh_uring *u, int timeout_ms)
{
    struct io_uring_cqe *cqe;
    int rc;
    flush_sends(u);
    if (timeout_ms < 0)
        rc = io_uring_submit_and_wait(&u->ring, 1);
    else {
        struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                       .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
        rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    if (rc == -ETIME || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY || rc >= 0)
        return 0;
    return rc;
}

static void on_poll(struct gh_uring *u, const struct io_uring_cqe *cqe)
{
    int fd = ud_fd(cqe->user_data);
    uint32_t gen = ud_gen(cqe->user_data);
    struct watch *w = watch_of(u, fd, false);
    if (!w || !w->io || !w->armed || w->gen != gen)
        return; /* removed or replaced since */
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        w->armed = false;
    if (cqe->res < 0) {
        if (cqe->res == -EINVAL && (w->events & EPOLLEXCLUSIVE)) {
            w->events &= ~EPOLLEXCLUSIVE; /* a kernel that will not poll exclusively */
            arm_if_wanted(u, fd, w);
            return;
        }
        if (cqe->res == -ECANCELED) {
            arm_if_wanted(u, fd, w);
            return;
        }
    }
    uint32_t ready = cqe->res < 0 ? EPOLLERR : (uint32_t)cqe->res;
    ready &= w->pmask | EPOLLERR | EPOLLHUP;
    struct gh_io *io = w->io;
    if (ready)
        io->fn(io, ready);
    /* The handler may have changed the watch (new generation), dropped it, or left it. */
    w = watch_of(u, fd, false);
    if (!w || w->io != io || w->gen != gen || w->armed)
        return;
    if (cqe->res < 0)
        return; /* a poll the kernel refused would fail again at once: left to the next mod */
    /* Level-triggered: poll again; it completes at once while the condition lasts. */
    if (!ready && !(w->events & EPOLLET))
        rearm_later(u, fd, w);
    else
        arm_if_wanted(u, fd, w);
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
        on_send(u, cqe);
        return;
    case K_KICK:
        on_kick(u, d);
        return;
    case K_ACCEPT:
        on_accept(u, cqe);
        return;
    case K_TAIL:
        on_tail(u, cqe);
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
            return;
    }
}
