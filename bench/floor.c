/*
 * floor: the smallest server for the benchmark's SMTP session, to show what the kernel alone
 * costs: accept, send "220", read a line (QUIT), send "221", close. With --relay PORT it is
 * instead the smallest front door: accept, connect to PORT, and move bytes both ways until
 * either side ends (the backend's greeting reaches the client through it). No features, no
 * checks beyond what keeps it running; one thread per --threads, each with its own
 * SO_REUSEPORT socket.
 *
 *   floor --engine epoll|io_uring --port P [--relay PORT] [--threads N]
 *
 * epoll: edge-triggered, the greeting sent straight after accept. io_uring: one accept in
 * flight per thread (re-armed on completion), the greeting and the read queued together, the
 * reply linked to the close; every turn is one io_uring_submit_and_wait.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char GREETING[] = "220 floor ESMTP\r\n", BYE[] = "221 bye\r\n";
static int port, relay_port, nthreads = 1;
static bool use_uring;

/* Blocking for io_uring: on a non-blocking socket its accept completes at once with EAGAIN
 * instead of waiting inside the ring. */
static int listen_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (use_uring ? 0 : SOCK_NONBLOCK), 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0) {
        perror("floor: listen");
        exit(1);
    }
    return fd;
}

static int backend_socket(bool nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    return fd;
}

static struct sockaddr_in backend_addr(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)relay_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* ---- epoll ---- */

struct econn {
    int fd;              /* -1 once closed */
    struct econn *other; /* the other leg of a relay */
    struct econn *next_free;
};

/* Freed after the batch: a later event of the same batch may name either leg. */
static _Thread_local struct econn *to_free;

static void epoll_close(struct econn *c)
{
    if (c->other && c->other->fd >= 0) {
        close(c->other->fd);
        c->other->fd = -1;
        c->other->next_free = to_free;
        to_free = c->other;
    }
    close(c->fd);
    c->fd = -1;
    c->next_free = to_free;
    to_free = c;
}

static void *epoll_thread(void *arg)
{
    (void)arg;
    int lfd = listen_socket(), ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[256];
    char buf[16384];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct econn *c = evs[i].data.ptr;
            if (c && c->fd < 0)
                continue;
            if (!c) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                c = calloc(1, sizeof *c);
                c->fd = fd;
                if (relay_port) {
                    struct econn *b = calloc(1, sizeof *b);
                    struct sockaddr_in a = backend_addr();
                    b->fd = backend_socket(true);
                    connect(b->fd, (struct sockaddr *)&a, sizeof a); /* EINPROGRESS */
                    b->other = c;
                    c->other = b;
                    ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.ptr = b};
                    epoll_ctl(ep, EPOLL_CTL_ADD, b->fd, &ev);
                } else {
                    send(fd, GREETING, sizeof GREETING - 1, MSG_NOSIGNAL);
                }
                ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                continue;
            }
            for (;;) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r <= 0) {
                    epoll_close(c);
                    break;
                }
                if (c->other && c->other->fd >= 0) {
                    send(c->other->fd, buf, (size_t)r, MSG_NOSIGNAL);
                } else if (memchr(buf, '\n', (size_t)r)) {
                    send(c->fd, BYE, sizeof BYE - 1, MSG_NOSIGNAL);
                    epoll_close(c);
                    break;
                }
            }
        }
        while (to_free) {
            struct econn *c = to_free;
            to_free = c->next_free;
            free(c);
        }
    }
    return NULL;
}

/* ---- io_uring ---- */

enum op { OP_RECV, OP_SEND, OP_CONNECT, OP_CLOSE };

struct uleg {
    struct uconn *conn;
    int fd;
    char buf[4096];
};
struct uconn {
    struct uleg leg[2]; /* 0: client, 1: backend (relay only) */
    int pending;        /* operations in flight */
    bool closing;
};

#define UD(leg, op) ((uint64_t)(uintptr_t)(leg) | (op))
#define UD_ACCEPT   1ull

static struct io_uring_sqe *sqe_of(struct io_uring *ring)
{
    struct io_uring_sqe *s;
    while (!(s = io_uring_get_sqe(ring)))
        io_uring_submit(ring);
    return s;
}

static void u_recv(struct io_uring *ring, struct uleg *l)
{
    struct io_uring_sqe *s = sqe_of(ring);
    io_uring_prep_recv(s, l->fd, l->buf, sizeof l->buf, 0);
    io_uring_sqe_set_data64(s, UD(l, OP_RECV));
    l->conn->pending++;
}

