/*
 * eventsource: JMAP push over EventSource (RFC 8620 §7.3). A stream lives on the worker that
 * accepted its connection; every state change the JMAP core reports is broadcast to every
 * worker, which tells each of its streams what that stream may see and has not been told.
 */
#include "jmap/eventsource.h"

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "net/conn.h"
#include "net/engine.h"

#define STREAM_IDLE_MS     (24u * 3600 * 1000) /* an EventSource stream may stay quiet a day */
#define STREAMS_PER_WORKER 4096                /* EventSource streams one worker serves at most */
#define STREAM_CREDENTIALS 256                 /* credentials with streams open at once */
#define PING_MIN_S         1
#define PING_MAX_S         3600

/* Owner: its connection (the HTTP server gives it to gh_eventsource_end); on the worker's
 * thread-local list while open. */
struct stream {
    struct stream *prev, *next;
    struct gh_conn *c;
    struct gh_loop *loop; /* where ping is armed; NULL without one (unit tests) */
    json_t *types;        /* type names asked for; NULL for "*" (owned) */
    json_t *told;         /* type -> state this client was last told (owned) */
    bool close_after_state;
    bool ended;      /* closeafter=state was met: nothing more is sent */
    unsigned ping_s; /* 0: no pings */
    struct gh_timer ping;
    struct gh_principal who;
};

static _Thread_local struct stream *streams; /* the streams served by this thread */
static _Thread_local unsigned nstreams;

/* Open streams per credential, across every worker: touched only when a stream opens or
 * ends. A slot with n == 0 is free. */
static struct {
    char username[sizeof(((struct gh_principal *)0)->username)];
    unsigned n;
} per_credential[STREAM_CREDENTIALS];
static pthread_mutex_t per_credential_lock = PTHREAD_MUTEX_INITIALIZER;

/* Counts a stream for username; false when it has GH_EVENTSOURCE_PER_CREDENTIAL already
 * (or, unlikely, STREAM_CREDENTIALS other credentials hold streams). */
static bool credential_take(const char *username)
{
    pthread_mutex_lock(&per_credential_lock);
    int slot = -1, free_slot = -1;
    for (int i = 0; i < STREAM_CREDENTIALS && slot < 0; i++) {
        if (per_credential[i].n && !strcmp(per_credential[i].username, username))
            slot = i;
        else if (!per_credential[i].n && free_slot < 0)
            free_slot = i;
    }
    if (slot < 0 && free_slot >= 0) {
        slot = free_slot;
        snprintf(per_credential[slot].username, sizeof per_credential[slot].username, "%s",
                 username);
    }
    bool ok = slot >= 0 && per_credential[slot].n < GH_EVENTSOURCE_PER_CREDENTIAL;
    if (ok)
        per_credential[slot].n++;
    pthread_mutex_unlock(&per_credential_lock);
    return ok;
}

static void credential_give(const char *username)
{
    pthread_mutex_lock(&per_credential_lock);
    for (int i = 0; i < STREAM_CREDENTIALS; i++) {
        if (per_credential[i].n && !strcmp(per_credential[i].username, username)) {
            per_credential[i].n--;
            break;
        }
    }
    pthread_mutex_unlock(&per_credential_lock);
}

/* x:NetworkListener is readable with sysNetworkListenerGet. */
static bool stream_may_see(struct stream *s, const char *type)
{
    if (s->types) {
        bool asked = false;
        size_t i;
        json_t *t;
        json_array_foreach(s->types, i, t)
        {
            if (!strcmp(json_string_value(t), type))
                asked = true;
        }
        if (!asked)
            return false;
    }
    if (s->who.admin)
        return true;
    char perm[160];
    snprintf(perm, sizeof perm, "sys%sGet", strncmp(type, "x:", 2) ? type : type + 2);
    return gh_principal_can(&s->who, perm);
}

/* The event id: a digest of every state this stream can see, so a reconnecting client's
 * Last-Event-ID tells whether it missed anything. */
static void stream_event_id(json_t *told, char out[20])
{
    char *text = json_dumps(told, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t x = 0xcbf29ce484222325ULL;
    for (const char *p = text ? text : ""; *p; p++)
        x = (x ^ (unsigned char)*p) * 0x100000001b3ULL;
    free(text);
    snprintf(out, 20, "e%016llx", (unsigned long long)x);
}

/* Writes a state event with changed; afterwards s may be gone when the conn closed. */
static void stream_send(struct stream *s, json_t *changed)
{
    struct gh_conn *c = s->c;
    bool close_after = s->close_after_state;
    char id[20];
    stream_event_id(s->told, id);
    json_t *ev =
        json_pack("{ss s{sO}}", "@type", "StateChange", "changed", GH_JMAP_ACCOUNT_ID, changed);
    char *data = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!data)
        return;
    if (close_after) {
        s->ended = true;
        if (s->loop)
            gh_timer_cancel(s->loop, &s->ping);
    } else if (s->ping_s && s->loop) {
        gh_timer_set(s->loop, &s->ping, (uint64_t)s->ping_s * 1000);
    }
    if (!c->closed)
        gh_conn_set_idle(c, STREAM_IDLE_MS);
    gh_conn_printf(c, "event: state\nid: %s\ndata: %s\n\n", id, data);
    free(data);
    if (close_after && !c->closed)
        gh_conn_close_after_flush(c);
}

