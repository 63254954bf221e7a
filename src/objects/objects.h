/*
 * objects: the management object types (NetworkListener, SystemSettings, ApiKey,
 * Certificate, Destination, AcmeProvider): their schema tables, JMAP methods, storage and
 * the hooks that apply them to the engine.
 */
#ifndef GH_OBJECTS_H
#define GH_OBJECTS_H
#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"
#include "jmap/jmap.h"

struct gh_store;
struct gh_engine;

struct gh_objects_options {
    struct gh_store *store;
    struct gh_engine *engine;
    const char *http_bind;    /* address of the bootstrap "http" listener, "127.0.0.1:8080" */
    const char *admin_secret; /* GATEHOUSE_ADMIN_SECRET, or NULL */
};

/*
 * Loads every object, registers the JMAP methods, applies listeners, settings and
 * certificates to the engine. On a first start with an empty store: creates the "http"
 * listener, the administrator secret (printed once when generated) and a self-signed
 * certificate.
 */
bool gh_objects_init(const struct gh_objects_options *opt, gh_err *err);
/* Stops the background work (shared-store catch-up, bind retries) so nothing applies
 * listeners while the engine stops; the objects stay readable for requests in flight. */
void gh_objects_stop_background(void);
void gh_objects_shutdown(void);

/* The lock of everything that changes objects outside a JMAP call (taken after
 * gh_jmap_lock): a binary upgrade holds both while the new process loads the store. */
void gh_objects_lock(void);
void gh_objects_unlock(void);

/* Re-applies certificates and settings from the store (SIGHUP). */
bool gh_objects_reload(gh_err *err);

/* Checks a secret: the administrator secret, or an API key's secret. Fills who. */
bool gh_objects_authenticate(const char *username, const char *secret, struct gh_principal *who);

/* Every object type's schema, as served at GET /api/schema (a new reference). */
json_t *gh_objects_schema(void);

/* Live connection counts for GET /api/status: {"listeners": {"<id>": {"live": N}}}
 * (a new reference). Any thread. */
json_t *gh_objects_listener_status(void);

#endif
