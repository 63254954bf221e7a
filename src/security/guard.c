/*
 * guard: what the workers do with the address table and the counters. The table is read
 * through one atomic pointer protected by hazard slots (a reader announces the table it
 * holds; the control side frees a replaced table only once no slot names it), so the
 * accept path takes no lock. The counters are fixed-size tables of atomics shared by every
 * worker: SO_REUSEPORT spreads one address's connections over the workers, so per-worker
 * counts would let an address have workers × the limit. Fixed size bounds memory; a new
 * address evicts the least recently seen one of its bucket.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "security/security.h"
#include "security/table-t.h"

/* ---- the published table ---- */

#define MAX_READERS 256 /* threads reading the table at the same time */

static _Atomic(struct gh_sec_table *) current;
static _Atomic(struct gh_sec_table *) hazards[MAX_READERS];
static atomic_bool slot_taken[MAX_READERS];
static _Thread_local int my_slot = -1; /* -1: none yet */
static pthread_key_t slot_key;         /* gives the slot back when its thread ends */
static bool slot_key_ok;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;

/* Replaced tables waiting for their last reader. Control side only. */
static pthread_mutex_t retired_mu = PTHREAD_MUTEX_INITIALIZER;
static struct gh_sec_table **retired;
static size_t nretired, capretired;

static void slot_release(void *value)
{
    int s = (int)(intptr_t)value - 1;
    atomic_store(&hazards[s], NULL);
    atomic_store(&slot_taken[s], false);
}

static void make_slot_key(void)
{
    /* without a key (out of keys) a slot stays with its thread until the process ends */
    slot_key_ok = pthread_key_create(&slot_key, slot_release) == 0;
}

static bool claim_slot(void)
{
    pthread_once(&slot_key_once, make_slot_key);
    for (int i = 0; i < MAX_READERS; i++) {
        bool free_slot = false;
        if (atomic_compare_exchange_strong(&slot_taken[i], &free_slot, true)) {
            my_slot = i;
            if (slot_key_ok)
                pthread_setspecific(slot_key, (void *)(intptr_t)(i + 1));
            return true;
        }
    }
    return false;
}

/* The published table, announced in this thread's hazard slot; NULL when there is none
 * (or more than MAX_READERS threads read at once: such a thread sees no rules). */
static const struct gh_sec_table *hold(void)
{
    if (my_slot < 0 && !claim_slot())
        return NULL;
    struct gh_sec_table *t;
    do {
        t = atomic_load(&current);
        atomic_store(&hazards[my_slot], t);
    } while (t != atomic_load(&current));
    return t;
}

static void unhold(void)
{
    if (my_slot >= 0)
        atomic_store(&hazards[my_slot], NULL);
}

static bool held_by_reader(const struct gh_sec_table *t)
{
    for (int i = 0; i < MAX_READERS; i++)
        if (atomic_load(&hazards[i]) == t)
            return true;
    return false;
}

void gh_security_reclaim(void)
{
    pthread_mutex_lock(&retired_mu);
    size_t k = 0;
    for (size_t i = 0; i < nretired; i++) {
        if (held_by_reader(retired[i]))
            retired[k++] = retired[i];
        else
            gh_sec_table_free(retired[i]);
    }
    nretired = k;
    pthread_mutex_unlock(&retired_mu);
}

void gh_security_publish(struct gh_sec_table *t)
{
    struct gh_sec_table *old = atomic_exchange(&current, t);
    if (old) {
        pthread_mutex_lock(&retired_mu);
        if (nretired == capretired) {
            size_t cap = capretired ? capretired * 2 : 8;
            struct gh_sec_table **r = realloc(retired, cap * sizeof *r);
            if (r) {
                retired = r;
                capretired = cap;
            }
        }
        if (nretired < capretired)
            retired[nretired++] = old;
        /* else: out of memory; leaking one table is better than freeing one in use */
        pthread_mutex_unlock(&retired_mu);
    }
    gh_security_reclaim();
}

