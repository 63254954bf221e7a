/*
 * mem: zeroed allocations on the per-session path. glibc's calloc goes to its arena (a lock
 * and the whole allocator) every time; malloc is served from the thread's cache of freed
 * blocks, which only malloc takes from again. The empty asm keeps the compiler from
 * turning malloc and memset back into calloc.
 */
#ifndef GH_MEM_H
#define GH_MEM_H
#include <stdlib.h>
#include <string.h>

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
