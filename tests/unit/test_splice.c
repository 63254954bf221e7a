/*
 * test_splice: a splice leg's pipe — grown to 256 KiB while the process's pipes hold less
 * than half of the user's pipe limit, the kernel's 64 KiB past that (never refused: splicing
 * beats copying whatever the pipe); closing a leg gives its pages back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <unistd.h>

#include "net/splice.h"

#define LEGS 16

static int pipe_size(const struct gh_splice_leg *l)
{
    return fcntl(l->wr, F_GETPIPE_SZ);
}

static void pipes_grow_within_the_budget(void **state)
{
    (void)state;
    gh_splice_set_pipe_budget(16384); /* the kernel's default: far from it */
    struct gh_splice_leg l = {.rd = -1, .wr = -1};
    assert_true(gh_splice_leg_open(&l));
    assert_int_equal(pipe_size(&l), 256 * 1024);
    gh_splice_leg_close(&l);
    assert_int_equal(l.rd, -1);
}

static void pipes_stay_small_past_the_budget(void **state)
{
    (void)state;
    /* 640 pages: grown pipes (64 pages) while the total stays within 320, then default ones
     * (16 pages), however many */
    gh_splice_set_pipe_budget(640);
    struct gh_splice_leg l[LEGS];
    int grown = 0, small = 0, opened = 0;
    for (int i = 0; i < LEGS; i++) {
        l[i] = (struct gh_splice_leg){.rd = -1, .wr = -1};
        if (!gh_splice_leg_open(&l[i]))
            continue;
        opened++;
        if (pipe_size(&l[i]) == 256 * 1024)
            grown++;
        else if (pipe_size(&l[i]) == 64 * 1024)
            small++;
    }
    assert_int_equal(grown, 5); /* 5 × 64 = 320 pages */
    assert_int_equal(small, LEGS - 5);
    assert_int_equal(opened, LEGS);
    for (int i = 0; i < LEGS; i++)
        gh_splice_leg_close(&l[i]);
    /* every page given back: the next leg grows again */
    struct gh_splice_leg again = {.rd = -1, .wr = -1};
    assert_true(gh_splice_leg_open(&again));
    assert_int_equal(pipe_size(&again), 256 * 1024);
    gh_splice_leg_close(&again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pipes_grow_within_the_budget),
        cmocka_unit_test(pipes_stay_small_past_the_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