void gh_security_shutdown(void)
{
    gh_sec_table_free(atomic_exchange(&current, NULL));
    pthread_mutex_lock(&retired_mu);
    for (size_t i = 0; i < nretired; i++)
        gh_sec_table_free(retired[i]);
    free(retired);
    retired = NULL;
    nretired = capretired = 0;
    pthread_mutex_unlock(&retired_mu);
    struct gh_sec_ban *b = gh_security_take_bans();
    while (b) {
        struct gh_sec_ban *next = b->next;
        free(b);
        b = next;
    }
}

int64_t gh_security_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + 1;
}

/* ---- keys: an address (IPv6 by /64) or a login name, hashed with a per-process seed so
 * nobody can aim addresses at one bucket ---- */

enum key_kind { KEY_LOITER, KEY_SCAN, KEY_AUTH, KEY_LOGIN, KEY_CONN_RATE, KEY_PER_IP };

static uint64_t seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void make_seed(void)
{
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
        seed = (uint64_t)mono_ms() * 0x9E3779B97F4A7C15ull;
}

static uint64_t hash_bytes(enum key_kind kind, const uint8_t *p, size_t n)
{
    pthread_once(&seed_once, make_seed);
    uint64_t h = seed ^ ((uint64_t)(kind + 1) * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h ? h : 1;
}

/* The bytes that identify a client: its IPv4 address, or the /64 of its IPv6 one. */
static size_t client_bytes(const struct sockaddr *sa, const uint8_t **p)
{
    if (sa->sa_family == AF_INET) {
        *p = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        return 4;
    }
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
        *p = &a6->s6_addr[12];
        return 4;
    }
    *p = a6->s6_addr;
    return 8;
}

static uint64_t client_key(const struct sockaddr *sa, enum key_kind kind)
{
    const uint8_t *p;
    size_t n = client_bytes(sa, &p);
    return hash_bytes(kind, p, n);
}

/* ---- event counters: 4-way buckets, least recently seen evicted ---- */

#define WAYS 4

struct counter {
    _Atomic uint64_t key;      /* 0 = empty */
    _Atomic uint64_t start_ms; /* the window began (monotonic) */
    _Atomic uint64_t last_ms;  /* last event, for eviction */
    _Atomic uint32_t count;
};

static struct counter counters[GH_SEC_COUNTER_SLOTS];

/* The slot a new key takes: an empty one, else the least recently seen. */
static struct counter *victim(struct counter *b)
{
    struct counter *v = &b[0];
    for (int i = 0; i < WAYS; i++) {
        if (!atomic_load(&b[i].key))
            return &b[i];
        if (atomic_load(&b[i].last_ms) < atomic_load(&v->last_ms))
            v = &b[i];
    }
    return v;
}

/* One more event in a key's slot, starting the window again once period_ms has passed. */
static uint32_t bump(struct counter *s, uint64_t now, uint64_t period_ms)
{
    uint64_t start = atomic_load(&s->start_ms);
    /* another thread may have begun the window after this one read the clock: compared
     * this way, that start is not taken for one long past */
    if (now >= start + period_ms && atomic_compare_exchange_strong(&s->start_ms, &start, now))
        atomic_store(&s->count, 0);
    atomic_store(&s->last_ms, now);
    return atomic_fetch_add(&s->count, 1) + 1;
}

/* Counts one event under key in a fixed window of period_ms that starts with the first
 * event; returns the count so far in the window. A key's first event always counts 1, even
 * when another thread takes a slot of the bucket at the same moment: a rate of one (ban the
 * first offence) depends on it. A claim lost to another thread looks again, so this is
 * lock-free, not wait-free. Two threads making one key's slot at once may count one event
 * short, and a key evicted under a racing thread loses its count, as eviction does anyway. */
static uint32_t count_event(uint64_t key, uint64_t period_ms)
{
    uint64_t now = mono_ms();
    struct counter *b = &counters[(key % (GH_SEC_COUNTER_SLOTS / WAYS)) * WAYS];
    for (;;) {
        for (int i = 0; i < WAYS; i++)
            if (atomic_load_explicit(&b[i].key, memory_order_acquire) == key)
                return bump(&b[i], now, period_ms);
        struct counter *v = victim(b);
        uint64_t old = atomic_load(&v->key);
        atomic_store(&v->last_ms, now); /* claimed: not the next victim of a racing thread */
        if (atomic_compare_exchange_strong(&v->key, &old, key)) {
            atomic_store(&v->start_ms, now);
            atomic_store(&v->count, 1);
            return 1;
        }
    }
}

