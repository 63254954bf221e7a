/*
 * acme_renew: one thread that keeps ACME-managed certificates issued and fresh. Each round
 * it copies, under the management lock, what is due (a certificate with no PEM yet, one
 * past its provider's renewBefore, or inside the CA's ARI window), releases the lock for
 * the ACME conversation (seconds of blocking HTTP, here and never on a worker), then takes
 * the lock again to store the outcome as a server change: the new PEM (which the
 * certificate's commit hook installs in the TLS store: new handshakes use it, open
 * sessions keep theirs) or the error, with the status pushed to clients.
 *
 * Failures back off 1 min, 2 min, 4 min ... (at most 6 h) up to the provider's maxRetries;
 * then the certificate is "failed" and tried again a day later. The old certificate stays
 * in use throughout.
 */
#include "objects/acme_renew.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "acme/acme.h"
#include "acme/jws.h"
#include "core/log.h"
#include "objects/model.h"
#include "store/store.h"

#define BACKOFF_FIRST_SECS 60
#define BACKOFF_MAX_SECS   (6 * 3600)
#define GIVE_UP_SECS       (24 * 3600)
#define ARI_EVERY_SECS     (6 * 3600)
#define IDLE_WAKE_SECS     3600
#define LEASE_KEY          "acme-renewer"
#define LEASE_SECS         900 /* longer than any one round of orders */
#define LEASE_RETRY_SECS   30

static pthread_t thread;
static bool running;
static atomic_bool stopping;
static pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cv;
static bool kicked;
static bool retry_now;                /* under wake_mu: someone else changed the objects */
static _Thread_local bool on_renewal; /* the renewal thread's own changes do not count */

/* Per certificate, this node's memory of attempts (owned by the thread): id → {failures,
 * next, ari}. Lost at restart, which only means one early attempt. */
static json_t *attempts;

/* One certificate to order, copied out of the objects so the lock can be released. */
struct job {
    char cert_id[64];
    char **names;
    unsigned nnames;
    char *directory, *ca_pem, *account_key, *account_uri, *eab_kid, *eab_mac, *provider_id;
    char **contact;
    unsigned ncontact;
    enum gh_acme_challenge type;
    unsigned max_retries;
    char *chain_pem; /* the current certificate, for ARI; NULL when none */
    bool ari_only;   /* not due by renewBefore: ask the CA's window first */
};

