/*
 * test_loop: the event loop's readiness contract, the same on epoll and on io_uring —
 * level-triggered watches report again while data remains, EPOLLET ones only on new data,
 * a changed mask takes effect, a removed watch is silent, gh_io_close ends the socket for
 * the peer within the turn, timers fire (a re-armed one at its new time only, earlier or
 * later, a cancelled one never, a nearer one set while the loop sleeps at its own time, many
 * in the order of their deadlines), and posted messages run on
 * the loop; and socket I/O through the loop (ring I/O on io_uring) keeps the bytes' order, the send
 * bound and the close after the last byte, accepts through it hand over every connection with its
 * address, and connects through it report their outcome once (and nothing after a close).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"

struct watched {
    struct gh_io io;
    int calls;
    uint32_t last;
    size_t read_each; /* bytes read per call (0: none) */
};

static void on_ready(struct gh_io *io, uint32_t events)
{
    struct watched *w = gh_container_of(io, struct watched, io);
    w->calls++;
    w->last = events;
    char b[64];
    if (w->read_each && (events & EPOLLIN))
        (void)!read(io->fd, b, w->read_each);
}

static void stop_loop(struct gh_timer *t)
{
    (void)t;
    gh_loop_stop(gh_loop_current());
}

/* A step of a test run from the loop, at a set time (a stopped loop does not run again). */
struct step {
    struct gh_timer t;
    void (*fn)(void *arg);
    void *arg;
};

static void run_step(struct gh_timer *t)
{
    struct step *s = gh_container_of(t, struct step, t);
    s->fn(s->arg);
}

/* Runs the loop for about ms milliseconds. */
static void run_for(struct gh_loop *loop, uint64_t ms)
{
    struct gh_timer stop = {.fn = stop_loop};
    gh_timer_set(loop, &stop, ms);
    gh_err err = {0};
    assert_true(gh_loop_run(loop, &err));
}

static bool use(enum gh_loop_backend b)
{
    gh_err err = {0};
    return gh_loop_choose_backend(b, &err);
}