/* Tells the stream what changed in states since it was last told. */
static void stream_update(struct stream *s, json_t *states)
{
    if (s->ended)
        return;
    json_t *changed = json_object(), *st;
    const char *type;
    json_object_foreach(states, type, st)
    {
        if (!stream_may_see(s, type))
            continue;
        const char *old = json_string_value(json_object_get(s->told, type));
        if (!old || strcmp(old, json_string_value(st))) {
            /* copies: the snapshot is shared by every worker's thread */
            json_object_set_new(changed, type, json_string(json_string_value(st)));
            json_object_set_new(s->told, type, json_string(json_string_value(st)));
        }
    }
    if (json_object_size(changed))
        stream_send(s, changed);
    json_decref(changed);
}

static void deliver(struct gh_loop *loop, void *arg)
{
    struct stream *s = streams;
    while (s) {
        struct stream *next = s->next;
        stream_update(s, arg);
        s = next;
    }
}

static void free_states(void *arg)
{
    json_decref(arg);
}

void gh_eventsource_push(json_t *states)
{
    if (gh_engine_global)
        gh_engine_broadcast(gh_engine_global, deliver, states, free_states);
    else {
        deliver(NULL, states); /* no engine (unit tests): streams live on this thread */
        json_decref(states);
    }
}

static void on_ping(struct gh_timer *t)
{
    struct stream *s = gh_container_of(t, struct stream, ping);
    struct gh_conn *c = s->c;
    gh_timer_set(s->loop, &s->ping, (uint64_t)s->ping_s * 1000);
    gh_conn_set_idle(c, STREAM_IDLE_MS);
    gh_conn_printf(c, "event: ping\ndata: {\"interval\":%u}\n\n", s->ping_s);
}

void gh_eventsource_end(void *stream)
{
    struct stream *s = stream;
    if (s->prev)
        s->prev->next = s->next;
    else if (streams == s)
        streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    nstreams--;
    credential_give(s->who.username);
    if (s->loop)
        gh_timer_cancel(s->loop, &s->ping);
    json_decref(s->types);
    json_decref(s->told);
    gh_principal_clear(&s->who);
    free(s);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The percent-decoded value of key in a query string, into out; false when absent. */
static bool query_param(const char *query, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, key, klen) || p[klen] != '=')
            continue;
        const char *v = p + klen + 1;
        size_t o = 0;
        for (; *v && *v != '&' && o + 1 < cap; v++) {
            if (*v == '%' && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
                out[o++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                v += 2;
            } else {
                out[o++] = *v == '+' ? ' ' : *v;
            }
        }
        out[o] = '\0';
        return true;
    }
    return false;
}

bool gh_eventsource_parse(const char *query, struct gh_eventsource_params *p)
{
    char closeafter[16] = "no", ping[16] = "0";
    snprintf(p->types, sizeof p->types, "*");
    query_param(query, "types", p->types, sizeof p->types);
    query_param(query, "closeafter", closeafter, sizeof closeafter);
    query_param(query, "ping", ping, sizeof ping);
    char *end;
    long ping_s = strtol(ping, &end, 10);
    bool ping_ok = *ping && !*end && ping_s >= 0 && isdigit((unsigned char)ping[0]);
    if ((strcmp(closeafter, "state") && strcmp(closeafter, "no")) || !ping_ok)
        return false;
    p->close_after_state = !strcmp(closeafter, "state");
    p->ping_s = ping_s == 0           ? 0
                : ping_s < PING_MIN_S ? PING_MIN_S
                : ping_s > PING_MAX_S ? PING_MAX_S
                                      : (unsigned)ping_s;
    return true;
}

enum gh_eventsource_opened gh_eventsource_open(struct gh_http_req *r, struct gh_principal *who,
                                               struct gh_eventsource_params *p, const char *last)
{
    if (nstreams >= STREAMS_PER_WORKER)
        return GH_EVENTSOURCE_FULL;
    if (!credential_take(who->username))
        return GH_EVENTSOURCE_CREDENTIAL_FULL;
    struct stream *s = calloc(1, sizeof *s);
    if (!s) {
        credential_give(who->username);
        return GH_EVENTSOURCE_FULL;
    }
    struct gh_conn *c = r->c;
    s->c = c;
    s->loop = gh_loop_current();
    s->who = *who;
    *who = (struct gh_principal){0};
    s->close_after_state = p->close_after_state;
    s->ping_s = p->ping_s;
    if (strcmp(p->types, "*")) {
        s->types = json_array();
        for (char *save = NULL, *t = strtok_r(p->types, ",", &save); t;
             t = strtok_r(NULL, ",", &save))
            json_array_append_new(s->types, json_string(t));
    }
    /* What the client knows: everything now, unless its Last-Event-ID says otherwise. */
    json_t *states = gh_jmap_states(), *st;
    const char *type;
    s->told = json_object();
    json_object_foreach(states, type, st)
    {
        if (stream_may_see(s, type))
            json_object_set(s->told, type, st);
    }
    json_decref(states);
    s->next = streams;
    if (streams)
        streams->prev = s;
    streams = s;
    nstreams++;

    gh_conn_set_idle(c, STREAM_IDLE_MS);
    s->ping.fn = on_ping;
    if (s->ping_s && s->loop)
        gh_timer_set(s->loop, &s->ping, (uint64_t)s->ping_s * 1000);
    char id[20];
    stream_event_id(s->told, id);
    json_t *missed =
        last && strcmp(last, id) && json_object_size(s->told) ? json_deep_copy(s->told) : NULL;
    /* Writes come last: outside a protocol callback a failed write frees r and s. */
    gh_http_stream(r, s, "text/event-stream",
                   "Cache-Control: no-cache, no-store\r\n"
                   "X-Accel-Buffering: no\r\n");
    if (missed && !c->closed)
        stream_send(s, missed); /* the client missed changes while away */
    json_decref(missed);
    return GH_EVENTSOURCE_OPEN;
}
