/*
 * test_splice: a splice leg's pipe — the kernel's 64 KiB at first, fourfold each time one
 * fill takes all of it, up to 1 MiB; growth only while the process's pipes hold at most
 * three quarters of the user's pipe limit (never refused a pipe: splicing beats copying
 * whatever its size); closing a leg gives its pages back; a busy leg's pump stops after 4 MiB.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "net/splice.h"

#define KIB 1024

static int pipe_size(const struct gh_splice_leg *l)
{
    return fcntl(l->wr, F_GETPIPE_SZ);
}

/* A source the leg can splice from: a pipe big enough for the test's writes. */
struct source {
    int rd, wr;
};

static struct source source_open(void)
{
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(fcntl(p[1], F_SETPIPE_SZ, 1024 * KIB), 1024 * KIB);
    return (struct source){p[0], p[1]};
}

static void source_put(const struct source *s, size_t len)
{
    static char chunk[64 * KIB];
    for (size_t done = 0, n; done < len; done += n) {
        n = len - done < sizeof chunk ? len - done : sizeof chunk;
        assert_int_equal(write(s->wr, chunk, n), n);
    }
}

static void source_close(struct source *s)
{
    close(s->rd);
    close(s->wr);
}

/* Puts len bytes at the source and pumps them through the leg to /dev/null. */
static void carry(struct gh_splice_leg *l, const struct source *s, int sink, size_t len)
{
    source_put(s, len);
    assert_int_equal(gh_splice_pump(l, s->rd, sink), (ssize_t)len);
}

static void a_pipe_grows_each_time_a_fill_takes_all_of_it(void **state)
{
    (void)state;
    gh_splice_set_pipe_budget(16384); /* the kernel's default: far from it */
    struct source s = source_open();
    int sink = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(sink >= 0);
    struct gh_splice_leg l = {.rd = -1, .wr = -1};
    assert_true(gh_splice_leg_open(&l));
    assert_int_equal(pipe_size(&l), 64 * KIB);
    carry(&l, &s, sink, 32 * KIB); /* half a pipe: no transfer yet */
    assert_int_equal(pipe_size(&l), 64 * KIB);
    carry(&l, &s, sink, 64 * KIB);
    assert_int_equal(pipe_size(&l), 256 * KIB);
    carry(&l, &s, sink, 256 * KIB);
    assert_int_equal(pipe_size(&l), 1024 * KIB);
    carry(&l, &s, sink, 1024 * KIB); /* full again: 1 MiB is the ceiling */
    assert_int_equal(pipe_size(&l), 1024 * KIB);
    gh_splice_leg_close(&l);
    assert_int_equal(l.rd, -1);
    close(sink);
    source_close(&s);
}

static void growth_stops_at_the_budget(void **state)
{
    (void)state;
    /* 240 pages, a budget of 180: four legs of 16 pages hold 64; growing one to 64 pages takes
     * 48, so two grow (64 + 96 = 160 ≤ 180 < 208) and the others keep the kernel's size */
    gh_splice_set_pipe_budget(240);
    struct source s = source_open();
    int sink = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct gh_splice_leg l[4];
    for (int i = 0; i < 4; i++) {
        l[i] = (struct gh_splice_leg){.rd = -1, .wr = -1};
        assert_true(gh_splice_leg_open(&l[i]));
    }
    int grown = 0;
    for (int i = 0; i < 4; i++) {
        carry(&l[i], &s, sink, 64 * KIB);
        grown += pipe_size(&l[i]) == 256 * KIB;
        carry(&l[i], &s, sink, 64 * KIB); /* still carried, whatever the size */
    }
    assert_int_equal(grown, 2);
    for (int i = 0; i < 4; i++)
        gh_splice_leg_close(&l[i]);
    /* every page given back: the next leg grows again */
    struct gh_splice_leg again = {.rd = -1, .wr = -1};
    assert_true(gh_splice_leg_open(&again));
    carry(&again, &s, sink, 64 * KIB);
    assert_int_equal(pipe_size(&again), 256 * KIB);
    gh_splice_leg_close(&again);
    close(sink);
    source_close(&s);
}

static void a_busy_leg_gives_the_loop_back_after_4_mib(void **state)
{
    (void)state;
    gh_splice_set_pipe_budget(16384);
    int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC),
        sink = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(zero >= 0 && sink >= 0);
    struct gh_splice_leg l = {.rd = -1, .wr = -1};
    assert_true(gh_splice_leg_open(&l));
    /* a source that never runs dry: the pump stops by its own bound, with the pipe empty,
     * after 4 MiB and less than one more pipe (sixteen fills of a 1 MiB pipe would be 16) */
    ssize_t moved = gh_splice_pump(&l, zero, sink);
    assert_true(moved >= 4 << 20);
    assert_true(moved < (4 << 20) + (1 << 20));
    assert_int_equal(l.held, 0);
    gh_splice_leg_close(&l);
    close(zero);
    close(sink);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_pipe_grows_each_time_a_fill_takes_all_of_it),
        cmocka_unit_test(growth_stops_at_the_budget),
        cmocka_unit_test(a_busy_leg_gives_the_loop_back_after_4_mib),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