static struct gh_loop *new_loop(void)
{
    gh_err err = {0};
    struct gh_loop *loop = gh_loop_new(&err);
    assert_non_null(loop);
    return loop;
}

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static void level_reports_while_data_remains(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct watched w = {.io = {.fd = sv[0], .fn = on_ready}, .read_each = 1};
    assert_true(gh_io_add(loop, &w.io, EPOLLIN, NULL));
    assert_int_equal(write(sv[1], "abc", 3), 3);
    run_for(loop, 50);
    assert_int_equal(w.calls, 3); /* one byte each time, then nothing left */
    gh_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static void edge_reports_only_new_data(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct watched w = {.io = {.fd = sv[0], .fn = on_ready}, .read_each = 1};
    assert_true(gh_io_add(loop, &w.io, EPOLLIN | EPOLLET, NULL));
    assert_int_equal(write(sv[1], "abc", 3), 3);
    run_for(loop, 50);
    assert_int_equal(w.calls, 1);
    gh_loop_free(loop);
    loop = new_loop();
    gh_io_add(loop, &w.io, EPOLLIN | EPOLLET, NULL); /* armed afresh: two bytes still wait */
    run_for(loop, 30);
    assert_int_equal(w.calls, 2);
    gh_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

/* A watch added with no events reports nothing, not even the hang-up waiting for it (on
 * epoll it is not added at all), until it asks for events; then it reports what waits. */
static void ask_for_input(void *arg)
{
    struct watched *w = arg;
    assert_int_equal(w->calls, 0);
    assert_true(gh_io_mod(gh_loop_current(), &w->io, EPOLLIN | EPOLLRDHUP));
}

static void no_events_report_nothing_until_asked(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct watched w = {.io = {.fd = sv[0], .fn = on_ready}, .read_each = 1};
    assert_true(gh_io_add(loop, &w.io, 0, NULL));
    assert_true(gh_io_mod(loop, &w.io, 0));
    assert_int_equal(write(sv[1], "ab", 2), 2);
    close(sv[1]);
    struct step ask = {.t.fn = run_step, .fn = ask_for_input, .arg = &w};
    gh_timer_set(loop, &ask.t, 30);
    run_for(loop, 80);
    assert_true(w.calls >= 2); /* a byte each time, then the hang-up */
    assert_true(w.last & (EPOLLRDHUP | EPOLLHUP));
    gh_loop_free(loop);
    close(sv[0]);
}

static struct gh_loop *del_loop;
static int del_peer;

static void del_and_write(void *arg)
{
    struct watched *w = arg;
    gh_io_del(del_loop, &w->io);
    assert_int_equal(write(del_peer, "x", 1), 1);
}

static void close_it(void *arg)
{
    struct watched *w = arg;
    gh_io_close(del_loop, &w->io);
}

static void mod_and_del(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct watched w = {.io = {.fd = sv[0], .fn = on_ready}};
    assert_true(gh_io_add(loop, &w.io, EPOLLIN, NULL));
    run_for(loop, 20);
    assert_int_equal(w.calls, 0); /* nothing to read */
    gh_loop_free(loop);

    loop = new_loop();
    assert_true(gh_io_add(loop, &w.io, EPOLLIN, NULL));
    assert_true(gh_io_mod(loop, &w.io, EPOLLOUT | EPOLLET));
    struct step del = {.t.fn = run_step, .fn = del_and_write, .arg = &w};
    del_loop = loop;
    del_peer = sv[1];
    gh_timer_set(loop, &del.t, 20);
    run_for(loop, 50);
    assert_int_equal(w.calls, 1); /* the EPOLLOUT; then removed: silent */
    assert_true(w.last & EPOLLOUT);
    gh_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

static void close_ends_the_socket_for_the_peer(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct watched w = {.io = {.fd = sv[0], .fn = on_ready}};
    assert_true(gh_io_add(loop, &w.io, EPOLLIN | EPOLLET, NULL));
    struct step cl = {.t.fn = run_step, .fn = close_it, .arg = &w};
    del_loop = loop;
    gh_timer_set(loop, &cl.t, 10);
    run_for(loop, 30);
    char c;
    assert_int_equal(read(sv[1], &c, 1), 0); /* end of stream, not EAGAIN */
    gh_loop_free(loop);
    close(sv[1]);
}

static int posted;
static void on_post(struct gh_loop *loop, void *arg)
{
    posted += (int)(intptr_t)arg;
    if (posted == 100)
        gh_loop_stop(loop);
}

static void *poster(void *arg)
{
    for (int i = 0; i < 100; i++)
        gh_loop_post(arg, on_post, (void *)1);
    return NULL;
}

/* A timer that records when it fired. */
struct fired {
    struct gh_timer t;
    int calls;
    uint64_t at;
};

static void on_fired(struct gh_timer *t)
{
    struct fired *f = gh_container_of(t, struct fired, t);
    f->calls++;
    f->at = gh_loop_now(gh_loop_current());
}

struct rearmed {
    struct fired later, earlier, gone;
    uint64_t start;
};

/* Halfway: the timer pushed later has not fired at its old time, the one brought earlier
 * has; the pushed one is now cancelled. */
static void rearmed_halfway(void *arg)
{
    struct rearmed *r = arg;
    assert_int_equal(r->later.calls, 0);
    assert_int_equal(r->earlier.calls, 1);
    assert_true(r->earlier.at - r->start < 90);
    gh_timer_cancel(gh_loop_current(), &r->gone.t);
}

/* A timer pushed later keeps its old place in the heap: it must not fire there, nor be
 * lost when its place comes up; one brought earlier fires early; a pushed one cancelled
 * never fires. */
static void rearmed_timers_fire_at_their_new_time(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    struct rearmed r = {.later.t.fn = on_fired,
                        .earlier.t.fn = on_fired,
                        .gone.t.fn = on_fired,
                        .start = gh_loop_now(loop)};
    gh_timer_set(loop, &r.later.t, 20);
    gh_timer_set(loop, &r.later.t, 30);
    gh_timer_set(loop, &r.later.t, 90);
    gh_timer_set(loop, &r.earlier.t, 200);
    gh_timer_set(loop, &r.earlier.t, 40);
    gh_timer_set(loop, &r.gone.t, 20);
    gh_timer_set(loop, &r.gone.t, 60);
    struct step half = {.t.fn = run_step, .fn = rearmed_halfway, .arg = &r};
    gh_timer_set(loop, &half.t, 50);
    run_for(loop, 150);
    assert_int_equal(r.later.calls, 1);
    assert_true(r.later.at - r.start >= 90);
    assert_int_equal(r.earlier.calls, 1);
    assert_int_equal(r.gone.calls, 0);
    gh_loop_free(loop);
}

static void rearmed_timers_fire_at_their_new_time_epoll(void **state)
{
    rearmed_timers_fire_at_their_new_time(GH_BACKEND_EPOLL);
}

static void rearmed_timers_fire_at_their_new_time_io_uring(void **state)
{
    rearmed_timers_fire_at_their_new_time(GH_BACKEND_IO_URING);
}

/* A nearer deadline set while the loop sleeps toward a far one (by a message that wakes
 * it): it fires at its own time, not at the far one's (io_uring keeps the loop's deadline
 * as a request in the ring, which must be moved earlier then), and the far one still fires
 * at its time after it. */
static struct {
    struct fired near, far;
    uint64_t start;
} nearer;

static void set_nearer(struct gh_loop *loop, void *arg)
{
    gh_timer_set(loop, &nearer.near.t, 20);
}

static void *post_nearer(void *arg)
{
    usleep(30 * 1000);
    gh_loop_post(arg, set_nearer, NULL);
    return NULL;
}

static void a_nearer_deadline_set_while_waiting_fires_on_time(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    nearer.near = (struct fired){.t.fn = on_fired};
    nearer.far = (struct fired){.t.fn = on_fired};
    nearer.start = gh_loop_now(loop);
    gh_timer_set(loop, &nearer.far.t, 400);
    pthread_t t;
    pthread_create(&t, NULL, post_nearer, loop);
    run_for(loop, 600);
    pthread_join(t, NULL);
    assert_int_equal(nearer.near.calls, 1);
    assert_true(nearer.near.at - nearer.start < 200); /* about 50 ms */
    assert_int_equal(nearer.far.calls, 1);
    assert_true(nearer.far.at - nearer.start >= 400);
    gh_loop_free(loop);
}

static void a_nearer_deadline_set_while_waiting_fires_on_time_epoll(void **state)
{
    a_nearer_deadline_set_while_waiting_fires_on_time(GH_BACKEND_EPOLL);
}

static void a_nearer_deadline_set_while_waiting_fires_on_time_io_uring(void **state)
{
    a_nearer_deadline_set_while_waiting_fires_on_time(GH_BACKEND_IO_URING);
}

/* Many timers set, moved earlier and later, some cancelled: each left fires once, not before
 * its deadline, and the firing order follows the deadlines (a heap that sifts wrongly breaks
 * the order or loses a timer). */
enum { ORDERED_TIMERS = 600 };

struct ordered {
    struct gh_timer t;
    uint64_t due;
    int calls;
    uint64_t at;
};

static uint64_t last_due_fired;
static bool fired_in_order;

static void on_ordered(struct gh_timer *t)
{
    struct ordered *o = gh_container_of(t, struct ordered, t);
    o->calls++;
    o->at = gh_loop_now(gh_loop_current());
    if (o->due < last_due_fired)
        fired_in_order = false;
    last_due_fired = o->due;
}

static void many_timers_fire_in_deadline_order(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    static struct ordered o[ORDERED_TIMERS];
    memset(o, 0, sizeof o); /* run once per engine */
    uint64_t start = gh_loop_now(loop);
    uint32_t x = 12345;
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < ORDERED_TIMERS; i++) {
            if (pass && (x = x * 1103515245 + 12345) % 3)
                continue; /* later passes move about a third of them */
            uint64_t ms = 1 + (x = x * 1103515245 + 12345) % 80;
            o[i].t.fn = on_ordered;
            o[i].due = start + ms;
            gh_timer_set(loop, &o[i].t, ms);
        }
    for (int i = 0; i < ORDERED_TIMERS; i += 7)
        gh_timer_cancel(loop, &o[i].t);
    last_due_fired = 0;
    fired_in_order = true;
    run_for(loop, 150);
    for (int i = 0; i < ORDERED_TIMERS; i++) {
        assert_int_equal(o[i].calls, i % 7 ? 1 : 0);
        if (i % 7)
            assert_true(o[i].at >= o[i].due);
    }
    assert_true(fired_in_order);
    gh_loop_free(loop);
}

static void many_timers_fire_in_deadline_order_epoll(void **state)
{
    many_timers_fire_in_deadline_order(GH_BACKEND_EPOLL);
}

static void many_timers_fire_in_deadline_order_io_uring(void **state)
{
    many_timers_fire_in_deadline_order(GH_BACKEND_IO_URING);
}

static void messages_from_another_thread(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    posted = 0;
    pthread_t t;
    pthread_create(&t, NULL, poster, loop);
    run_for(loop, 5000); /* stopped by the hundredth message */
    pthread_join(t, NULL);
    assert_int_equal(posted, 100);
    gh_loop_free(loop);
}

/* ---- socket I/O through the loop (ring I/O on io_uring, system calls on epoll) ---- */

struct echo {
    struct gh_io io;
    struct gh_loop *loop;
    char got[64];
    size_t ngot, per_read;
    int calls;
    bool close_after; /* closes right after its reply: the reply must still arrive */
};

/* Reads per_read bytes a call; at the first newline answers "ok <what came>\n". */
static void on_echo(struct gh_io *io, uint32_t events)
{
    struct echo *e = gh_container_of(io, struct echo, io);
    e->calls++;
    if (!(events & EPOLLIN))
        return;
    ssize_t n = gh_io_recv(e->loop, io, e->got + e->ngot, e->per_read);
    if (n <= 0)
        return;
    e->ngot += (size_t)n;
    if (e->got[e->ngot - 1] != '\n')
        return;
    char reply[80];
    int len = snprintf(reply, sizeof reply, "ok %.*s", (int)e->ngot, e->got);
    assert_int_equal(gh_io_send(e->loop, io, reply, (size_t)len), len);
    if (e->close_after)
        gh_io_close(e->loop, io);
}

static void read_all(int fd, char *buf, size_t cap, size_t *n)
{
    *n = 0;
    for (int i = 0; i < 200 && *n < cap; i++) {
        ssize_t r = read(fd, buf + *n, cap - *n);
        if (r == 0)
            return;
        if (r > 0)
            *n += (size_t)r;
        else
            usleep(1000);
    }
}

static void reads_and_writes_through_the_loop(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct echo e = {
        .io = {.fd = sv[0], .fn = on_echo}, .loop = loop, .per_read = 2, .close_after = true};
    assert_true(gh_io_add(loop, &e.io, EPOLLIN, NULL));
    assert_true(gh_io_ring(loop, &e.io, true) == (b == GH_BACKEND_IO_URING));
    assert_int_equal(write(sv[1], "hello\n", 6), 6);
    run_for(loop, 50);
    assert_int_equal(e.ngot, 6); /* two bytes a call: reported again while bytes remain */
    char buf[64];
    size_t n;
    read_all(sv[1], buf, sizeof buf, &n); /* the reply, then the end: the close waited for it */
    assert_int_equal(n, 9);
    assert_memory_equal(buf, "ok hello\n", 9);
    gh_loop_free(loop);
    close(sv[1]);
}

/* ---- a burst of receives larger than the ring's buffers ---- */

struct reader {
    struct gh_io io;
    struct gh_loop *loop;
    char got[32];
    size_t n;
};

static void on_reader(struct gh_io *io, uint32_t events)
{
    struct reader *r = gh_container_of(io, struct reader, io);
    ssize_t n;
    while (events & EPOLLIN && r->n < sizeof r->got &&
           (n = gh_io_recv(r->loop, io, r->got + r->n, sizeof r->got - r->n)) > 0)
        r->n += (size_t)n;
}

struct burst {
    struct gh_loop *loop;
    struct reader *readers;
    int *peers;
    int round;
    unsigned buffers[3]; /* before each burst, and after the last */
};

enum { BURST = 400 };

/* Checks what the last burst delivered, notes the ring's buffers, writes the next burst. */
static void burst_step(void *arg)
{
    struct burst *b = arg;
    for (int i = 0; i < BURST && b->round > 0; i++) {
        char want[32];
        int len = b->round == 2 ? snprintf(want, sizeof want, "0:%03d.1:%03d.", i, i)
                                : snprintf(want, sizeof want, "0:%03d.", i);
        assert_int_equal(b->readers[i].n, (size_t)len);
        assert_memory_equal(b->readers[i].got, want, (size_t)len);
    }
    b->buffers[b->round] = gh_loop_ring_buffers(b->loop);
    for (int i = 0; i < BURST && b->round < 2; i++) {
        char msg[8];
        int len = snprintf(msg, sizeof msg, "%d:%03d.", b->round, i);
        assert_int_equal(write(b->peers[i], msg, (size_t)len), len);
    }
    b->round++;
}

/* Every socket gets bytes while the loop is away (the burst is written from one step), so
 * that the ring's receives all complete at once and each holds a buffer: more than the ring
 * starts with. Every byte arrives either way (those that found no buffer by a system call),
 * the ring provides more afterwards, and the next burst of the same size finds enough. */
static void a_burst_larger_than_the_buffers_grows_them(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct rlimit lim;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &lim), 0);
    if (lim.rlim_cur < 2 * BURST + 64) {
        if (lim.rlim_max < 2 * BURST + 64)
            skip();
        lim.rlim_cur = 2 * BURST + 64;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
    }
    struct burst t = {.loop = new_loop()};
    t.readers = calloc(BURST, sizeof *t.readers);
    t.peers = calloc(BURST, sizeof *t.peers);
    assert_non_null(t.readers);
    assert_non_null(t.peers);
    for (int i = 0; i < BURST; i++) {
        int sv[2];
        pair(sv);
        t.readers[i] = (struct reader){.io = {.fd = sv[0], .fn = on_reader}, .loop = t.loop};
        t.peers[i] = sv[1];
        assert_true(gh_io_add(t.loop, &t.readers[i].io, EPOLLIN, NULL));
        gh_io_ring(t.loop, &t.readers[i].io, true);
    }
    struct step steps[3];
    for (int i = 0; i < 3; i++) {
        steps[i] = (struct step){.t = {.fn = run_step}, .fn = burst_step, .arg = &t};
        gh_timer_set(t.loop, &steps[i].t, 20 + 60 * (uint64_t)i);
    }
    run_for(t.loop, 200);
    assert_int_equal(t.round, 3);
    if (b == GH_BACKEND_IO_URING) {
        assert_true(t.buffers[0] > 0 && t.buffers[0] < BURST); /* the burst is larger */
        assert_true(t.buffers[1] >= BURST);                    /* grown by what it lacked */
        assert_int_equal(t.buffers[2], t.buffers[1]);          /* and that was enough */
    } else {
        assert_int_equal(t.buffers[0] + t.buffers[1] + t.buffers[2], 0);
    }
    for (int i = 0; i < BURST; i++) {
        gh_io_close(t.loop, &t.readers[i].io);
        close(t.peers[i]);
    }
    gh_loop_free(t.loop);
    free(t.readers);
    free(t.peers);
}