static void u_send(struct io_uring *ring, struct uleg *l, int fd, const void *p, size_t n,
                   unsigned flags)
{
    struct io_uring_sqe *s = sqe_of(ring);
    io_uring_prep_send(s, fd, p, n, MSG_NOSIGNAL);
    s->flags |= flags;
    io_uring_sqe_set_data64(s, UD(l, OP_SEND));
    l->conn->pending++;
}

static void u_close_leg(struct io_uring *ring, struct uleg *l)
{
    struct io_uring_sqe *s = sqe_of(ring);
    io_uring_prep_close(s, l->fd);
    io_uring_sqe_set_data64(s, UD(l, OP_CLOSE));
    l->conn->pending++;
}

static void u_end(struct io_uring *ring, struct uconn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    /* shutdown ends the other leg's pending receive; the closes follow */
    shutdown(c->leg[0].fd, SHUT_RDWR);
    u_close_leg(ring, &c->leg[0]);
    if (relay_port) {
        shutdown(c->leg[1].fd, SHUT_RDWR);
        u_close_leg(ring, &c->leg[1]);
    }
}

static void u_accept(struct io_uring *ring, int lfd)
{
    struct io_uring_sqe *s = sqe_of(ring);
    io_uring_prep_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, UD_ACCEPT);
}

static void u_accepted(struct io_uring *ring, int fd)
{
    struct uconn *c = calloc(1, sizeof *c);
    c->leg[0] = (struct uleg){.conn = c, .fd = fd};
    if (!relay_port) {
        u_send(ring, &c->leg[0], fd, GREETING, sizeof GREETING - 1, 0);
        u_recv(ring, &c->leg[0]);
        return;
    }
    static struct sockaddr_in a;
    a = backend_addr();
    c->leg[1] = (struct uleg){.conn = c, .fd = backend_socket(false)};
    struct io_uring_sqe *s = sqe_of(ring);
    io_uring_prep_connect(s, c->leg[1].fd, (struct sockaddr *)&a, sizeof a);
    io_uring_sqe_set_data64(s, UD(&c->leg[1], OP_CONNECT));
    c->pending++;
    u_recv(ring, &c->leg[0]);
}

static void u_complete(struct io_uring *ring, struct io_uring_cqe *cqe)
{
    struct uleg *l = (struct uleg *)(uintptr_t)(cqe->user_data & ~7ull);
    enum op op = (enum op)(cqe->user_data & 7);
    struct uconn *c = l->conn;
    c->pending--;
    if (op == OP_CONNECT) {
        if (cqe->res < 0)
            u_end(ring, c);
        else
            u_recv(ring, l);
    } else if (op == OP_RECV && !c->closing) {
        if (cqe->res <= 0) {
            u_end(ring, c);
        } else if (relay_port) {
            struct uleg *to = &c->leg[l == &c->leg[0]];
            /* the send copies out of l->buf before the next receive into it is queued */
            u_send(ring, l, to->fd, l->buf, (size_t)cqe->res, IOSQE_IO_LINK);
            u_recv(ring, l);
        } else if (memchr(l->buf, '\n', (size_t)cqe->res)) {
            c->closing = true;
            u_send(ring, l, l->fd, BYE, sizeof BYE - 1, IOSQE_IO_LINK);
            u_close_leg(ring, l);
        } else {
            u_recv(ring, l);
        }
    }
    if (c->closing && !c->pending)
        free(c);
}

static void *uring_thread(void *arg)
{
    (void)arg;
    int lfd = listen_socket();
    struct io_uring ring;
    /* as the daemon's engine: requests finish when the thread enters, not by interrupting it */
    struct io_uring_params params = {.flags = IORING_SETUP_COOP_TASKRUN};
    if (io_uring_queue_init_params(4096, &ring, &params) < 0) {
        fprintf(stderr, "floor: io_uring_queue_init failed\n");
        exit(1);
    }
    u_accept(&ring, lfd);
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            n++;
            if (cqe->user_data == UD_ACCEPT) {
                if (cqe->res >= 0)
                    u_accepted(&ring, cqe->res);
                u_accept(&ring, lfd); /* one accept per wake-up */
            } else {
                u_complete(&ring, cqe);
            }
        }
        io_uring_cq_advance(&ring, n);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--engine"))
            use_uring = !strcmp(argv[i + 1], "io_uring");
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--relay"))
            relay_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            nthreads = atoi(argv[i + 1]);
    }
    if (!port || nthreads < 1) {
        fprintf(stderr, "usage: floor --engine epoll|io_uring --port P [--relay PORT] "
                        "[--threads N]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pthread_t t[64];
    for (int i = 0; i < nthreads && i < 64; i++)
        pthread_create(&t[i], NULL, use_uring ? uring_thread : epoll_thread, NULL);
    pthread_join(t[0], NULL);
    return 0;
}
