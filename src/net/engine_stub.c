/* placeholder engine until engine.c and conn.c land. */
#include "net/conn.h"
#include "net/engine.h"

#include <stdio.h>

struct gh_engine *gh_engine_global;

struct gh_engine *gh_engine_new(unsigned workers, gh_err *err)
{
    gh_fail(err, "engine not available yet");
    return NULL;
}
bool gh_engine_start(struct gh_engine *e, gh_err *err)
{
    return false;
}
void gh_engine_wait(struct gh_engine *e)
{
}
void gh_engine_stop(struct gh_engine *e, uint32_t grace_ms)
{
}
void gh_engine_free(struct gh_engine *e)
{
}
bool gh_engine_apply(struct gh_engine *e, struct gh_listener_conf *conf, gh_err *err)
{
    gh_listener_conf_unref(conf);
    return true;
}
void gh_engine_remove(struct gh_engine *e, const char *id)
{
}
uint32_t gh_engine_live(struct gh_engine *e, const char *id)
{
    return 0;
}
bool gh_engine_set_proxy_trusted(struct gh_engine *e, const struct gh_ipmask *masks, unsigned n)
{
    return true;
}
void gh_engine_set_hostname(struct gh_engine *e, const char *hostname)
{
}
void gh_engine_hostname(struct gh_engine *e, char *out, size_t cap)
{
    snprintf(out, cap, "localhost");
}
void gh_engine_broadcast(struct gh_engine *e, void (*fn)(struct gh_loop *, void *), void *arg,
                         void (*free_arg)(void *))
{
}
void gh_conn_write(struct gh_conn *c, const void *data, size_t len)
{
}
void gh_conn_printf(struct gh_conn *c, const char *fmt, ...)
{
}
void gh_conn_close_after_flush(struct gh_conn *c)
{
}
void gh_conn_close(struct gh_conn *c)
{
}
bool gh_conn_can_starttls(const struct gh_conn *c)
{
    return false;
}
void gh_conn_starttls(struct gh_conn *c)
{
}
void gh_conn_set_idle(struct gh_conn *c, uint32_t ms)
{
}
const char *gh_conn_hostname(const struct gh_conn *c)
{
    return "localhost";
}