static char *dup_or_null(const json_t *v)
{
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static char **dup_list(const json_t *a, unsigned *n)
{
    *n = (unsigned)json_array_size(a);
    char **out = calloc(*n ? *n : 1, sizeof *out);
    for (unsigned i = 0; out && i < *n; i++)
        out[i] = strdup(json_string_value(json_array_get(a, i)));
    return out;
}

static void free_list(char **l, unsigned n)
{
    for (unsigned i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

static void job_free(struct job *j)
{
    free_list(j->names, j->nnames);
    free_list(j->contact, j->ncontact);
    if (j->account_key)
        OPENSSL_cleanse(j->account_key, strlen(j->account_key));
    if (j->eab_mac)
        OPENSSL_cleanse(j->eab_mac, strlen(j->eab_mac));
    free(j->directory);
    free(j->ca_pem);
    free(j->account_key);
    free(j->account_uri);
    free(j->eab_kid);
    free(j->eab_mac);
    free(j->provider_id);
    free(j->chain_pem);
    memset(j, 0, sizeof *j);
}

static time_t parse_date(const json_t *v)
{
    struct tm tm = {0};
    const char *s = json_string_value(v);
    return s && strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) ? timegm(&tm) : 0;
}

static json_t *attempt_of(const char *id)
{
    json_t *a = json_object_get(attempts, id);
    if (!a) {
        a = json_pack("{si si si}", "failures", 0, "next", 0, "ari", 0);
        json_object_set_new(attempts, id, a);
    }
    return a;
}

static time_t attempt_time(const char *id, const char *key)
{
    return (time_t)json_integer_value(json_object_get(attempt_of(id), key));
}

/* Whether the issued certificate names every domain (after domains changed, it does not,
 * and is ordered again at once). */
static bool covers(const json_t *cert)
{
    const json_t *names = json_object_get(cert, "subjectNames");
    size_t i, k;
    json_t *d, *n;
    json_array_foreach(json_object_get(cert, "domains"), i, d)
    {
        bool found = false;
        json_array_foreach(names, k, n)
        {
            if (json_is_string(n) && !strcasecmp(json_string_value(n), json_string_value(d)))
                found = true;
        }
        if (!found)
            return false;
    }
    return true;
}

/*
 * Whether the certificate is due now (and then fills the job), else lowers *next_wake to
 * when it will be. Under the management lock.
 */
static bool consider(const json_t *cert, time_t now, time_t *next_wake, struct job *j)
{
    const char *id = json_string_value(json_object_get(cert, "id"));
    const json_t *prov = gh_obj_find(
        &gh_type_acmeprovider, json_string_value(json_object_get(cert, "acmeProviderId")), NULL);
    if (!prov || !json_array_size(json_object_get(cert, "domains")))
        return false;
    bool has_pem = json_is_string(json_object_get(cert, "certificate")) &&
                   json_is_string(json_object_get(cert, "privateKey"));
    time_t due = now, ari_due = 0;
    if (has_pem && covers(cert)) {
        const char *spec = json_string_value(json_object_get(prov, "renewBefore"));
        if (!gh_acme_renew_at(spec ? spec : "R23", parse_date(json_object_get(cert, "notBefore")),
                              parse_date(json_object_get(cert, "notAfter")), &due))
            return false;
        ari_due = attempt_time(id, "ari") + ARI_EVERY_SECS;
    }
    time_t retry_at = attempt_time(id, "next");
    if (retry_at > due)
        due = retry_at;
    /* the CA's window is asked about only outside a back-off */
    bool ari_possible = has_pem && retry_at <= now;
    bool ari_only = ari_possible && due > now && ari_due <= now;
    if (due > now && !ari_only) {
        time_t wake = ari_possible && ari_due < due ? ari_due : due;
        if (wake < *next_wake)
            *next_wake = wake;
        return false;
    }
    memset(j, 0, sizeof *j);
    snprintf(j->cert_id, sizeof j->cert_id, "%s", id);
    j->ari_only = ari_only;
    j->names = dup_list(json_object_get(cert, "domains"), &j->nnames);
    j->contact = dup_list(json_object_get(prov, "contact"), &j->ncontact);
    j->directory = dup_or_null(json_object_get(prov, "directory"));
    j->account_key = dup_or_null(json_object_get(prov, GH_ACME_ACCOUNT_KEY));
    j->account_uri = dup_or_null(json_object_get(prov, "accountUri"));
    j->eab_kid = dup_or_null(json_object_get(prov, "eabKeyId"));
    j->eab_mac = dup_or_null(json_object_get(prov, "eabHmacKey"));
    j->provider_id = dup_or_null(json_object_get(prov, "id"));
    j->chain_pem = has_pem ? dup_or_null(json_object_get(cert, "certificate")) : NULL;
    const char *type = json_string_value(json_object_get(prov, "challengeType"));
    j->type = type && !strcmp(type, "Http01") ? GH_ACME_HTTP_01 : GH_ACME_TLS_ALPN_01;
    j->max_retries = (unsigned)json_integer_value(json_object_get(prov, "maxRetries"));
    const char *ca_id = json_string_value(json_object_get(prov, "directoryCaCertificateId"));
    const json_t *ca = ca_id ? gh_obj_find(&gh_type_certificate, ca_id, NULL) : NULL;
    j->ca_pem = ca ? dup_or_null(json_object_get(ca, "certificate")) : NULL;
    return true;
}

/*
 * Stores changes to one object as the server (server-set properties included), with the
 * same effects as a client's /set: validation, store and change log, the commit hook,
 * the pushed state. Takes the management locks.
 */
static bool server_update(struct gh_objtype *t, const char *id, json_t *changes, gh_err *err)
{
    gh_jmap_lock();
    gh_objects_lock();
    bool ok = false;
    if (!gh_store_begin(gh_model.store, err))
        goto out;
    gh_objects_sync();
    size_t index;
    json_t *cur = gh_obj_find(t, id, &index);
    if (!cur) {
        gh_store_rollback(gh_model.store);
        gh_fail(err, "%s %s is gone", t->type, id);
        goto out;
    }
    json_t *obj = json_deep_copy(cur);
    json_object_update(obj, changes);
    struct gh_verr ve;
    gh_verr_init(&ve);
    if (t->hooks.validate)
        t->hooks.validate(t, obj, cur, &ve);
    uint64_t seq = 0;
    char *text = gh_verr_ok(&ve) ? json_dumps(obj, JSON_COMPACT) : NULL;
    if (!gh_verr_ok(&ve))
        gh_fail(err, "%s", ve.desc);
    ok = text && gh_store_put(gh_model.store, t->type, id, text, err) &&
         gh_store_log_change(gh_model.store, t->type, id, 'u', &seq, err) &&
         gh_store_commit(gh_model.store, err);
    free(text);
    gh_verr_clear(&ve);
    if (!ok) {
        gh_store_rollback(gh_model.store);
        json_decref(obj);
        goto out;
    }
    gh_sync_note(seq);
    json_array_set_new(t->objs, index, obj);
    if (t->hooks.committed)
        t->hooks.committed(t);
    char state[64];
    gh_type_state(t, state);
    gh_jmap_state_changed(t->type, state);
out:
    gh_objects_unlock();
    gh_jmap_unlock();
    return ok;
}

static void set_status(const struct job *j, const char *status, const char *error)
{
    json_t *ch = json_pack("{ss}", "renewalStatus", status);
    if (error)
        json_object_set_new(ch, "lastRenewalError", json_string(error));
    gh_err err = {0};
    if (!server_update(&gh_type_certificate, j->cert_id, ch, &err))
        gh_log(NULL, NULL, "acme-error", "certificate %s: cannot record its status: %s", j->cert_id,
               err.msg);
    json_decref(ch);
}

static void note_account(const struct job *j, const char *uri)
{
    if (!uri || (j->account_uri && !strcmp(uri, j->account_uri)))
        return;
    json_t *ch = json_pack("{ss}", "accountUri", uri);
    gh_err err = {0};
    if (!server_update(&gh_type_acmeprovider, j->provider_id, ch, &err))
        gh_log(NULL, NULL, "acme-error", "provider %s: cannot record the account: %s",
               j->provider_id, err.msg);
    json_decref(ch);
}

static void failed(const struct job *j, const char *why)
{
    json_t *a = attempt_of(j->cert_id);
    json_int_t n = json_integer_value(json_object_get(a, "failures")) + 1;
    bool give_up = (unsigned)n > j->max_retries;
    time_t wait = BACKOFF_FIRST_SECS;
    for (json_int_t i = 1; i < n && wait < BACKOFF_MAX_SECS; i++)
        wait *= 2;
    if (wait > BACKOFF_MAX_SECS)
        wait = BACKOFF_MAX_SECS;
    if (give_up) {
        wait = GIVE_UP_SECS;
        n = 0;
    }
    json_object_set_new(a, "failures", json_integer(n));
    json_object_set_new(a, "next", json_integer((json_int_t)(time(NULL) + wait)));
    gh_log(NULL, NULL, "acme-error", "certificate %s: %s; next attempt in %lld s", j->cert_id, why,
           (long long)wait);
    set_status(j, give_up ? "failed" : "retrying", why);
}

/* Is the certificate inside the CA's renewal window? Asks at most every ARI_EVERY_SECS. */
static bool ari_says_renew(struct gh_acme_account *acct, const struct job *j)
{
    time_t start, end;
    bool offered;
    gh_err err = {0};
    json_object_set_new(attempt_of(j->cert_id), "ari", json_integer((json_int_t)time(NULL)));
    if (!gh_acme_renewal_info(acct, j->chain_pem, &start, &end, &offered, &err)) {
        if (offered)
            gh_log(NULL, NULL, "acme-ari", "certificate %s: %s", j->cert_id, err.msg);
        return false;
    }
    /* RFC 9773 §4.2: a random moment inside the window; here its start plus a share. */
    return time(NULL) >= start + (end - start) / 3;
}

static void run(struct job *j)
{
    EVP_PKEY *key = gh_acme_key_from_pem(j->account_key);
    if (!key) {
        failed(j, "the provider's account key is missing or unreadable; recreate the provider");
        return;
    }
    struct gh_acme_account acct = {
        .directory = j->directory,
        .ca_pem = j->ca_pem,
        .key = key,
        .contact = j->contact,
        .ncontact = j->ncontact,
        .eab_key_id = j->eab_kid,
        .eab_hmac_key = j->eab_mac,
        .account_uri = j->account_uri ? strdup(j->account_uri) : NULL,
        .stop = &stopping,
    };
    if (j->ari_only && !ari_says_renew(&acct, j)) {
        free(acct.account_uri);
        EVP_PKEY_free(key);
        return;
    }
    set_status(j, "ordering", NULL);
    struct gh_acme_result res;
    gh_err err = {0};
    bool ok = gh_acme_order(&acct, j->type, j->names, j->nnames, &res, &err);
    note_account(j, acct.account_uri);
    if (ok) {
        json_t *ch = json_pack("{ss ss ss sn}", "certificate", res.chain_pem, "privateKey",
                               res.key_pem, "renewalStatus", "valid", "lastRenewalError");
        ok = server_update(&gh_type_certificate, j->cert_id, ch, &err);
        json_decref(ch);
        gh_acme_result_free(&res);
    }
    if (ok) {
        /* a fresh certificate: no back-off, and no need to ask the CA's window yet */
        json_object_set_new(
            attempts, j->cert_id,
            json_pack("{si si sI}", "failures", 0, "next", 0, "ari", (json_int_t)time(NULL)));
        gh_log(NULL, NULL, "acme-issued", "certificate %s issued for %s", j->cert_id, j->names[0]);
    } else if (!atomic_load(&stopping)) {
        failed(j, err.msg);
    }
    free(acct.account_uri);
    EVP_PKEY_free(key);
}

/* The jobs due now; *next_wake lowered to the next time something will be. */
static struct job *due_jobs(size_t *n, time_t *next_wake)
{
    gh_jmap_lock();
    gh_objects_lock();
    size_t cap = json_array_size(gh_type_certificate.objs);
    struct job *jobs = calloc(cap ? cap : 1, sizeof *jobs);
    time_t now = time(NULL);
    *n = 0;
    size_t i;
    json_t *c;
    json_array_foreach(gh_type_certificate.objs, i, c)
    {
        if (jobs && json_is_string(json_object_get(c, "acmeProviderId")) &&
            consider(c, now, next_wake, &jobs[*n]))
            (*n)++;
    }
    /* forget certificates that are gone */
    const char *id;
    json_t *v, *tmp;
    json_object_foreach_safe(attempts, tmp, id, v)
    {
        if (!gh_obj_find(&gh_type_certificate, id, NULL))
            json_object_del(attempts, id);
    }
    gh_objects_unlock();
    gh_jmap_unlock();
    return jobs;
}

/*
 * Shared store: one node orders at a time. The lease is a kv row "node-id expiry" written
 * inside a store transaction (which on PostgreSQL holds every other node's writers off, so
 * taking it is exact); it is released after the round, and lapses by itself when its node
 * dies in the middle. The certificates it stores reach every node by the usual sync,
 * whose commit hook installs them. A lone store needs no lease.
 */
static char node_id[16];

static bool lease(bool take)
{
    if (!gh_store_shared(gh_model.store))
        return true;
    gh_jmap_lock();
    gh_objects_lock();
    gh_err err = {0};
    char *cur = NULL, mine[64];
    time_t now = time(NULL);
    bool ok = gh_store_begin(gh_model.store, &err) &&
              gh_store_kv_get(gh_model.store, LEASE_KEY, &cur, &err);
    char holder[32] = "";
    long long until = 0;
    if (ok && cur)
        sscanf(cur, "%31s %lld", holder, &until);
    bool held_by_other = holder[0] && strcmp(holder, node_id) && until > (long long)now;
    if (ok && take && !held_by_other) {
        snprintf(mine, sizeof mine, "%s %lld", node_id, (long long)(now + LEASE_SECS));
        ok = gh_store_kv_put(gh_model.store, LEASE_KEY, mine, &err);
    } else if (ok && !take && !strcmp(holder, node_id)) {
        ok = gh_store_kv_put(gh_model.store, LEASE_KEY, "", &err);
    }
    ok = ok && gh_store_commit(gh_model.store, &err);
    if (!ok) {
        gh_store_rollback(gh_model.store);
        gh_log(NULL, NULL, "acme-error", "renewal lease: %s", err.msg);
    }
    free(cur);
    gh_objects_unlock();
    gh_jmap_unlock();
    return ok && (!take || !held_by_other);
}

/* After a change from outside, failed certificates are tried again at once. */
static void forget_back_off(void)
{
    pthread_mutex_lock(&wake_mu);
    bool reset = retry_now;
    retry_now = false;
    pthread_mutex_unlock(&wake_mu);
    if (reset)
        json_object_clear(attempts);
}

static void *renew_main(void *arg)
{
    (void)arg;
    on_renewal = true;
    while (!atomic_load(&stopping)) {
        time_t next_wake = time(NULL) + IDLE_WAKE_SECS;
        forget_back_off();
        size_t n;
        struct job *jobs = due_jobs(&n, &next_wake);
        bool mine = n && lease(true);
        for (size_t i = 0; i < n; i++) {
            if (mine && !atomic_load(&stopping))
                run(&jobs[i]);
            job_free(&jobs[i]);
        }
        free(jobs);
        if (mine) {
            lease(false);
            continue; /* look again: what ran may have changed what is due */
        }
        if (n) /* another node is ordering: its results arrive by sync; look again later */
            next_wake = time(NULL) + LEASE_RETRY_SECS;
        pthread_mutex_lock(&wake_mu);
        struct timespec until = {.tv_sec = next_wake};
        while (!kicked && !atomic_load(&stopping) &&
               pthread_cond_timedwait(&wake_cv, &wake_mu, &until) == 0)
            ;
        kicked = false;
        pthread_mutex_unlock(&wake_mu);
    }
    return NULL;
}

void gh_acme_renew_kick(void)
{
    pthread_mutex_lock(&wake_mu);
    kicked = true;
    if (!on_renewal)
        retry_now = true; /* an operator's change may be the fix: no back-off wait */
    pthread_cond_signal(&wake_cv);
    pthread_mutex_unlock(&wake_mu);
}

void gh_acme_renew_start(void)
{
    if (running)
        return;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr); /* CLOCK_REALTIME: renewals are set in wall-clock time */
    pthread_cond_init(&wake_cv, &attr);
    pthread_condattr_destroy(&attr);
    attempts = json_object();
    if (!gh_random_text(node_id, 12))
        snprintf(node_id, sizeof node_id, "n%ld", (long)getpid());
    atomic_store(&stopping, false);
    running = pthread_create(&thread, NULL, renew_main, NULL) == 0;
    if (!running)
        gh_log(NULL, NULL, "acme-error", "cannot start the renewal thread; ACME is off");
}

void gh_acme_renew_stop(void)
{
    if (!running)
        return;
    atomic_store(&stopping, true);
    gh_acme_renew_kick();
    pthread_join(thread, NULL);
    running = false;
    json_decref(attempts);
    attempts = NULL;
}