struct drain {
    int fd;
    size_t n;
};

static void *drain_peer(void *arg)
{
    struct drain *d = arg;
    char buf[65536];
    for (;;) {
        ssize_t r = read(d->fd, buf, sizeof buf);
        if (r == 0)
            return NULL;
        if (r > 0)
            d->n += (size_t)r;
        else
            usleep(500);
    }
}

struct bulk {
    struct gh_io io;
    struct gh_loop *loop;
    size_t sent, total;
    int eagains;
};

/* Writes until the loop says EAGAIN, then waits for EPOLLOUT; closes once all is written. */
static void on_bulk(struct gh_io *io, uint32_t events)
{
    struct bulk *k = gh_container_of(io, struct bulk, io);
    static char chunk[16384];
    (void)events;
    while (k->sent < k->total) {
        ssize_t n = gh_io_send(k->loop, io, chunk, sizeof chunk);
        if (n < 0) {
            assert_int_equal(errno, EAGAIN);
            k->eagains++;
            gh_io_mod(k->loop, io, EPOLLOUT);
            return;
        }
        k->sent += (size_t)n;
    }
    gh_io_close(k->loop, io);
}

static void a_close_waits_for_every_byte_written(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct bulk k = {.io = {.fd = sv[0], .fn = on_bulk}, .loop = loop, .total = 4 << 20};
    assert_true(gh_io_add(loop, &k.io, EPOLLOUT, NULL));
    gh_io_ring(loop, &k.io, true);
    struct drain d = {.fd = sv[1]};
    pthread_t t;
    pthread_create(&t, NULL, drain_peer, &d);
    run_for(loop, 1500);
    pthread_join(t, NULL);
    assert_true(k.sent >= k.total);
    assert_int_equal(d.n, k.sent); /* every byte, then the end */
    assert_true(k.eagains > 0);    /* the bound was met and EPOLLOUT came after it */
    gh_loop_free(loop);
    close(sv[1]);
}

