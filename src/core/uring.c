/*
 * uring: epoll's readiness contract served by io_uring. Each watched descriptor has one poll
 * request in the ring; adding, changing and removing it only queues entries, and the loop
 * submits them all with its wait in a single io_uring_enter. So a session costs its reads,
 * writes, accept and close, plus one enter per loop turn shared by every socket of the turn,
 * where epoll adds an epoll_ctl per change and an epoll_wait per turn.
 *
 * Level-triggered watches (no EPOLLET) are one-shot polls re-armed after their handler runs,
 * which reports readiness again while it lasts, as epoll does. EPOLLET watches are multishot
 * polls. Every poll carries the descriptor and a generation in its user data: a completion
 * from a poll that was removed or replaced (the descriptor closed, or its mask changed) names
 * an old generation and is dropped, so a handler never sees an event meant for an object
 * already freed, nor one meant for an earlier file under the same number.
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

#define RING_ENTRIES 4096
#define CQE_BATCH    256
#define UD_INTERNAL  UINT64_MAX       /* closes: nothing to do when they complete */
#define UD_WAKE      (UINT64_MAX - 1) /* the read of the wake eventfd */
#define UD_REMOVE    (1ull << 63)     /* | the poll's own user data: a removal */
#define UD_REARM     (1ull << 62)     /* | a watch's user data: its pause is over */
#define GEN_MASK     0x3fffffffu      /* generations stay below both */

struct watch {
    struct gh_io *io; /* NULL when the descriptor is not watched */
    uint32_t events;  /* as asked, EPOLL* bits */
    uint32_t gen;     /* of the poll now in the ring */
    bool armed;       /* a poll for gen is in the ring */
};

struct gh_uring {
    struct io_uring ring;
    struct watch *watches; /* by descriptor number */
    size_t nwatches;
    uint32_t next_gen;
    int wake_fd;
    uint64_t wake_count;
};

static uint64_t user_data(int fd, uint32_t gen)
{
    return (uint64_t)gen << 32 | (uint32_t)fd;
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

struct gh_uring *gh_uring_new(int wake_fd, gh_err *err)
{
    struct gh_uring *u = calloc(1, sizeof *u);
    if (!u) {
        gh_fail(err, "out of memory");
        return NULL;
    }
    struct io_uring_params params = {.flags = IORING_SETUP_CQSIZE, .cq_entries = 4 * RING_ENTRIES};
    int rc = io_uring_queue_init_params(RING_ENTRIES, &u->ring, &params);
    if (rc < 0) {
        gh_fail_sys(err, -rc, "io_uring_queue_init");
        free(u);
        return NULL;
    }
    u->wake_fd = wake_fd;
    u->next_gen = 1;
    arm_wake(u);
    return u;
}

void gh_uring_free(struct gh_uring *u)
{
    if (!u)
        return;
    /* The ring's own teardown is asynchronous, and its polls hold their sockets open until
     * it runs: a listening socket would linger (and take connections it will never accept)
     * after the loop is gone. Cancel everything first, and wait for it. */
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
    io_uring_submit_and_wait(&u->ring, 1);
    io_uring_queue_exit(&u->ring);
    free(u->watches);
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

/* Queues a poll for w's current mask under a new generation. */
static void arm(struct gh_uring *u, int fd, struct watch *w, bool multishot)
{
    w->gen = new_gen(u);
    struct io_uring_sqe *sqe = get_sqe(u);
    uint32_t mask = w->events & ~(EPOLLET | EPOLLONESHOT);
    if (multishot)
        io_uring_prep_poll_multishot(sqe, fd, mask & ~EPOLLEXCLUSIVE);
    else
        io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, user_data(fd, w->gen));
    w->armed = true;
}

static void remove_poll(struct gh_uring *u, uint64_t poll_data)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_poll_remove(sqe, poll_data);
    io_uring_sqe_set_data64(sqe, UD_REMOVE | poll_data);
}

static void disarm(struct gh_uring *u, int fd, struct watch *w)
{
    if (!w->armed)
        return;
    remove_poll(u, user_data(fd, w->gen));
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
    io_uring_sqe_set_data64(sqe, UD_REARM | user_data(fd, w->gen));
}

static void arm_if_wanted(struct gh_uring *u, int fd, struct watch *w);

static void on_rearm(struct gh_uring *u, uint64_t data)
{
    int fd = (int)(uint32_t)data;
    struct watch *w = watch_of(u, fd, false);
    if (w && w->io && !w->armed && w->gen == (uint32_t)(data >> 32))
        arm_if_wanted(u, fd, w);
}

static void arm_if_wanted(struct gh_uring *u, int fd, struct watch *w)
{
    if (wants_readiness(w->events))
        arm(u, fd, w, w->events & EPOLLET);
}

bool gh_uring_add(struct gh_uring *u, struct gh_io *io, uint32_t events, gh_err *err)
{
    struct watch *w = watch_of(u, io->fd, true);
    if (!w)
        return gh_fail(err, "out of memory watching fd %d", io->fd);
    /* A watch left on this number belongs to a file closed without gh_io_close: release
     * that file's poll (epoll forgets a closed file by itself). */
    disarm(u, io->fd, w);
    *w = (struct watch){.io = io, .events = events};
    arm_if_wanted(u, io->fd, w);
    return true;
}

bool gh_uring_mod(struct gh_uring *u, struct gh_io *io, uint32_t events)
{
    struct watch *w = watch_of(u, io->fd, false);
    if (!w || w->io != io)
        return false;
    if (w->armed && w->events == events)
        return true; /* the same mask again: nothing to change */
    disarm(u, io->fd, w);
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
    /* An exclusive watch (a listening socket shared by workers or processes) wakes only one
     * waiter per connection: left in the ring until the turn ends, it could take a wake-up
     * it will never act on, and the connection would wait for the next one. Removed now,
     * as epoll_ctl would (listening sockets are rarely dropped, so this costs nothing). */
    if (was_armed && (w->events & EPOLLEXCLUSIVE))
        io_uring_submit(&u->ring);
}

void gh_uring_close(struct gh_uring *u, struct gh_io *io)
{
    gh_uring_del(u, io);
    struct io_uring_sqe *sqe = get_sqe(u);
    io_uring_prep_close(sqe, io->fd);
    io_uring_sqe_set_data64(sqe, UD_INTERNAL);
}

int gh_uring_wait(struct gh_uring *u, int timeout_ms)
{
    struct io_uring_cqe *cqe;
    int rc;
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
    int fd = (int)(uint32_t)cqe->user_data;
    uint32_t gen = (uint32_t)(cqe->user_data >> 32);
    struct watch *w = watch_of(u, fd, false);
    if (!w || !w->io || w->gen != gen)
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
    ready &= w->events | EPOLLERR | EPOLLHUP;
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
    else if (wants_readiness(w->events))
        arm(u, fd, w, w->events & EPOLLET);
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
        for (unsigned i = 0; i < n; i++) {
            if (copy[i].user_data == UD_INTERNAL)
                continue;
            if (copy[i].user_data == UD_WAKE)
                arm_wake(u); /* the messages themselves are drained by the loop */
            else if (copy[i].user_data & UD_REARM)
                on_rearm(u, copy[i].user_data & ~UD_REARM);
            else if (copy[i].user_data & UD_REMOVE) {
                if (copy[i].res == -EALREADY)
                    remove_poll(u, copy[i].user_data & ~UD_REMOVE);
            } else
                on_poll(u, &copy[i]);
        }
        if (n < CQE_BATCH)
            return;
    }
}