/* ---- per-address connection counts: one 64-bit word per slot, key (48 bits) and count
 * (16 bits) changed together by compare-and-swap, linear probing over 8 slots ---- */

#define PROBE      8
#define COUNT_MASK 0xffffull

static _Atomic uint64_t conns[GH_SEC_CONN_SLOTS];

/* Takes one of max slots for key: the slot + 1, 0 when not counted (no room nearby), and
 * *refused when the address already holds max connections. */
static uint32_t conn_take(uint64_t key, uint32_t max, bool *refused)
{
    uint64_t k = key & ~COUNT_MASK;
    if (!k)
        k = 1ull << 16;
    size_t base = (size_t)(key % GH_SEC_CONN_SLOTS);
    *refused = false;
    for (int attempt = 0; attempt < 16; attempt++) {
        uint32_t sum = 0;
        long mine = -1, spare = -1;
        for (size_t i = 0; i < PROBE; i++) {
            size_t idx = (base + i) % GH_SEC_CONN_SLOTS;
            uint64_t w = atomic_load(&conns[idx]);
            uint64_t cnt = w & COUNT_MASK;
            if (cnt && (w & ~COUNT_MASK) == k) {
                sum += (uint32_t)cnt;
                if (mine < 0 && cnt < COUNT_MASK)
                    mine = (long)idx;
            } else if (!cnt && spare < 0) {
                spare = (long)idx;
            }
        }
        if (sum >= max) {
            *refused = true;
            return 0;
        }
        long idx = mine >= 0 ? mine : spare;
        if (idx < 0)
            return 0;
        uint64_t w = atomic_load(&conns[idx]);
        uint64_t cnt = w & COUNT_MASK;
        bool same = mine >= 0 ? cnt && (w & ~COUNT_MASK) == k : !cnt;
        if (same && atomic_compare_exchange_strong(&conns[idx], &w, (cnt ? w : k) + 1))
            return (uint32_t)idx + 1;
    }
    return 0;
}

/* ---- ban requests: a lock-free stack the control side empties ---- */

#define MAX_QUEUED 4096

static _Atomic(struct gh_sec_ban *) queue;
static atomic_uint queued;
static _Atomic(void (*)(void)) wake;

void gh_security_set_wake(void (*fn)(void))
{
    atomic_store(&wake, fn);
}

static void queue_ban(const struct sockaddr *sa, enum gh_sec_event reason, uint64_t period_ms)
{
    if (atomic_fetch_add(&queued, 1) >= MAX_QUEUED) {
        atomic_fetch_sub(&queued, 1); /* the control side is far behind: drop, never grow */
        return;
    }
    struct gh_sec_ban *b = calloc(1, sizeof *b);
    if (!b) {
        atomic_fetch_sub(&queued, 1);
        return;
    }
    const uint8_t *p;
    size_t n = client_bytes(sa, &p);
    b->mask.family = n == 4 ? AF_INET : AF_INET6;
    memcpy(b->mask.addr, p, n);
    b->mask.prefix = n == 4 ? 32 : 64;
    b->reason = reason;
    b->period_ms = period_ms;
    struct gh_sec_ban *head = atomic_load(&queue);
    do
        b->next = head;
    while (!atomic_compare_exchange_weak(&queue, &head, b));
    void (*fn)(void) = atomic_load(&wake);
    if (!head && fn)
        fn();
}

struct gh_sec_ban *gh_security_take_bans(void)
{
    struct gh_sec_ban *b = atomic_exchange(&queue, NULL), *fifo = NULL;
    unsigned n = 0;
    while (b) {
        struct gh_sec_ban *next = b->next;
        b->next = fifo;
        fifo = b;
        b = next;
        n++;
    }
    atomic_fetch_sub(&queued, n);
    return fifo;
}

/* ---- what the engine calls ---- */