static void on_half(struct gh_io *io, uint32_t events)
{
    struct echo *e = gh_container_of(io, struct echo, io);
    e->calls++;
    char b[8];
    ssize_t n = gh_io_recv(e->loop, io, b, 1);
    if (n == 1 && e->ngot < sizeof e->got)
        e->got[e->ngot++] = b[0];
    if (e->ngot == 1 && n == 1) /* hand the socket back after the first byte */
        gh_io_ring(e->loop, io, false);
    (void)events;
}

struct late_write {
    struct gh_loop *loop;
    struct gh_io *io;
    int fd;
    bool was_idle;
};

/* From the loop, once the first bytes are handled: is the socket handed back? Then more. */
static void write_more(void *arg)
{
    struct late_write *l = arg;
    l->was_idle = gh_io_ring_idle(l->loop, l->io);
    assert_int_equal(write(l->fd, "d", 1), 1);
}

static void ring_off_hands_the_socket_back_in_order(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct echo e = {.io = {.fd = sv[0], .fn = on_half}, .loop = loop};
    assert_true(gh_io_add(loop, &e.io, EPOLLIN, NULL));
    gh_io_ring(loop, &e.io, true);
    assert_int_equal(write(sv[1], "abc", 3), 3);
    struct late_write l = {.loop = loop, .io = &e.io, .fd = sv[1]};
    struct step more = {.t = {.fn = run_step}, .fn = write_more, .arg = &l};
    gh_timer_set(loop, &more.t, 30);
    run_for(loop, 80);
    assert_true(l.was_idle);
    assert_int_equal(e.ngot, 4);
    assert_memory_equal(e.got, "abcd", 4); /* what the ring held came before the rest */
    char x;
    assert_int_equal(recv(sv[0], &x, 1, MSG_DONTWAIT), -1); /* nothing left behind */
    gh_io_del(loop, &e.io);
    gh_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
}

