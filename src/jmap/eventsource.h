/*
 * eventsource: the JMAP push streams (RFC 8620 §7.3) of the management API. Each worker keeps
 * the streams it serves and tells them of every state change the JMAP core reports.
 */
#ifndef GH_EVENTSOURCE_H
#define GH_EVENTSOURCE_H
#include <stdbool.h>

#include "jmap/jmap.h"
#include "proto/http.h"

/* What the client asks for in the stream's query string. */
struct gh_eventsource_params {
    char types[1024]; /* "*" or type names separated by commas */
    bool close_after_state;
    unsigned ping_s; /* 0: no pings; else 1 to 3600 */
};

/* Reads types, closeafter and ping from a query string; false when one is malformed. */
bool gh_eventsource_parse(const char *query, struct gh_eventsource_params *p);

#define GH_EVENTSOURCE_PER_CREDENTIAL 16 /* streams one credential may have open at once */

enum gh_eventsource_opened {
    GH_EVENTSOURCE_OPEN,
    GH_EVENTSOURCE_CREDENTIAL_FULL, /* who has GH_EVENTSOURCE_PER_CREDENTIAL streams open */
    GH_EVENTSOURCE_FULL,            /* this worker serves too many streams */
};

/* Turns the request into a stream for who, whose principal it takes over; the handler then
 * returns GH_HTTP_STREAM. Otherwise nothing is opened and who is left to the caller. */
enum gh_eventsource_opened gh_eventsource_open(struct gh_http_req *r, struct gh_principal *who,
                                               struct gh_eventsource_params *p,
                                               const char *last_event_id);

/* The end of a stream's connection (gh_http_app.stream_end). */
void gh_eventsource_end(void *stream);

/* The push transport of the JMAP core (gh_jmap_set_push): every worker tells its streams. */
void gh_eventsource_push(json_t *states);

#endif
