/*
 * schema: each management object type is one table of property descriptors. Validation,
 * defaults, patching, /get output, /query filters and sorts and the schema JSON served at
 * GET /api/schema all read that table, so a property is added by adding one entry.
 */
#ifndef GH_SCHEMA_H
#define GH_SCHEMA_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"

enum gh_ptype {
    GH_PT_ID,
    GH_PT_STRING,
    GH_PT_BOOLEAN,
    GH_PT_UINT,
    GH_PT_DURATION, /* stored and returned as "1m"; input also whole milliseconds */
    GH_PT_ENUM,
    GH_PT_SOCKADDR,
    GH_PT_IPMASK,
    GH_PT_TEXT, /* multi-line (PEM) */
    GH_PT_DATE, /* UTCDate, RFC 3339 */
    GH_PT_RATE, /* {"count": N >= 1, "period": Duration} */
};

enum gh_mutability {
    GH_MUTABLE,
    GH_CREATE_ONLY, /* given at create, never changed afterwards */
    GH_SERVER_SET,  /* computed by the server; accepted in an update only when unchanged */
    GH_WRITE_ONLY,  /* accepted by /set, never returned */
};

enum gh_filter_kind { GH_FILTER_NONE, GH_FILTER_TEXT, GH_FILTER_EQUALS };

struct gh_enum_value {
    const char *value, *label;
};

/* Checks and normalises one value (one member, for lists) after its type was checked;
 * may replace *v. On failure err says what is wrong, without the property's name. */
typedef bool (*gh_value_check_fn)(json_t **v, gh_err *err);

struct gh_prop {
    const char *name;
    enum gh_ptype type;
    bool list, nullable, required;
    const char *def; /* default as JSON text; NULL when there is none */
    enum gh_mutability mut;
    int64_t min, max;                   /* UnsignedInt, Duration (ms); 0 = no bound */
    unsigned min_items, max_items;      /* lists; 0 = no bound */
    unsigned max_len;                   /* String, Text; 0 = 255 (String) or 65536 (Text) */
    const struct gh_enum_value *values; /* Enum: ends with {NULL} */
    const char *label, *group, *description, *rule;
    enum gh_filter_kind filter;
    bool sortable;
    bool once;          /* server-set and returned only in the create response (a secret) */
    bool null_is_value; /* with def: null is a value of its own ("off"), not the default */
    gh_value_check_fn check;
};

/* A validation outcome that becomes one SetError. Owner: the caller (gh_verr_clear). */
struct gh_verr {
    const char *type;  /* "invalidProperties" unless a rule chose another */
    json_t *props;     /* names of the properties concerned */
    char desc[1024];   /* "bind: ...; protocol: ..." */
    char existing[72]; /* alreadyExists: the existing object's id */
};

void gh_verr_init(struct gh_verr *ve);
void gh_verr_clear(struct gh_verr *ve);
bool gh_verr_ok(const struct gh_verr *ve);
/* Records a problem with prop (NULL for none); the type stays invalidProperties unless
 * one was set. */
void gh_verr_add(struct gh_verr *ve, const char *prop, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The SetError object (a new reference). */
json_t *gh_verr_json(const struct gh_verr *ve);

struct gh_objtype;
struct gh_principal;

/* Hooks a type adds to the table. obj is the complete new object (NULL on destroy), old
 * the stored one (NULL on create). */
struct gh_type_hooks {
    /* rules across properties and objects; may fill derived values into obj */
    void (*validate)(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve);
    /* what who may write beyond the per-operation permission (who is never NULL or the
     * administrator here): NULL, or the SetError refusing the create or update */
    json_t *(*authorize)(const struct gh_principal *who, const json_t *obj, const json_t *old);
    /* side effects before the store write (bind a listener); a failure refuses the change */
    bool (*apply)(const json_t *obj, const json_t *old, struct gh_verr *ve);
    /* undoes apply after a store failure */
    void (*undo)(const json_t *obj, const json_t *old);
    /* before the updates of one /set (id -> patch, ids resolved, none about to be
     * destroyed), and after that /set committed or was undone: for changes that only work
     * together, such as listeners swapping addresses */
    void (*set_begin)(const json_t *updates);
    void (*set_end)(void);
    /* after a successful commit that changed objects of this type */
    void (*committed)(struct gh_objtype *t);
};

/*
 * One object type. The table part is constant; objs is the in-memory copy of the stored
 * objects in creation order (owned; each element is the stored JSON object with "id").
 */
struct gh_objtype {
    const char *type;        /* "x:NetworkListener" */
    const char *name;        /* "NetworkListener" */
    const char *cli_name;    /* "network-listener" */
    const char *label;       /* "Network listener" */
    const char *perm_prefix; /* "sysNetworkListener" */
    /* Where the web console shows the type: "Settings › Network › Listeners" (segments
     * joined by " › "; the last one names the page). NULL: under "Other". */
    const char *nav;
    bool singleton;
    char id_prefix;
    const char *const *groups;       /* ends with NULL */
    const char *const *list_columns; /* ends with NULL */
    const struct gh_prop *props;
    unsigned nprops;
    struct gh_type_hooks hooks;
    json_t *objs;
};

const struct gh_prop *gh_prop_find(const struct gh_objtype *t, const char *name);

/* Checks and normalises one property value (null handled as the default). Returns a
 * new reference, or NULL with err filled. */
json_t *gh_prop_value(const struct gh_prop *p, json_t *in, gh_err *err);

/*
 * A new object from a create argument: every property checked and normalised, defaults
 * filled in, server-set properties refused. Returns NULL when ve has problems. The
 * type's validate hook is not called here.
 */
json_t *gh_schema_create(const struct gh_objtype *t, json_t *in, struct gh_verr *ve);

/*
 * The object cur with a PatchObject applied (RFC 8620 §5.3). Keys are property names or
 * set-style "prop/MEMBER" (JSON-pointer escaped) with true (add) or null (remove).
 * Returns NULL when ve has problems (type invalidPatch for a malformed patch).
 */
json_t *gh_schema_patch(const struct gh_objtype *t, const json_t *cur, json_t *patch,
                        struct gh_verr *ve);

/* The /get view of a stored object: "id" plus the properties asked for (all when
 * properties is NULL), never write-only ones; once-properties only when with_once. */
json_t *gh_schema_view(const struct gh_objtype *t, const json_t *obj, const json_t *properties,
                       bool with_once);

/* The schema JSON of the given types (see docs/objects.md). */
json_t *gh_schema_json(struct gh_objtype *const *types, unsigned n);

/* Durations: "500ms", "30s", "1m", "2h", "1d", or whole milliseconds (a JSON integer or
 * digits). Written back in the largest unit that keeps the value exact. */
bool gh_duration_parse(const json_t *v, uint64_t *ms, gh_err *err);
void gh_duration_format(uint64_t ms, char out[32]);

/* A Rate: {"count": N, "period": "1d"} with N >= 1 and a Duration > 0 (Stalwart's form).
 * On failure err names the member that is wrong. */
bool gh_rate_parse(const json_t *v, uint32_t *count, uint64_t *period_ms, gh_err *err);

/* Decodes a JSON-pointer token (~1 → /, ~0 → ~); false when an escape is malformed. */
bool gh_pointer_unescape(const char *in, char *out, size_t cap);

#endif