struct handback {
    struct gh_io io;
    struct gh_loop *loop;
    int outs;     /* EPOLLOUT reports after the hand-back */
    bool waiting; /* told EAGAIN, watching for room */
};

/* Fills the socket, hands it back (ring off), then waits for room to write again. */
static void on_handback(struct gh_io *io, uint32_t events)
{
    struct handback *h = gh_container_of(io, struct handback, io);
    static char chunk[65536];
    if (h->waiting) {
        if (events & EPOLLOUT)
            h->outs++;
        gh_io_mod(h->loop, io, EPOLLIN); /* one report is the point */
        h->waiting = false;
        return;
    }
    if (!(events & EPOLLOUT))
        return;
    for (int i = 0; i < 8; i++)
        if (gh_io_send(h->loop, io, chunk, sizeof chunk) < 0)
            break;
    gh_io_ring(h->loop, io, false);
    while (gh_io_send(h->loop, io, chunk, sizeof chunk) >= 0)
        ;
    assert_int_equal(errno, EAGAIN);
    h->waiting = true;
    gh_io_mod(h->loop, io, EPOLLIN | EPOLLOUT);
}

static void *drain_later(void *arg)
{
    usleep(100 * 1000); /* the peer starts reading only once the writer waits */
    return drain_peer(arg);
}

/* A socket handed back while its sends are still going out gets EPOLLOUT once they are out,
 * though nothing arrives to read (its poll for input must not hide the one for output). */
static void room_after_a_hand_back_is_reported(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sv[2];
    pair(sv);
    struct handback h = {.io = {.fd = sv[0], .fn = on_handback}, .loop = loop};
    assert_true(gh_io_add(loop, &h.io, EPOLLIN | EPOLLOUT, NULL));
    gh_io_ring(loop, &h.io, true);
    struct drain d = {.fd = sv[1]};
    pthread_t t;
    pthread_create(&t, NULL, drain_later, &d);
    run_for(loop, 1000);
    assert_int_equal(h.outs, 1);
    gh_io_del(loop, &h.io);
    gh_loop_free(loop); /* lets go of the socket: closing it then ends the peer's reading */
    close(sv[0]);
    pthread_join(t, NULL);
    close(sv[1]);
}

/* A listening socket on 127.0.0.1 and its port (network order). */
static int listener(in_port_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &n), 0);
    *port = a.sin_port;
    return fd;
}

/* A connected client of port; its own port in *mine. */
static int dial(in_port_t port, in_port_t *mine)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = port, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &n), 0);
    *mine = a.sin_port;
    return fd;
}

struct acceptor {
    struct gh_io io;
    struct gh_loop *loop;
    int got[4];
    struct sockaddr_in from[4];
    int ngot, reports;
};

