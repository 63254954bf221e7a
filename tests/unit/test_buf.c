/*
 * test_buf: a buffer's blocks. A freed block of 1 to 32 KiB is kept by its thread for the
 * next buffer of the same size (not under AddressSanitizer, which must see every reuse);
 * bigger ones go back to malloc. Contents survive growth and compaction.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/mem.h"

/* The block a buffer of n bytes gets, freed, while a malloc of the same size comes between
 * (which would take it back from malloc's free lists had it gone there): the next buffer's. */
static void *block_after_free(size_t n, void **freed)
{
    struct gh_buf b = {0};
    assert_true(gh_buf_reserve(&b, n));
    *freed = b.data;
    gh_buf_free(&b);
    void *between = gh_zalloc(n); /* touched, so the compiler keeps the pair */
    assert_true(gh_buf_reserve(&b, n));
    void *again = b.data;
    gh_buf_free(&b);
    free(between);
    return again;
}

static void freed_blocks_of_each_size_are_taken_again(void **state)
{
    (void)state;
    if (!GH_KEEP_SPARES)
        skip();
    for (size_t kib = 1; kib <= 32; kib *= 2) {
        void *freed, *again = block_after_free(kib * 1024, &freed);
        assert_ptr_equal(again, freed);
    }
    /* past the biggest class, 32 KiB, a block goes back to malloc: the one in between takes it */
    void *big_freed, *big_again = block_after_free(64 * 1024, &big_freed);
    assert_ptr_not_equal(big_again, big_freed);
    /* a request between two sizes takes the bigger block: 3 KiB comes in 4 */
    void *freed, *again = block_after_free(3 * 1024, &freed);
    assert_ptr_equal(again, freed);
    struct gh_buf b = {0};
    assert_true(gh_buf_reserve(&b, 3 * 1024));
    assert_int_equal(b.cap, 4 * 1024);
    gh_buf_free(&b);
    gh_buf_cache_drain();
}

static void growth_keeps_the_bytes(void **state)
{
    (void)state;
    struct gh_buf b = {0};
    assert_true(gh_buf_append(&b, "hello ", 6));
    gh_buf_consume(&b, 1);
    char big[5000];
    memset(big, 'x', sizeof big);
    assert_true(gh_buf_append(&b, big, sizeof big));
    assert_int_equal(gh_buf_len(&b), 5 + sizeof big);
    assert_memory_equal(gh_buf_head(&b), "ello ", 5);
    assert_int_equal(b.cap, 8 * 1024);
    gh_buf_free(&b);
    gh_buf_cache_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(freed_blocks_of_each_size_are_taken_again),
        cmocka_unit_test(growth_keeps_the_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
