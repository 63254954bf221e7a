/*
 * uring-t: the state shared by the io_uring back end's files (uring.c: polls, receives and
 * the turn; uring_accept.c; uring_send.c). Internal to them; everyone else uses core/uring.h.
 */
#ifndef GH_URING_T_H
#define GH_URING_T_H
#include <liburing.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/uring.h"

#define RX_CHUNK      256  /* provided receive buffers per allocation (1 MiB) */
#define RX_MAX        4096 /* at most, per ring: the buffer ring's entries (a power of two) */
#define RX_BUF_SIZE   4096 /* one TLS record takes a few; a command line, one */
#define RX_GROUP      0
#define TX_CAP        (256 * 1024)     /* queued for one socket before sends say EAGAIN */
#define TX_SPARES     256              /* emptied tx kept for the next socket that writes */
#define UD_INTERNAL   UINT64_MAX       /* closes and cancels: nothing to do when they complete */
#define UD_WAKE       (UINT64_MAX - 1) /* the read of the wake eventfd */
#define UD_LAST       (UINT64_MAX - 2) /* the cancel of everything, when the ring is freed */
#define CONNECT_ADDRS 64               /* connects in one turn whose addresses the ring keeps */
#define GEN_MASK      0x03ffffffu

/* User data: what the request is (top 6 bits), a generation (26 bits), the descriptor. */
enum kind {
    K_POLL,
    K_REMOVE,
    K_REARM,
    K_RECV,
    K_SEND,
    K_KICK,
    K_TAIL,
    K_ACCEPT,
    K_CONNECT,
    K_DEADLINE,
    K_INTERNAL = 63
};

/* The sends of one socket, while it has any: allocated on the first write, freed once all
 * went out, so an idle connection holds none. */
struct tx {
    struct gh_buf sending; /* carried by the send in flight: unchanged until it completes */
    struct gh_buf queued;  /* written since; goes out with the next turn */
    bool send_inflight;    /* a send of `sending` is in the ring */
    bool close_pending;    /* close once the sends are out */
    bool shut_pending;     /* shutdown(SHUT_WR) once the sends are out */
    bool tail_inflight;    /* that close is in the ring (behind the send, or alone) */
    uint32_t gen;          /* of the close in the ring: a completion of another is stale */
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
    bool talked : 1;       /* bytes went either way: the next receive polls first */
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

enum { CONNECT_NONE, CONNECT_INFLIGHT, CONNECT_DONE };

struct watch {
    struct gh_io *io; /* NULL when the descriptor is not watched */
    uint32_t events;  /* as asked, EPOLL* bits */
    uint32_t pmask;   /* of the poll in the ring */
    uint32_t gen;     /* of the poll now in the ring */
    bool armed;       /* a poll for gen is in the ring */
    bool accepts;     /* the ring's list of accepts has an entry for this descriptor */
    uint8_t connect;  /* CONNECT_*: a connect through the ring, under the rio's generation */
    bool arm_pending; /* added this turn: its poll is queued at the turn's end */
    struct rio r;
};

struct gh_uring {
    struct io_uring ring;
    struct watch *watches; /* by descriptor number */
    size_t nwatches;
    uint32_t next_gen;
    int wake_fd;
    uint64_t wake_count;
    struct io_uring_buf_ring *rx_ring;  /* NULL when the kernel took no provided buffers */
    char *rx_chunks[RX_MAX / RX_CHUNK]; /* buffer b is in chunk b / RX_CHUNK */
    unsigned rx_bufs;                   /* provided so far */
    unsigned rx_short;                  /* receives of this turn that found no buffer */
    int *dirty;                         /* descriptors with bytes queued to send this turn */
    size_t ndirty, capdirty;
    int *adding; /* descriptors added this turn, whose polls wait for the turn's end */
    size_t nadding, capadding;
    unsigned sends_inflight;
    /* a tx lives from a socket's write until its sends are out, a few times per session:
     * kept rather than freed, it costs no allocation the next time */
    struct tx *spare_tx[TX_SPARES];
    unsigned nspare_tx;
    struct acc *accs; /* ring accepts, one per listening socket switched to them */
    /* the addresses of the connects queued since the last submit (the kernel reads them
     * when the request is submitted, not when it is queued) */
    struct sockaddr_in6 connect_addrs[CONNECT_ADDRS];
    unsigned nconnect_addrs;
    bool draining; /* the loop has ended: completions are not reported to owners */
    /* The loop's next deadline, as the one timeout request kept in the ring (see
     * gh_uring_wait); 0: none there. The kernel reads the time when it is submitted. */
    uint64_t deadline_ms;
    struct __kernel_timespec deadline_ts;
};

static inline uint64_t user_data(enum kind k, uint32_t gen, int fd)
{
    return (uint64_t)k << 58 | (uint64_t)(gen & GEN_MASK) << 32 | (uint32_t)fd;
}

static inline enum kind ud_kind(uint64_t d)
{
    return (enum kind)(d >> 58);
}

static inline uint32_t ud_gen(uint64_t d)
{
    return (uint32_t)(d >> 32) & GEN_MASK;
}

static inline int ud_fd(uint64_t d)
{
    return (int)(uint32_t)d;
}

static inline bool rio_sends_busy(const struct rio *r)
{
    return r->tx != NULL; /* freed once nothing is left to send */
}

static inline bool rio_has_input(const struct rio *r)
{
    return r->buf1 || r->eof || r->err || r->direct;
}

static inline bool rio_reads(const struct rio *r)
{
    return r->on || r->recv_inflight || rio_has_input(r);
}

static inline bool rio_writes(const struct rio *r)
{
    return r->on || rio_sends_busy(r);
}

static inline bool rio_room(const struct rio *r)
{
    return !r->tx || gh_buf_len(&r->tx->sending) + gh_buf_len(&r->tx->queued) < TX_CAP / 2;
}

/* uring.c */
struct io_uring_sqe *uring_sqe(struct gh_uring *u);
uint32_t uring_gen(struct gh_uring *u);
struct watch *uring_watch(struct gh_uring *u, int fd, bool grow);
struct rio *uring_rio(struct gh_uring *u, const struct gh_io *io);
struct acc *uring_acc(const struct gh_uring *u, int fd, const struct watch *w);
void uring_arm_if_wanted(struct gh_uring *u, int fd, struct watch *w);
void uring_report(struct gh_uring *u, int fd, struct watch *w);
struct watch *uring_take_watch(struct gh_uring *u, struct gh_io *io, uint32_t events);

/* uring_accept.c */
void uring_queue_accept(struct gh_uring *u, int fd, struct acc *a);
void uring_cancel_accept(struct gh_uring *u, int fd, struct acc *a);
void uring_acc_free(struct gh_uring *u, int fd, struct watch *w);
void uring_on_accept(struct gh_uring *u, const struct io_uring_cqe *cqe);
void uring_connect_drop(struct gh_uring *u, int fd, struct watch *w);
void uring_on_connect(struct gh_uring *u, const struct io_uring_cqe *cqe);

/* uring_send.c */
void uring_tx_free(struct gh_uring *u, struct rio *r);
void uring_tx_spares_free(struct gh_uring *u);
void uring_mark_dirty(struct gh_uring *u, int fd, struct rio *r);
void uring_flush_sends(struct gh_uring *u);
void uring_drain_sends(struct gh_uring *u);
void uring_drop_closed_tx(struct gh_uring *u, struct rio *r);
void uring_on_send(struct gh_uring *u, const struct io_uring_cqe *cqe);
void uring_on_tail(struct gh_uring *u, const struct io_uring_cqe *cqe);

#endif