static void on_acceptable(struct gh_io *io, uint32_t events)
{
    struct acceptor *a = gh_container_of(io, struct acceptor, io);
    a->reports++;
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    int fd = gh_io_accept(a->loop, io, (struct sockaddr *)&peer, &len);
    if (fd < 0) {
        assert_int_equal(errno, EAGAIN);
        return;
    }
    assert_true(a->ngot < 4);
    assert_int_equal(len, sizeof peer);
    a->got[a->ngot] = fd;
    a->from[a->ngot++] = peer;
}

static void acceptor_free(struct acceptor *a)
{
    gh_io_del(a->loop, &a->io);
    gh_loop_free(a->loop);
    close(a->io.fd);
    for (int i = 0; i < a->ngot; i++)
        close(a->got[i]);
}

/* Each connection comes with its own peer address, non-blocking and close-on-exec, as
 * accept4 gives them; on io_uring the ring takes them. */
static void accepts_hand_over_connections_with_their_address(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    in_port_t port, mine[3];
    struct acceptor a = {.io = {.fd = listener(&port), .fn = on_acceptable}, .loop = new_loop()};
    assert_true(gh_io_add(a.loop, &a.io, EPOLLIN, NULL));
    assert_int_equal(gh_io_ring_accept(a.loop, &a.io, true), b == GH_BACKEND_IO_URING);
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = dial(port, &mine[i]);
    run_for(a.loop, 100);
    assert_int_equal(a.ngot, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(a.from[i].sin_addr.s_addr, htonl(INADDR_LOOPBACK));
        bool known = false;
        for (int k = 0; k < 3; k++)
            known |= a.from[i].sin_port == mine[k];
        assert_true(known);
        struct sockaddr_in p;
        socklen_t n = sizeof p;
        assert_int_equal(getpeername(a.got[i], (struct sockaddr *)&p, &n), 0);
        assert_int_equal(p.sin_port, a.from[i].sin_port); /* the address is this one's */
        assert_true(fcntl(a.got[i], F_GETFL) & O_NONBLOCK);
        assert_true(fcntl(a.got[i], F_GETFD) & FD_CLOEXEC);
    }
    acceptor_free(&a);
    for (int i = 0; i < 3; i++)
        close(c[i]);
}

struct late_client {
    struct acceptor *a;
    in_port_t port, mine;
    int fd;
    bool idle_at_once;
};

/* A client arrives while the accept is in the ring; then ring accepts are switched off. */
static void client_then_off(void *arg)
{
    struct late_client *l = arg;
    l->fd = dial(l->port, &l->mine);
    usleep(20 * 1000); /* the ring's accept has taken it, or is about to */
    gh_io_ring_accept(l->a->loop, &l->a->io, false);
    l->idle_at_once = gh_io_ring_idle(l->a->loop, &l->a->io);
}

/* Switched off while its accept is in the ring and a client arrives: the connection is
 * handed over all the same (or left in the queue for the poll that follows), never lost,
 * and the owner is told when the ring is done with the socket. */
static void accepts_switched_off_lose_no_connection(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    in_port_t port;
    struct acceptor a = {.io = {.fd = listener(&port), .fn = on_acceptable}, .loop = new_loop()};
    assert_true(gh_io_add(a.loop, &a.io, EPOLLIN, NULL));
    gh_io_ring_accept(a.loop, &a.io, true);
    struct late_client l = {.a = &a, .port = port};
    struct step late = {.t = {.fn = run_step}, .fn = client_then_off, .arg = &l};
    gh_timer_set(a.loop, &late.t, 20); /* by then the accept is in the ring */
    run_for(a.loop, 100);
    assert_int_equal(l.idle_at_once, b != GH_BACKEND_IO_URING);
    assert_true(gh_io_ring_idle(a.loop, &a.io));
    assert_int_equal(a.ngot, 1);
    assert_int_equal(a.from[0].sin_port, l.mine);
    acceptor_free(&a);
    close(l.fd);
}

struct dialer {
    struct gh_io io;
    struct gh_loop *loop;
    int calls, error;
    uint32_t events;
};

static void on_connected(struct gh_io *io, uint32_t events)
{
    struct dialer *d = gh_container_of(io, struct dialer, io);
    d->calls++;
    d->events = events;
    d->error = gh_io_connect_error(d->loop, io, events);
    gh_io_del(d->loop, io); /* a refused socket would report its error again every turn */
}

static bool dial_through_loop(struct dialer *d, in_port_t port)
{
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = port, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    d->io.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    d->io.fn = on_connected;
    return gh_io_connect(d->loop, &d->io, EPOLLOUT | EPOLLRDHUP, (struct sockaddr *)&a, sizeof a);
}

/* A connect reports once: EPOLLOUT and no error when the listener is there, EPOLLERR and
 * ECONNREFUSED when nothing listens; the connected socket is the listener's peer. */
