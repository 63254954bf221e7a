/*
 * splice: a relay direction as src → pipe → dst with splice(2), both ends non-blocking. The
 * pipe is filled only while it is empty and emptied before src is read again, so a leg holds
 * at most one pipe's worth and the relay's memory stays bounded without any buffer of ours.
 *
 * A pipe starts at the kernel's 64 KiB and grows fourfold, up to 1 MiB (the kernel's
 * pipe-max-size, an unprivileged user's ceiling), each time one fill takes all of it: a leg
 * that keeps its pipe full carries a transfer, and bigger pipes move it in fewer, larger
 * splices (about a fifth less CPU per megabyte at 1 MiB than at 256 KiB, docs/BENCHMARKS.md).
 * Growth is taken from a budget: this process's pipes may hold three quarters of the user's pipe
 * limit (fs.pipe-user-pages-soft). The kernel counts every pipe page of an unprivileged user
 * against it, and past it gives that user's new pipes two pages only, so grown pipes must not be
 * what pushes it there: the last quarter (256 pipes of the kernel's size, at the default limit)
 * is kept for new relays and the user's other processes. Growing only the legs that fill their
 * pipes spends the budget on transfers, not on the idle direction of every relay. Past it pipes
 * keep their size: splicing through even the smallest pipe costs less than copying through user
 * space, so a relay is never refused one.
 */
#include "net/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define SPLICE_CHUNK (1 << 20) /* ask for more than a pipe holds: the pipe bounds it */
#define PUMP_ROUNDS  16        /* a busy leg gives the loop back after this many fills */
#define PUMP_BYTES   (4 << 20) /* or this many bytes, however big its pipe has grown */

#define PIPE_MAX        (1024 * 1024)
#define PIPE_GROWTH     4  /* a full pipe's next size, as a multiple */
#define PIPE_DEF_PAGES  16 /* a new pipe's, on Linux */
#define BUDGET_QUARTERS 3  /* of the user's pipe limit, that this process's pipes may hold */

static atomic_long pipe_pages; /* held by this process's legs */
static atomic_long pages_soft; /* fs.pipe-user-pages-soft; 0: not read yet, -1: no limit */

static long soft_limit(void)
{
    long soft = atomic_load(&pages_soft);
    if (soft)
        return soft;
    FILE *f = fopen("/proc/sys/fs/pipe-user-pages-soft", "r");
    if (!f || fscanf(f, "%ld", &soft) != 1)
        soft = 16384; /* the kernel's default */
    if (f)
        fclose(f);
    if (soft <= 0)
        soft = -1;
    atomic_store(&pages_soft, soft);
    return soft;
}

void gh_splice_set_pipe_budget(long soft_pages)
{
    atomic_store(&pages_soft, soft_pages);
}

/* Takes pages for growing a pipe when the process's pipes stay within the budget with them. */
static bool take_growth(long pages)
{
    long soft = soft_limit(), held = atomic_load(&pipe_pages);
    do {
        if (soft > 0 && (held + pages) * 4 > soft * BUDGET_QUARTERS)
            return false;
    } while (!atomic_compare_exchange_weak(&pipe_pages, &held, held + pages));
    return true;
}

bool gh_splice_leg_open(struct gh_splice_leg *l)
{
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
        return false;
    *l = (struct gh_splice_leg){.rd = p[0], .wr = p[1], .pages = PIPE_DEF_PAGES};
    atomic_fetch_add(&pipe_pages, PIPE_DEF_PAGES);
    return true;
}

/* The last fill took the whole pipe: the leg carries a transfer and its pipe grows, while
 * the budget allows (asked again at its next full fill). A pipe the kernel refused to grow
 * (pipe-max-size lowered) is not asked again. */
static void grow_when_full(struct gh_splice_leg *l)
{
    long page = sysconf(_SC_PAGESIZE), max_pages = PIPE_MAX / page;
    if (l->grow_refused || l->pages >= max_pages || l->held < (size_t)(l->pages * page))
        return;
    long want = l->pages * PIPE_GROWTH < max_pages ? l->pages * PIPE_GROWTH : max_pages;
    if (!take_growth(want - l->pages))
        return;
    if (fcntl(l->wr, F_SETPIPE_SZ, want * page) < 0) {
        atomic_fetch_sub(&pipe_pages, want - l->pages);
        l->grow_refused = true;
        return;
    }
    l->pages = want;
}

void gh_splice_leg_close(struct gh_splice_leg *l)
{
    if (l->rd >= 0)
        close(l->rd);
    if (l->wr >= 0)
        close(l->wr);
    atomic_fetch_sub(&pipe_pages, l->pages);
    l->rd = l->wr = -1;
    l->pages = 0;
}

/* src into the pipe; false on failure. */
static bool fill(struct gh_splice_leg *l, int src)
{
    ssize_t n = splice(src, NULL, l->wr, NULL, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
        l->held += (size_t)n;
        grow_when_full(l);
    } else if (n == 0)
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
        if (round == PUMP_ROUNDS || moved >= PUMP_BYTES)
            break; /* a busy leg gives the loop back, with the pipe empty */
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
