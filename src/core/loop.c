/*
 * loop: epoll wait, then expired timers, then posted messages. Timers live in a
 * binary min-heap (index kept in the timer, so re-arming is O(log n)); a deadline pushed
 * later, as an idle timer is on every read, only moves when its old place comes up, so
 * the common re-arm costs no heap work at all. Messages come
 * through a mutex-guarded list and an eventfd. The mutex is only on the message path,
 * never on accept or read. The wait itself is epoll's, or io_uring's (core/uring.c) when
 * gh_loop_choose_backend picked it at start; everything above the wait is shared.
 */
#include "core/loop.h"

#include "core/log.h"
#include "core/sys.h"
#include "core/uring.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct gh_msg {
    struct gh_msg *next;
    gh_msg_fn fn;
    void *arg;
};

struct heap_entry {
    uint64_t when_ms; /* the timer's key */
    struct gh_timer *t;
};

struct gh_loop {
    int epfd;              /* -1 on io_uring */
    struct gh_uring *ring; /* NULL on epoll */
    bool stopping;
    uint64_t now_ms;
    struct heap_entry *heap; /* 1-based */
    size_t heap_len, heap_cap;
    struct gh_io wake;
    pthread_mutex_t msg_lock; /* taken by posters, and by the loop only when one posted */
    struct gh_msg *msg_head, *msg_tail;
    atomic_bool msgs_posted;
    struct gh_deferred *deferred;
    /* On epoll, a turn's events are fetched before its messages run, and name their objects
     * by address: what the messages stop watching is listed here, and its events of the turn
     * are dropped (the object may be gone). */
    bool in_messages;
    bool drop_all; /* the list could not grow: the rest of the turn's events are dropped */
    struct gh_io **dropped;
    size_t ndropped, capdropped;
};

static _Thread_local struct gh_loop *current_loop;
static enum gh_loop_backend chosen_backend = GH_BACKEND_EPOLL;

const char *gh_loop_backend_name(enum gh_loop_backend b)
{
    return b == GH_BACKEND_IO_URING ? "io_uring" : b == GH_BACKEND_EPOLL ? "epoll" : "auto";
}

bool gh_loop_backend_parse(const char *s, enum gh_loop_backend *out)
{
    for (enum gh_loop_backend b = GH_BACKEND_AUTO; b <= GH_BACKEND_IO_URING; b++)
        if (!strcmp(s, gh_loop_backend_name(b))) {
            *out = b;
            return true;
        }
    return false;
}

bool gh_loop_choose_backend(enum gh_loop_backend want, gh_err *err)
{
    gh_err why = {0};
    if (want == GH_BACKEND_EPOLL || !gh_uring_probe(&why)) {
        if (want == GH_BACKEND_IO_URING)
            return gh_fail(err, "--engine io_uring: %s", why.msg);
        if (want == GH_BACKEND_AUTO)
            gh_log(NULL, NULL, "engine", "epoll: io_uring unavailable (%s)", why.msg);
        chosen_backend = GH_BACKEND_EPOLL;
        return true;
    }
    chosen_backend = GH_BACKEND_IO_URING;
    return true;
}

enum gh_loop_backend gh_loop_backend(void)
{
    return chosen_backend;
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void drain_messages(struct gh_loop *loop);
static void run_deferred(struct gh_loop *loop);

static void on_wake(struct gh_io *io, uint32_t events)
{
    uint64_t n;
    ssize_t r = read(io->fd, &n, sizeof n);
    (void)r;
    (void)events;
}

struct gh_loop *gh_loop_new(gh_err *err)
{
    struct gh_loop *loop = calloc(1, sizeof *loop);
    if (!loop) {
        gh_fail(err, "out of memory");
        return NULL;
    }
    loop->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->wake.fn = on_wake;
    pthread_mutex_init(&loop->msg_lock, NULL);
    loop->now_ms = monotonic_ms();
    if (chosen_backend == GH_BACKEND_IO_URING) {
        loop->epfd = -1;
        if (loop->wake.fd < 0 || !(loop->ring = gh_uring_new(loop->wake.fd, err))) {
            if (loop->wake.fd < 0)
                gh_fail_sys(err, errno, "event loop");
            gh_loop_free(loop);
            return NULL;
        }
        return loop;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0 || loop->wake.fd < 0 || !gh_io_add(loop, &loop->wake, EPOLLIN, err)) {
        if (loop->epfd < 0 || loop->wake.fd < 0)
            gh_fail_sys(err, errno, "event loop");
        gh_loop_free(loop);
        return NULL;
    }
    return loop;
}

void gh_loop_free(struct gh_loop *loop)
{
    if (!loop)
        return;
    drain_messages(loop);
    run_deferred(loop);
    if (loop->epfd >= 0)
        close(loop->epfd);
    gh_uring_free(loop->ring);
    if (loop->wake.fd >= 0)
        close(loop->wake.fd);
    pthread_mutex_destroy(&loop->msg_lock);
    free(loop->heap);
    free(loop->dropped);
    free(loop);
}

uint64_t gh_loop_now(const struct gh_loop *loop)
{
    return loop->now_ms;
}

struct gh_loop *gh_loop_current(void)
{
    return current_loop;
}

/* On epoll, a watch with no events is not added until it asks for some: a connection handed
 * to a backend at once waits for it unwatched, an add and a modify fewer. EPOLLWAKEUP, which
 * nothing here asks for, marks it. */
#define NOT_ADDED EPOLLWAKEUP

static bool epoll_set(struct gh_loop *loop, struct gh_io *io, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, op, io->fd, &ev) < 0)
        return false;
    io->events = events;
    return true;
}

