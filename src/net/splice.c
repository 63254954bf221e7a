/*
 * splice: a relay direction as src → pipe → dst with splice(2), both ends non-blocking. The
 * pipe is filled only while it is empty and emptied before src is read again, so a leg holds
 * at most one pipe's worth (64 KiB by default) and the relay's memory stays bounded without
 * any buffer of ours.
 */
#include "net/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define SPLICE_CHUNK (1 << 20) /* ask for more than a pipe holds: the pipe bounds it */
#define PUMP_ROUNDS  16        /* a busy leg gives the loop back after this many fills */

bool gh_splice_leg_open(struct gh_splice_leg *l)
{
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
        return false;
    *l = (struct gh_splice_leg){.rd = p[0], .wr = p[1]};
    return true;
}

void gh_splice_leg_close(struct gh_splice_leg *l)
{
    if (l->rd >= 0)
        close(l->rd);
    if (l->wr >= 0)
        close(l->wr);
    l->rd = l->wr = -1;
}

/* src into the pipe; false on failure. */
static bool fill(struct gh_splice_leg *l, int src)
{
    ssize_t n = splice(src, NULL, l->wr, NULL, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0)
        l->held += (size_t)n;
    else if (n == 0)
        l->eof = true;
    else if (errno != EAGAIN && errno != EINTR)
        return false;
    return true;
}

/* The pipe into dst; the bytes moved, or -1 on failure. */
static ssize_t drain(struct gh_splice_leg *l, int dst)
{
    ssize_t n = splice(l->rd, NULL, dst, NULL, l->held, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
        l->held -= (size_t)n;
        return n;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
}

ssize_t gh_splice_pump(struct gh_splice_leg *l, int src, int dst)
{
    ssize_t moved = 0;
    l->cut = false;
    for (int round = 0;; round++) {
        if (l->held) {
            ssize_t n = drain(l, dst);
            if (n < 0)
                return -1;
            moved += n;
            if (l->held)
                break; /* dst is full: wait for room */
        }
        if (l->eof)
            break;
        if (round == PUMP_ROUNDS) {
            l->cut = true; /* a busy leg gives the loop back, with the pipe empty */
            break;
        }
        size_t before = l->held;
        if (!fill(l, src))
            return -1;
        if (l->held == before)
            break; /* nothing more from src for now (or it ended) */
    }
    if (l->eof && !l->held && !l->shut) {
        shutdown(dst, SHUT_WR); /* the other side sees the end only after every byte */
        l->shut = true;
    }
    return moved;
}

uint32_t gh_splice_src_events(const struct gh_splice_leg *l)
{
    return !l->eof && !l->held ? EPOLLIN | EPOLLRDHUP : 0;
}

uint32_t gh_splice_dst_events(const struct gh_splice_leg *l)
{
    return l->held ? EPOLLOUT : 0;
}