static void connects_report_their_outcome(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    in_port_t port, closed;
    int l = listener(&port);
    close(listener(&closed)); /* a port nothing listens on */
    struct gh_loop *loop = new_loop();
    struct dialer ok = {.loop = loop}, refused = {.loop = loop};
    assert_true(dial_through_loop(&ok, port));
    assert_true(dial_through_loop(&refused, closed));
    run_for(loop, 100);
    assert_int_equal(ok.calls, 1);
    assert_true(ok.events & EPOLLOUT);
    assert_false(ok.events & EPOLLERR);
    assert_int_equal(ok.error, 0);
    struct sockaddr_in mine, theirs;
    socklen_t n = sizeof mine, m = sizeof theirs;
    int served = accept(l, (struct sockaddr *)&theirs, &m);
    assert_true(served >= 0);
    assert_int_equal(getsockname(ok.io.fd, (struct sockaddr *)&mine, &n), 0);
    assert_int_equal(mine.sin_port, theirs.sin_port);
    assert_int_equal(refused.calls, 1);
    assert_true(refused.events & EPOLLERR);
    assert_int_equal(refused.error, ECONNREFUSED);
    gh_loop_free(loop);
    close(ok.io.fd);
    close(refused.io.fd);
    close(served);
    close(l);
}

/* More connects in one turn than the ring keeps addresses for (64), to two listeners in
 * turn: the rest connect with connect(2), and every one reaches the listener it was sent
 * to (an address kept for the ring and overwritten before the submit would send it to the
 * other) and reports once. */
static void many_connects_in_one_turn_all_report(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    enum { N = 80 };
    in_port_t port[2];
    int l[2] = {listener(&port[0]), listener(&port[1])};
    for (int k = 0; k < 2; k++)
        assert_int_equal(listen(l[k], N), 0);
    struct gh_loop *loop = new_loop();
    static struct dialer d[N];
    for (int i = 0; i < N; i++) {
        d[i] = (struct dialer){.loop = loop};
        assert_true(dial_through_loop(&d[i], port[i % 2]));
    }
    run_for(loop, 200);
    for (int i = 0; i < N; i++) {
        struct sockaddr_in peer;
        socklen_t n = sizeof peer;
        assert_int_equal(d[i].calls, 1);
        assert_int_equal(d[i].error, 0);
        assert_int_equal(getpeername(d[i].io.fd, (struct sockaddr *)&peer, &n), 0);
        assert_int_equal(peer.sin_port, port[i % 2]);
    }
    gh_loop_free(loop);
    for (int i = 0; i < N; i++)
        close(d[i].io.fd);
    close(l[0]);
    close(l[1]);
}

/* A listener whose queue is full: its port takes no more handshakes, so a connect to it
 * stays in progress. */
static int full_listener(in_port_t *port, int queued[2])
{
    int fd = listener(port);
    assert_int_equal(listen(fd, 0), 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = *port, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < 2; i++) {
        queued[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)!connect(queued[i], (struct sockaddr *)&a, sizeof a);
    }
    usleep(20 * 1000);
    return fd;
}

static void close_the_dialer(void *arg)
{
    struct dialer *d = arg;
    gh_io_close(d->loop, &d->io);
}

/* Closed while its connect is in progress: its owner hears nothing more, nor does the next
 * owner of the number (on io_uring the ring's connect is cancelled, and its completion is
 * stale). */
static void a_connect_closed_in_progress_reports_nothing(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    in_port_t port;
    int queued[2];
    int l = full_listener(&port, queued);
    struct gh_loop *loop = new_loop();
    struct dialer d = {.loop = loop};
    assert_true(dial_through_loop(&d, port));
    int number = d.io.fd;
    struct step close_step = {.t = {.fn = run_step}, .fn = close_the_dialer, .arg = &d};
    gh_timer_set(loop, &close_step.t, 30);
    run_for(loop, 60);
    assert_int_equal(d.calls, 0);
    int sv[2];
    pair(sv); /* most likely takes the closed socket's number */
    struct watched next = {.io = {.fd = sv[0] == number ? sv[0] : sv[1], .fn = on_ready}};
    assert_true(gh_io_add(loop, &next.io, EPOLLIN, NULL));
    run_for(loop, 60);
    assert_int_equal(d.calls, 0);
    assert_int_equal(next.calls, 0); /* nothing to read, and no stale connect outcome */
    gh_loop_free(loop);
    close(sv[0]);
    close(sv[1]);
    close(queued[0]);
    close(queued[1]);
    close(l);
}

/* A message posted before a turn's events runs before them, and what it stops watching
 * hears nothing more of that turn (on epoll the turn's events were fetched before it ran). */
static bool message_ran;
static struct watched *to_close;

static void on_message(struct gh_loop *loop, void *arg)
{
    (void)arg;
    message_ran = true;
    gh_io_close(loop, &to_close->io);
}

static int seen_after_message;
static void on_ready_after_message(struct gh_io *io, uint32_t events)
{
    seen_after_message += message_ran;
    on_ready(io, events);
}