bool gh_io_add(struct gh_loop *loop, struct gh_io *io, uint32_t events, gh_err *err)
{
    if (loop->ring)
        return gh_uring_add(loop->ring, io, events, err);
    if (!events) {
        io->events = NOT_ADDED;
        return true;
    }
    if (!epoll_set(loop, io, EPOLL_CTL_ADD, events))
        return gh_fail_sys(err, errno, "epoll add fd %d", io->fd);
    return true;
}

bool gh_io_mod(struct gh_loop *loop, struct gh_io *io, uint32_t events)
{
    if (loop->ring)
        return gh_uring_mod(loop->ring, io, events);
    if (io->events == events || (io->events == NOT_ADDED && !events))
        return true; /* an epoll_ctl saved: owners re-state their interest after each event */
    return epoll_set(loop, io, io->events == NOT_ADDED ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, events);
}

/* A message stopped watching io while the turn's events wait (epoll): they are not its. */
static void drop_turn_events(struct gh_loop *loop, struct gh_io *io)
{
    if (!loop->in_messages || loop->drop_all)
        return;
    if (loop->ndropped == loop->capdropped) {
        size_t n = loop->capdropped ? 2 * loop->capdropped : 16;
        struct gh_io **d = realloc(loop->dropped, n * sizeof *d);
        if (!d) {
            /* out of memory: none of the turn's events is trusted; level-triggered watches
             * report again, an edge-triggered one waits for its next edge or deadline */
            loop->drop_all = true;
            return;
        }
        loop->dropped = d;
        loop->capdropped = n;
    }
    loop->dropped[loop->ndropped++] = io;
}

static inline bool dropped(const struct gh_loop *loop, const struct gh_io *io)
{
    if (loop->drop_all)
        return true;
    for (size_t i = 0; i < loop->ndropped; i++)
        if (loop->dropped[i] == io)
            return true;
    return false;
}

void gh_io_del(struct gh_loop *loop, struct gh_io *io)
{
    if (loop->ring) {
        gh_uring_del(loop->ring, io);
    } else {
        if (io->events != NOT_ADDED)
            epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
        drop_turn_events(loop, io);
    }
    io->events = 0;
}

static atomic_bool fds_shared;

ssize_t gh_io_recv(struct gh_loop *loop, struct gh_io *io, void *buf, size_t len)
{
    if (loop->ring)
        return gh_uring_recv(loop->ring, io, buf, len);
    return gh_sys_recv(io->fd, buf, len, 0);
}

ssize_t gh_io_send(struct gh_loop *loop, struct gh_io *io, const void *buf, size_t len)
{
    if (loop->ring)
        return gh_uring_send(loop->ring, io, buf, len);
    return gh_sys_send(io->fd, buf, len, MSG_NOSIGNAL);
}

void gh_io_shutdown_write(struct gh_loop *loop, struct gh_io *io)
{
    if (loop->ring)
        gh_uring_shutdown_write(loop->ring, io);
    else
        shutdown(io->fd, SHUT_WR);
}

bool gh_io_ring(struct gh_loop *loop, struct gh_io *io, bool on)
{
    return loop->ring && gh_uring_ring(loop->ring, io, on);
}

bool gh_io_ring_idle(struct gh_loop *loop, const struct gh_io *io)
{
    return !loop->ring || gh_uring_ring_idle(loop->ring, io);
}

