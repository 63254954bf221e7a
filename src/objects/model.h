/*
 * model: what the object types share inside src/objects: the type tables, the store and
 * engine they write to, state strings, lookups in the in-memory copy, and the helpers
 * that name things. Not a public header; the rest of the daemon uses objects.h.
 */
#ifndef GH_OBJECTS_MODEL_H
#define GH_OBJECTS_MODEL_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "jmap/jmap.h"
#include "net/listener-t.h"
#include "objects/objects.h"
#include "objects/schema.h"

struct gh_store;
struct gh_engine;

extern struct gh_objtype gh_type_listener;
extern struct gh_objtype gh_type_settings;
extern struct gh_objtype gh_type_apikey;
extern struct gh_objtype gh_type_certificate;
extern struct gh_objtype gh_type_destination;
extern struct gh_objtype gh_type_acmeprovider;
extern struct gh_objtype gh_type_blocked_ip;
extern struct gh_objtype gh_type_allowed_ip;
extern struct gh_objtype gh_type_security;
extern struct gh_objtype gh_type_authservice;

extern struct gh_objtype gh_type_metrics;

#define GH_NTYPES 11
extern struct gh_objtype *const gh_types[GH_NTYPES];

/* The process's object layer. Owner: objects.c; store and engine belong to main. */
struct gh_model {
    struct gh_store *store;
    struct gh_engine *engine; /* NULL in unit tests: nothing is applied */
    char epoch[16];           /* random per store; part of every state string */
};
extern struct gh_model gh_model;

struct gh_objtype *gh_type_by_name(const char *type);

/* The type's current state string: "EPOCH-SEQ". */
void gh_type_state(const struct gh_objtype *t, char out[64]);
/* Parses a state string of this store; false when it is not one. */
bool gh_state_parse(const char *state, uint64_t *seq);

/* Lookups in t->objs (borrowed references; NULL when absent). */
json_t *gh_obj_find(const struct gh_objtype *t, const char *id, size_t *index);
json_t *gh_obj_find_name(const struct gh_objtype *t, const char *name, const char *except_id);

/* Reloads t->objs from the store. */
bool gh_type_load(struct gh_objtype *t, gh_err *err);

/*
 * Name rules shared by the types that have a unique `name`: a given name must be unique
 * (case-insensitive; a duplicate → alreadyExists with existingId), an omitted one is
 * derived from base ("smtp", "smtp-2", ...).
 */
void gh_name_unique(struct gh_objtype *t, json_t *obj, const json_t *old, const char *base,
                    struct gh_verr *ve);
/* Value check for names: 1-64 characters of A-Za-z0-9._- */
bool gh_check_name(json_t **v, gh_err *err);

/* Fills out with n random bytes; false when the system has none to give. */
bool gh_random(void *out, size_t n);
/* Random text of [a-z2-7] (base32 alphabet, one case), len characters. */
bool gh_random_text(char *out, size_t len);

/* Builds the engine's settings from a stored listener (a new reference-counted conf). */
struct gh_listener_conf *gh_listener_conf_from(const json_t *obj, gh_err *err);

/* Rebuilds the authentication table after the API keys changed. */
void gh_auth_rebuild(void);
void gh_auth_clear(void);
/* Sets up the administrator secret (see apikey.c); prints a generated one once. */
bool gh_admin_secret_init(const char *configured, gh_err *err);
/* Creates the settings singleton when the store has none. */
bool gh_settings_ensure(gh_err *err);
/* Applies every certificate to the TLS layer; logs a failure. */
void gh_certs_apply(void);
/* Hands every destination to the engine, for new hand-offs, and to the health checker. */
void gh_destinations_apply(void);
/* Creates the x:Metrics singleton when the store has none; hands it to the scrape. */
bool gh_metrics_settings_ensure(gh_err *err);
void gh_metrics_settings_apply(void);
/* Connects the health checker's reports to the objects; drops the last set at shutdown. */
void gh_destinations_init(void);
void gh_destinations_release(void);
/* Hands every auth service to the engine, for new logins. */
void gh_auth_services_apply(void);
/* Applies the settings singleton to the engine. */
void gh_settings_apply(void);
/* Rebuilds the listener snapshot behind gh_objects_listener_status. */
void gh_status_rebuild(void);
/* Clears a listener's "could not apply on this node" note after a successful apply. */
void gh_listener_applied(const char *id);

/* Address rules (security.c, access.c): creates the x:Security singleton when the store
 * has none; rebuilds the engine's address table; on the control thread, about once a
 * second, stores the bans the engine asked for and removes expired entries. */
bool gh_security_ensure(gh_err *err);
void gh_security_apply(void);
void gh_security_tick(void);
/* The committed hook of the three types: rebuilds the table, or leaves it to the tick in
 * progress. */
void gh_security_committed(void);

/* UTCDate "YYYY-MM-DDTHH:MM:SSZ" (fractions accepted on input) ↔ wall-clock ms. */
bool gh_utcdate_parse(const char *s, int64_t *ms);
void gh_utcdate_format(int64_t ms, char out[32]);

/* Who runs the /set in progress (NULL outside one, or when the server itself does):
 * validation rules that depend on the caller's address read it. Under the management
 * mutex. */
extern const struct gh_principal *gh_set_caller;

/* Shared store: applies every change other nodes made since the last one seen (under the
 * management mutex), and notes the latest change this node wrote itself. */
void gh_objects_sync(void);
void gh_sync_note(uint64_t seq);

/* JMAP methods, one function per method kind for every type (the type comes from the
 * method name). */
json_t *gh_method_get(struct gh_jmap_call *call, json_t **error);
json_t *gh_method_set(struct gh_jmap_call *call, json_t **error);
json_t *gh_method_query(struct gh_jmap_call *call, json_t **error);
json_t *gh_method_changes(struct gh_jmap_call *call, json_t **error);
json_t *gh_method_query_changes(struct gh_jmap_call *call, json_t **error);

/*
 * Runs a /set on behalf of the server itself (bootstrap): the same checks, side effects
 * and store writes as a client's. args is a /set argument object; returns the response
 * arguments or NULL with *error set.
 */
json_t *gh_objects_set_internal(struct gh_objtype *t, json_t *args, json_t **error);

#endif
