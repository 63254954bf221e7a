/*
 * mem: allocations on the per-session path. Zeroed ones come from malloc: glibc's calloc goes
 * to its arena (a lock and the whole allocator) every time, while malloc is served from the
 * thread's cache of freed blocks, which only malloc takes from again. The empty asm keeps the
 * compiler from turning malloc and memset back into calloc. And whether spare lists keep
 * what is freed for the next session.
 */
#ifndef GH_MEM_H
#define GH_MEM_H
#include <stdlib.h>
#include <string.h>

/* Spare lists (freed objects kept for the next session) stay empty under AddressSanitizer,
 * which must see every use after free. */
#if defined(__SANITIZE_ADDRESS__)
#define GH_KEEP_SPARES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GH_KEEP_SPARES 0
#endif
#endif
#ifndef GH_KEEP_SPARES
#define GH_KEEP_SPARES 1
#endif

static inline void *gh_zalloc(size_t size)
{
    void *p = malloc(size);
    if (p) {
        __asm__ volatile("" : : "r"(p) : "memory");
        memset(p, 0, size);
    }
    return p;
}

#endif