static void a_message_posted_first_runs_before_the_turns_events(enum gh_loop_backend b)
{
    if (!use(b))
        skip();
    struct gh_loop *loop = new_loop();
    int sa[2], sb[2];
    pair(sa);
    pair(sb);
    struct watched a = {.io = {.fd = sa[0], .fn = on_ready_after_message}, .read_each = 1};
    struct watched gone = {.io = {.fd = sb[0], .fn = on_ready}, .read_each = 1};
    assert_true(gh_io_add(loop, &a.io, EPOLLIN, NULL));
    assert_true(gh_io_add(loop, &gone.io, EPOLLIN, NULL));
    /* all three before the loop's first wait: on epoll it returns them in one batch */
    message_ran = false;
    seen_after_message = 0;
    to_close = &gone;
    assert_int_equal(write(sa[1], "x", 1), 1);
    assert_int_equal(write(sb[1], "x", 1), 1);
    assert_true(gh_loop_post(loop, on_message, NULL));
    run_for(loop, 30);
    assert_int_equal(a.calls, 1);
    assert_int_equal(seen_after_message, 1); /* the message had run */
    assert_int_equal(gone.calls, 0);         /* closed by it: its event was not delivered */
    gh_loop_free(loop);
    close(sa[0]);
    close(sa[1]);
    close(sb[1]);
}

#define BOTH(fn)                                                                                   \
    static void fn##_epoll(void **s)                                                               \
    {                                                                                              \
        (void)s;                                                                                   \
        fn(GH_BACKEND_EPOLL);                                                                      \
    }                                                                                              \
    static void fn##_io_uring(void **s)                                                            \
    {                                                                                              \
        (void)s;                                                                                   \
        fn(GH_BACKEND_IO_URING);                                                                   \
    }

BOTH(level_reports_while_data_remains)
BOTH(no_events_report_nothing_until_asked)
BOTH(edge_reports_only_new_data)
BOTH(mod_and_del)
BOTH(close_ends_the_socket_for_the_peer)
BOTH(messages_from_another_thread)
BOTH(reads_and_writes_through_the_loop)
BOTH(a_close_waits_for_every_byte_written)
BOTH(ring_off_hands_the_socket_back_in_order)
BOTH(room_after_a_hand_back_is_reported)
BOTH(accepts_hand_over_connections_with_their_address)
BOTH(accepts_switched_off_lose_no_connection)
BOTH(connects_report_their_outcome)
BOTH(many_connects_in_one_turn_all_report)
BOTH(a_connect_closed_in_progress_reports_nothing)
BOTH(a_burst_larger_than_the_buffers_grows_them)
BOTH(a_message_posted_first_runs_before_the_turns_events)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(level_reports_while_data_remains_epoll),
        cmocka_unit_test(level_reports_while_data_remains_io_uring),
        cmocka_unit_test(edge_reports_only_new_data_epoll),
        cmocka_unit_test(edge_reports_only_new_data_io_uring),
        cmocka_unit_test(no_events_report_nothing_until_asked_epoll),
        cmocka_unit_test(no_events_report_nothing_until_asked_io_uring),
        cmocka_unit_test(mod_and_del_epoll),
        cmocka_unit_test(mod_and_del_io_uring),
        cmocka_unit_test(close_ends_the_socket_for_the_peer_epoll),
        cmocka_unit_test(close_ends_the_socket_for_the_peer_io_uring),
        cmocka_unit_test(rearmed_timers_fire_at_their_new_time_epoll),
        cmocka_unit_test(rearmed_timers_fire_at_their_new_time_io_uring),
        cmocka_unit_test(a_nearer_deadline_set_while_waiting_fires_on_time_epoll),
        cmocka_unit_test(a_nearer_deadline_set_while_waiting_fires_on_time_io_uring),
        cmocka_unit_test(many_timers_fire_in_deadline_order_epoll),
        cmocka_unit_test(many_timers_fire_in_deadline_order_io_uring),
        cmocka_unit_test(messages_from_another_thread_epoll),
        cmocka_unit_test(messages_from_another_thread_io_uring),
        cmocka_unit_test(reads_and_writes_through_the_loop_epoll),
        cmocka_unit_test(reads_and_writes_through_the_loop_io_uring),
        cmocka_unit_test(a_close_waits_for_every_byte_written_epoll),
        cmocka_unit_test(a_close_waits_for_every_byte_written_io_uring),
        cmocka_unit_test(ring_off_hands_the_socket_back_in_order_epoll),
        cmocka_unit_test(ring_off_hands_the_socket_back_in_order_io_uring),
        cmocka_unit_test(room_after_a_hand_back_is_reported_epoll),
        cmocka_unit_test(room_after_a_hand_back_is_reported_io_uring),
        cmocka_unit_test(accepts_hand_over_connections_with_their_address_epoll),
        cmocka_unit_test(accepts_hand_over_connections_with_their_address_io_uring),
        cmocka_unit_test(accepts_switched_off_lose_no_connection_epoll),
        cmocka_unit_test(accepts_switched_off_lose_no_connection_io_uring),
        cmocka_unit_test(connects_report_their_outcome_epoll),
        cmocka_unit_test(connects_report_their_outcome_io_uring),
        cmocka_unit_test(many_connects_in_one_turn_all_report_epoll),
        cmocka_unit_test(many_connects_in_one_turn_all_report_io_uring),
        cmocka_unit_test(a_connect_closed_in_progress_reports_nothing_epoll),
        cmocka_unit_test(a_connect_closed_in_progress_reports_nothing_io_uring),
        cmocka_unit_test(a_burst_larger_than_the_buffers_grows_them_epoll),
        cmocka_unit_test(a_burst_larger_than_the_buffers_grows_them_io_uring),
        cmocka_unit_test(a_message_posted_first_runs_before_the_turns_events_epoll),
        cmocka_unit_test(a_message_posted_first_runs_before_the_turns_events_io_uring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