/* The table's verdict on sa and a copy of the settings, under one hold. */
static enum gh_sec_verdict look(const struct sockaddr *sa, struct gh_sec_settings *s)
{
    const struct gh_sec_table *t = hold();
    if (!t) {
        unhold();
        memset(s, 0, sizeof *s);
        return GH_SEC_UNLISTED;
    }
    *s = t->settings;
    enum gh_sec_verdict v =
        t->nentries ? gh_sec_table_lookup(t, sa, gh_security_now_ms()) : GH_SEC_UNLISTED;
    unhold();
    return v;
}

enum gh_sec_verdict gh_security_lookup(const struct sockaddr *sa)
{
    struct gh_sec_settings s;
    return look(sa, &s);
}

enum gh_sec_admit gh_security_admit(const struct sockaddr *sa, struct gh_sec_ticket *tk)
{
    memset(tk, 0, sizeof *tk);
    struct gh_sec_settings s;
    enum gh_sec_verdict v = look(sa, &s);
    if (v == GH_SEC_BLOCKED)
        return GH_SEC_REFUSE_BLOCKED;
    if (v == GH_SEC_ALLOWED) {
        tk->allowed = true;
        return GH_SEC_ADMIT;
    }
    if (s.conn_rate.count &&
        count_event(client_key(sa, KEY_CONN_RATE), s.conn_rate.period_ms) > s.conn_rate.count)
        return GH_SEC_REFUSE_RATE;
    if (s.max_per_ip) {
        bool refused;
        tk->slot = conn_take(client_key(sa, KEY_PER_IP), s.max_per_ip, &refused);
        if (refused)
            return GH_SEC_REFUSE_PER_IP;
    }
    return GH_SEC_ADMIT;
}

void gh_security_release(struct gh_sec_ticket *tk)
{
    if (tk->slot) {
        atomic_fetch_sub(&conns[tk->slot - 1], 1);
        tk->slot = 0;
    }
}

void gh_security_event(const struct sockaddr *sa, enum gh_sec_event ev)
{
    struct gh_sec_settings s;
    if (look(sa, &s) != GH_SEC_UNLISTED) /* allowed: never banned; blocked: already */
        return;
    struct gh_sec_rate r = s.ban_rate[ev];
    if (r.count && count_event(client_key(sa, (enum key_kind)ev), r.period_ms) == r.count)
        queue_ban(sa, ev, s.ban_period_ms[ev]);
}

void gh_security_auth_failure(const char *addr, const char *login)
{
    struct gh_sockaddr a = {0};
    if (!addr)
        return;
    if (inet_pton(AF_INET, addr, &a.u.v4.sin_addr) == 1)
        a.u.sa.sa_family = AF_INET;
    else if (inet_pton(AF_INET6, addr, &a.u.v6.sin6_addr) == 1)
        a.u.sa.sa_family = AF_INET6;
    else
        return;
    struct gh_sec_settings s;
    if (look(&a.u.sa, &s) != GH_SEC_UNLISTED)
        return;
    struct gh_sec_rate r = s.ban_rate[GH_SEC_AUTH];
    if (!r.count)
        return;
    uint32_t by_addr = count_event(client_key(&a.u.sa, KEY_AUTH), r.period_ms);
    uint32_t by_login =
        login && *login
            ? count_event(hash_bytes(KEY_LOGIN, (const uint8_t *)login, strlen(login)), r.period_ms)
            : 0;
    if (by_addr == r.count || by_login >= r.count)
        queue_ban(&a.u.sa, GH_SEC_AUTH, s.ban_period_ms[GH_SEC_AUTH]);
}

bool gh_security_scan_path(const struct sockaddr *sa, const char *path)
{
    const struct gh_sec_table *t = hold();
    bool hit = false;
    uint64_t period = 0;
    if (t && t->settings.ban_rate[GH_SEC_SCAN].count) {
        for (unsigned i = 0; i < t->npaths && !hit; i++)
            hit = gh_glob_match(t->paths[i], path);
        period = t->settings.ban_period_ms[GH_SEC_SCAN];
    }
    enum gh_sec_verdict v =
        hit && t->nentries ? gh_sec_table_lookup(t, sa, gh_security_now_ms()) : GH_SEC_UNLISTED;
    unhold();
    if (hit && v == GH_SEC_UNLISTED)
        queue_ban(sa, GH_SEC_SCAN, period);
    return hit;
}
