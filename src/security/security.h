/*
 * security: who may come in. An immutable address table (blocked and allowed ranges, the
 * x:Security settings) that the management side builds and swaps in whole, and the shared
 * counters the engine feeds at accept and on abuse: per-address connections, connection
 * rate, and the loiter / scan / authFailure events whose rates turn into ban requests.
 *
 * Data flows one way: the engine calls in here; ban requests leave through a lock-free
 * queue that the control side drains (it stores them as x:BlockedIp objects). This module
 * knows nothing of objects, JMAP or the store.
 */
#ifndef GH_SECURITY_H
#define GH_SECURITY_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/addr.h"

/* The events that count towards a ban (x:BlockedIp reasons of the same names). */
enum gh_sec_event { GH_SEC_LOITER, GH_SEC_SCAN, GH_SEC_AUTH, GH_SEC_NEVENTS };

/* What the table says of an address. */
enum gh_sec_verdict { GH_SEC_UNLISTED, GH_SEC_ALLOWED, GH_SEC_BLOCKED };

/* The outcome of admission at accept. */
enum gh_sec_admit {
    GH_SEC_ADMIT,
    GH_SEC_REFUSE_BLOCKED, /* an x:BlockedIp covers the address */
    GH_SEC_REFUSE_PER_IP,  /* maxConnectionsPerIp reached */
    GH_SEC_REFUSE_RATE,    /* connectionRate reached */
};

/* A rate: count events within period_ms. count 0 = off. */
struct gh_sec_rate {
    uint32_t count;
    uint64_t period_ms;
};

/* x:Security as the engine sees it. */
struct gh_sec_settings {
    struct gh_sec_rate ban_rate[GH_SEC_NEVENTS]; /* loiter, scan, authFailure */
    uint64_t ban_period_ms[GH_SEC_NEVENTS];      /* 0 = until removed */
    uint32_t max_per_ip;                         /* 0 = no limit */
    struct gh_sec_rate conn_rate;                /* count 0 = no limit */
};

/*
 * The address table: a binary prefix tree per family. A look-up walks at most 32 (IPv4)
 * or 128 (IPv6) nodes whatever the number of entries, and the most specific entry that
 * has not expired wins. Built by one thread, then immutable. Owner: the builder until
 * gh_security_publish takes it.
 */
struct gh_sec_table;

struct gh_sec_table *gh_sec_table_new(void);
/* Adds a range; expires_ms is wall-clock milliseconds (0 = never). When the same range is
 * both allowed and blocked, allowed wins. False when out of memory. */
bool gh_sec_table_add(struct gh_sec_table *t, const struct gh_ipmask *m, bool allowed,
                      int64_t expires_ms);
/* The x:Security settings and scanBanPaths globs (copied). False when out of memory. */
bool gh_sec_table_set_settings(struct gh_sec_table *t, const struct gh_sec_settings *s,
                               const char *const *scan_paths, unsigned npaths);
enum gh_sec_verdict gh_sec_table_lookup(const struct gh_sec_table *t, const struct sockaddr *sa,
                                        int64_t now_ms);
unsigned gh_sec_table_size(const struct gh_sec_table *t);
void gh_sec_table_free(struct gh_sec_table *t);

/* Control side: makes t the table every new look-up sees (takes ownership). The table it
 * replaces is freed once no reader holds it (see gh_security_reclaim). */
void gh_security_publish(struct gh_sec_table *t);
/* Control side: frees replaced tables no reader holds any more. */
void gh_security_reclaim(void);
/* At exit, when no worker runs any more. */
void gh_security_shutdown(void);

/* Wall-clock milliseconds, as expiresAt is compared. */
int64_t gh_security_now_ms(void);

/* The table's verdict on an address now. Any thread. */
enum gh_sec_verdict gh_security_lookup(const struct sockaddr *sa);

/* What admission took, for gh_security_release. Owner: the connection. */
struct gh_sec_ticket {
    uint32_t slot; /* per-address connection slot + 1; 0 = none held */
    bool allowed;  /* an x:AllowedIp covers the client: no per-address rule applies */
};

/* Any worker, at accept (after the PROXY header): the table, then connectionRate, then
 * maxConnectionsPerIp. Lock-free. */
enum gh_sec_admit gh_security_admit(const struct sockaddr *sa, struct gh_sec_ticket *tk);
/* The connection ended: gives back its per-address slot. */
void gh_security_release(struct gh_sec_ticket *tk);

/* Counts one event of the client (IPv6 per /64); reaching the rate queues a ban. */
void gh_security_event(const struct sockaddr *sa, enum gh_sec_event ev);
/* A failed login (management API or front door) from addr (text), counted by address and,
 * when login is given, by login name across addresses: once a login is over the rate,
 * every further failing address is banned. */
void gh_security_auth_failure(const char *addr, const char *login);
/* An HTTP request for path: a path matching a scanBanPaths glob bans the client at once.
 * True when it matched. */
bool gh_security_scan_path(const struct sockaddr *sa, const char *path);

/* A ban the engine asks for. Owner: whoever took it from the queue (free()). */
struct gh_sec_ban {
    struct gh_sec_ban *next;
    struct gh_ipmask mask; /* the address (/32), or its /64 for IPv6 */
    enum gh_sec_event reason;
    uint64_t period_ms; /* 0 = until removed */
};
/* Control side: fn is called (on the worker's thread, once per empty → non-empty change of
 * the queue) so the control side can take the bans at once; NULL: nobody is told. */
void gh_security_set_wake(void (*fn)(void));
/* Control side: every queued ban, oldest first (free each with free()). */
struct gh_sec_ban *gh_security_take_bans(void);

/* Shell-style glob: '*' any run (including '/'), '?' one character, case-sensitive. */
bool gh_glob_match(const char *pattern, const char *text);

/* Counter table sizes, for tests and docs: slots of event counters and of per-address
 * connection counts. */
#define GH_SEC_COUNTER_SLOTS (1u << 16)
#define GH_SEC_CONN_SLOTS    (1u << 16)

#endif