unsigned gh_loop_ring_buffers(const struct gh_loop *loop)
{
    return loop->ring ? gh_uring_rx_buffers(loop->ring) : 0;
}

bool gh_io_ring_accept(struct gh_loop *loop, struct gh_io *io, bool on)
{
    return loop->ring && gh_uring_ring_accept(loop->ring, io, on);
}

int gh_io_accept(struct gh_loop *loop, struct gh_io *io, struct sockaddr *addr, socklen_t *len)
{
    if (loop->ring)
        return gh_uring_accept(loop->ring, io, addr, len);
    return gh_sys_accept4(io->fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

bool gh_io_connect(struct gh_loop *loop, struct gh_io *io, uint32_t events,
                   const struct sockaddr *sa, socklen_t len)
{
    if (loop->ring && gh_uring_connect(loop->ring, io, events, sa, len))
        return true;
    if (connect(io->fd, sa, len) < 0 && errno != EINPROGRESS)
        return false;
    return gh_io_add(loop, io, events, NULL);
}

int gh_io_connect_error(struct gh_loop *loop, struct gh_io *io, uint32_t events)
{
    int soerr = loop->ring ? gh_uring_connect_error(loop->ring, io) : -1;
    if (soerr >= 0)
        return soerr;
    if ((events & EPOLLOUT) && !(events & (EPOLLERR | EPOLLHUP)))
        return 0; /* a failed connect always reports an error or a hang-up: no call to ask */
    socklen_t len = sizeof soerr;
    if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return errno;
    return soerr;
}

void gh_loop_fds_shared(bool shared)
{
    atomic_store(&fds_shared, shared);
}

void gh_io_close(struct gh_loop *loop, struct gh_io *io)
{
    if (loop->ring) {
        gh_uring_close(loop->ring, io);
        return;
    }
    if (atomic_load_explicit(&fds_shared, memory_order_relaxed))
        gh_io_del(loop, io);
    else
        drop_turn_events(loop, io);
    gh_sys_close(io->fd);
}

/* ---- timer heap ---- */

/* Each entry carries its key, so a sift compares within the array and only touches the
 * timers it moves (to note their new place): with thousands of sessions a timer is
 * rarely in cache, and reading one per comparison was a miss per step. */
static void heap_place(struct gh_loop *loop, size_t i, struct heap_entry e)
{
    loop->heap[i] = e;
    e.t->heap_index = (uint32_t)i;
}

static void heap_up(struct gh_loop *loop, size_t i, struct heap_entry e)
{
    while (i > 1 && loop->heap[i / 2].when_ms > e.when_ms) {
        heap_place(loop, i, loop->heap[i / 2]);
        i /= 2;
    }
    heap_place(loop, i, e);
}

static void heap_down(struct gh_loop *loop, size_t i, struct heap_entry e)
{
    for (;;) {
        size_t c = 2 * i;
        if (c > loop->heap_len)
            break;
        if (c < loop->heap_len && loop->heap[c + 1].when_ms < loop->heap[c].when_ms)
            c++;
        if (loop->heap[c].when_ms >= e.when_ms)
            break;
        heap_place(loop, i, loop->heap[c]);
        i = c;
    }
    heap_place(loop, i, e);
}

void gh_timer_cancel(struct gh_loop *loop, struct gh_timer *t)
{
    size_t i = t->heap_index;
    if (!i)
        return;
    t->heap_index = 0;
    struct heap_entry last = loop->heap[loop->heap_len--];
    if (last.t == t)
        return;
    if (i > 1 && loop->heap[i / 2].when_ms > last.when_ms)
        heap_up(loop, i, last);
    else
        heap_down(loop, i, last);
}

void gh_timer_set(struct gh_loop *loop, struct gh_timer *t, uint64_t ms)
{
    uint64_t due = loop->now_ms + ms;
    if (t->heap_index) {
        uint64_t when = loop->heap[t->heap_index].when_ms;
        if (due >= when && due - when <= UINT32_MAX) {
            t->later_ms = (uint32_t)(due - when); /* run_timers moves it when its place comes */
            return;
        }
    }
    gh_timer_cancel(loop, t);
    if (loop->heap_len + 1 >= loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 256;
        struct heap_entry *h = realloc(loop->heap, cap * sizeof *h);
        if (!h)
            abort(); /* a timer we cannot arm would leave a connection unbounded */
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->later_ms = 0;
    heap_up(loop, ++loop->heap_len, (struct heap_entry){due, t});
}

static uint64_t next_deadline(const struct gh_loop *loop)
{
    return loop->heap_len ? loop->heap[1].when_ms : UINT64_MAX;
}

static int next_timeout(const struct gh_loop *loop)
{
    if (!loop->heap_len)
        return -1;
    uint64_t when = loop->heap[1].when_ms;
    return when <= loop->now_ms ? 0 : (int)(when - loop->now_ms);
}

static void run_timers(struct gh_loop *loop)
{
    while (loop->heap_len && loop->heap[1].when_ms <= loop->now_ms) {
        struct heap_entry top = loop->heap[1];
        struct gh_timer *t = top.t;
        if (t->later_ms) { /* pushed later since it was placed */
            top.when_ms += t->later_ms;
            t->later_ms = 0;
            heap_down(loop, 1, top);
            continue;
        }
        gh_timer_cancel(loop, t);
        t->fn(t);
    }
}

/* ---- messages ---- */

bool gh_loop_post(struct gh_loop *loop, gh_msg_fn fn, void *arg)
{
    struct gh_msg *m = malloc(sizeof *m);
    if (!m)
        return false;
    *m = (struct gh_msg){.fn = fn, .arg = arg};
    pthread_mutex_lock(&loop->msg_lock);
    if (loop->msg_tail)
        loop->msg_tail->next = m;
    else
        loop->msg_head = m;
    loop->msg_tail = m;
    pthread_mutex_unlock(&loop->msg_lock);
    atomic_store_explicit(&loop->msgs_posted, true, memory_order_release);
    uint64_t one = 1;
    ssize_t w = write(loop->wake.fd, &one, sizeof one);
    (void)w;
    return true;
}

/* Every turn looks; only a turn after a post locks (a message posted after the flag was
 * read raises it again, and its wake-up brings the next turn). */
static void drain_messages(struct gh_loop *loop)
{
    if (!atomic_exchange_explicit(&loop->msgs_posted, false, memory_order_acq_rel))
        return;
    pthread_mutex_lock(&loop->msg_lock);
    struct gh_msg *m = loop->msg_head;
    loop->msg_head = loop->msg_tail = NULL;
    pthread_mutex_unlock(&loop->msg_lock);
    while (m) {
        struct gh_msg *next = m->next;
        m->fn(loop, m->arg);
        free(m);
        m = next;
    }
}

void gh_loop_defer(struct gh_loop *loop, struct gh_deferred *d)
{
    d->next = loop->deferred;
    loop->deferred = d;
}

static void run_deferred(struct gh_loop *loop)
{
    while (loop->deferred) {
        struct gh_deferred *d = loop->deferred;
        loop->deferred = d->next;
        d->fn(d);
    }
}

void gh_loop_stop(struct gh_loop *loop)
{
    loop->stopping = true;
}

static void after_events(struct gh_loop *loop)
{
    run_deferred(loop);
    run_timers(loop);
    run_deferred(loop);
    drain_messages(loop);
    run_deferred(loop);
}

static bool run_uring(struct gh_loop *loop, gh_err *err)
{
    while (!loop->stopping) {
        int rc = gh_uring_wait(loop->ring, next_deadline(loop));
        if (rc < 0)
            return gh_fail_sys(err, -rc, "io_uring_enter");
        loop->now_ms = monotonic_ms();
        /* Messages first: a change posted before a connection arrived (a new destination,
         * settings) then applies to it. A completion for a watch a message removed is
         * recognised as stale (core/uring.c). */
        drain_messages(loop);
        run_deferred(loop);
        gh_uring_dispatch(loop->ring);
        after_events(loop);
    }
    return true;
}

bool gh_loop_run(struct gh_loop *loop, gh_err *err)
{
    struct epoll_event events[256];
    current_loop = loop;
    if (loop->ring)
        return run_uring(loop, err);
    while (!loop->stopping) {
        int n = epoll_wait(loop->epfd, events, 256, next_timeout(loop));
        if (n < 0 && errno != EINTR)
            return gh_fail_sys(err, errno, "epoll_wait");
        loop->now_ms = monotonic_ms();
        /* Messages first, as on io_uring: a change posted before a connection arrived
         * applies to it. Events of what they stopped watching are dropped. */
        loop->in_messages = true;
        drain_messages(loop);
        loop->in_messages = false;
        for (int i = 0; i < n; i++) {
            struct gh_io *io = events[i].data.ptr;
            if (dropped(loop, io))
                continue;
            io->fn(io, events[i].events);
        }
        loop->ndropped = 0;
        loop->drop_all = false;
        after_events(loop);
    }
    return true;
}
